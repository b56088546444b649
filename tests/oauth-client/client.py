"""An off-the-shelf OAuth 2 client (Authlib) against tokend: discovers the
token endpoint from the RFC 8414 metadata alone, gets a client-credentials
token with client_secret_basic, then with client_secret_post and a narrower
scope, and prints what it got as JSON for the test to check.

Usage: client.py BASE_URL CLIENT_ID CLIENT_SECRET SCOPE
"""
import json
import sys

import requests
from authlib.integrations.requests_client import OAuth2Session

base, client_id, client_secret, scope = sys.argv[1:5]
metadata = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()
token_endpoint = metadata["token_endpoint"]

results = {"metadata": metadata}
for method, asked in (("client_secret_basic", None), ("client_secret_post", scope)):
    session = OAuth2Session(client_id, client_secret, token_endpoint_auth_method=method, scope=asked)
    token = session.fetch_token(token_endpoint, grant_type="client_credentials")
    results[method] = {k: token[k] for k in ("token_type", "expires_in", "scope", "access_token")}
    results[method]["has_expires_at"] = "expires_at" in token

# A wrong secret: Authlib raises the RFC 6749 error it was given.
try:
    OAuth2Session(client_id, "wrong", token_endpoint_auth_method="client_secret_basic").fetch_token(
        token_endpoint, grant_type="client_credentials")
    results["wrong_secret"] = "accepted"
except Exception as e:  # authlib's OAuthError
    results["wrong_secret"] = getattr(e, "error", repr(e))
print(json.dumps(results))

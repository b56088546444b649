"""Authlib's private_key_jwt (RFC 7523 client assertions) against tokend,
with keys made by `cryptography` rather than by tokend.

Usage:
  private_key_jwt.py keys DIR
      Writes rsa.pem / rsa.pub.pem (RS256, 2048 bits) and ed25519.pem /
      ed25519.pub.pem (EdDSA), and stray-rsa.pem / stray-ed25519.pem: keys
      of the same kinds that no client registers.
  private_key_jwt.py fetch BASE_URL DIR RSA_CLIENT_ID ED25519_CLIENT_ID
      Finds the token endpoint from the RFC 8414 metadata alone and, for
      each key, fetches a token twice with Authlib's PrivateKeyJWT as it
      comes, then with the stray key, then with fixed extra claims (with
      which Authlib reuses one jti); prints the answers and the decoded
      assertions Authlib sent, as JSON.
"""
import base64
import json
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KINDS = {"rsa": "RS256", "ed25519": "EdDSA"}


def new_key(kind):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_keys(directory):
    directory = Path(directory)
    for kind in KINDS:
        key = new_key(kind)
        (directory / f"{kind}.pem").write_bytes(private_pem(key))
        (directory / f"{kind}.pub.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (directory / f"stray-{kind}.pem").write_bytes(private_pem(new_key(kind)))


def decode(segment):
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def session(client_id, private_pem, auth, sent):
    s = OAuth2Session(client_id, private_pem, token_endpoint_auth_method="private_key_jwt")
    s.register_client_auth_method(auth)

    # What went over the wire, as the server saw it.
    def record(response, *args, **kwargs):
        form = parse_qs(response.request.body or "")
        assertion = form.get("client_assertion", [""])[0]
        header, payload = assertion.split(".")[:2]
        sent.append({
            "form": sorted(form),
            "header": decode(header),
            "claims": decode(payload),
        })

    s.hooks["response"].append(record)
    return s


def attempt(s, token_endpoint):
    try:
        token = s.fetch_token(token_endpoint, grant_type="client_credentials")
    except Exception as e:  # authlib's OAuthError
        return {"error": getattr(e, "error", repr(e))}
    return {k: token[k] for k in ("token_type", "expires_in", "scope", "access_token")}


def fetch(base, directory, ids):
    directory = Path(directory)
    metadata = requests.get(base + "/.well-known/oauth-authorization-server", timeout=10).json()
    token_endpoint = metadata["token_endpoint"]
    results = {"token_endpoint": token_endpoint}
    for (kind, alg), client_id in zip(KINDS.items(), ids):
        private = (directory / f"{kind}.pem").read_text()
        stray = (directory / f"stray-{kind}.pem").read_text()
        r = results[kind] = {}
        sent = r["sent"] = []
        s = session(client_id, private, PrivateKeyJWT(token_endpoint, alg=alg), sent)
        r["first"] = attempt(s, token_endpoint)
        r["second"] = attempt(s, token_endpoint)
        wrong = session(client_id, stray, PrivateKeyJWT(token_endpoint, alg=alg), [])
        r["stray_key"] = attempt(wrong, token_endpoint)

        # With extra claims, Authlib stores its jti in them: the next
        # assertion repeats it.
        fixed_sent = r["fixed_claims_sent"] = []
        fixed = session(client_id, private, PrivateKeyJWT(
            token_endpoint, alg=alg, claims={"exp": int(time.time()) + 300}), fixed_sent)
        r["fixed_claims"] = [attempt(fixed, token_endpoint), attempt(fixed, token_endpoint)]
    print(json.dumps(results))


if __name__ == "__main__":
    if sys.argv[1] == "keys":
        write_keys(sys.argv[2])
    elif sys.argv[1] == "fetch":
        fetch(sys.argv[2], sys.argv[3], sys.argv[4:6])
    else:
        sys.exit(__doc__)

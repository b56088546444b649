"""Service A: calls service B's GET /orders with a token of its own (OAuth 2
client credentials), not a user's.

It finds tokend's token endpoint in /.well-known/oauth-authorization-server
(RFC 8414) alone, then lets Authlib's OAuth2Session do the rest: the first
token is fetched with client_secret_basic, kept, sent as
`Authorization: Bearer ...` with every call, and fetched again by the session
itself (ensure_active_token) once it is within LEEWAY seconds of its expiry.
Fetch a token per process, not per request: tokend signs one per fetch, and
B accepts it until it expires.

Environment:
  TOKEND_URL      tokend's address, e.g. http://tokend:8000
  CLIENT_ID / CLIENT_SECRET   from `tokend clients create ...`
  ORDERS_URL      service B's endpoint, e.g. http://service-b:8080/orders
  SCOPE           the scope to ask for (default: all the client's scopes)
  LEEWAY          seconds before expiry a token is renewed (default 60)
  CALLS           how many calls to make (default 1)
  INTERVAL        seconds between calls (default 0)

Prints one JSON line: {"statuses": [200, ...], "bodies": [...],
"tokens_fetched": 1, "tokens_used": 1}.

Run:  pip install -r requirements.txt
      TOKEND_URL=... CLIENT_ID=... CLIENT_SECRET=... ORDERS_URL=... python service_a.py
"""

import json
import os
import time

import requests
from authlib.integrations.requests_client import OAuth2Session

env = os.environ.get


def token_session(tokend_url, client_id, client_secret, scope=None, leeway=60):
    """An OAuth2Session that fetches, caches and renews its own token."""
    metadata = requests.get(
        tokend_url.rstrip("/") + "/.well-known/oauth-authorization-server", timeout=10
    )
    metadata.raise_for_status()
    return OAuth2Session(
        client_id,
        client_secret,
        token_endpoint_auth_method="client_secret_basic",
        scope=scope,
        leeway=leeway,
        default_timeout=10,
        # What ensure_active_token needs to fetch the next token by itself
        # (fetch_token(url, grant_type=...) would not record the grant, and
        # the session would raise InvalidTokenError at expiry instead).
        token_endpoint=metadata.json()["token_endpoint"],
        grant_type="client_credentials",
    )


def main():
    session = token_session(
        env("TOKEND_URL"),
        env("CLIENT_ID"),
        env("CLIENT_SECRET"),
        scope=env("SCOPE") or None,
        leeway=int(env("LEEWAY") or 60),
    )
    fetched = []

    def count(response):
        fetched.append(response.status_code)
        return response

    # Called on every token endpoint answer, the session's own renewals included.
    session.register_compliance_hook("access_token_response", count)
    session.fetch_token()

    statuses, bodies, used = [], [], set()
    calls, interval = int(env("CALLS") or 1), float(env("INTERVAL") or 0)
    for i in range(calls):
        if i and interval:
            time.sleep(interval)
        response = session.get(env("ORDERS_URL"))
        used.add(session.token["access_token"])
        statuses.append(response.status_code)
        try:
            bodies.append(response.json())
        except ValueError:
            bodies.append(response.text)
    print(
        json.dumps(
            {
                "statuses": statuses,
                "bodies": bodies,
                "tokens_fetched": len(fetched),
                "tokens_used": len(used),
            }
        )
    )


if __name__ == "__main__":
    main()

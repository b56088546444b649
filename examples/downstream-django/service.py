"""A Django REST framework service that trusts tokend's access tokens.

It checks them itself with simplejwt's JWTStatelessUserAuthentication (no
database, no call to tokend per request): with the shared HS256 key, or
with tokend's public keys from /.well-known/jwks.json (EdDSA / RS256).
Only SIMPLE_JWT below matters; copy it into your project's settings.

Environment:
  TOKEND_SHARED_KEY   tokend's TOKEND__JWT__SIGNING_KEY (HS256), or
  TOKEND_JWKS_URL     http://tokend:8000/.well-known/jwks.json together with
  TOKEND_ALGORITHM    EdDSA or RS256 (tokend's TOKEND__JWT__ALGORITHM)
  TOKEND_ISSUER / TOKEND_AUDIENCE  when tokend sets jwt.issuer / jwt.audience
  PORT                default 8081; 0 picks a free port
  HOST                listen address, default 127.0.0.1 (0.0.0.0 in a container)

GET /hello/ answers {"user_id": "42"} for a valid access token and 401
otherwise (refresh tokens are refused: AUTH_TOKEN_CLASSES is AccessToken).

Run:  pip install -r requirements.txt
      TOKEND_SHARED_KEY=... python service.py
"""

import os
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings
from django.urls import path

env = os.environ.get

settings.configure(
    DEBUG=False,
    SECRET_KEY="downstream-example-not-a-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "rest_framework",
    ],
    DATABASES={},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [
            # Trusts the token's claims; never looks the user up.
            "rest_framework_simplejwt.authentication.JWTStatelessUserAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "UNAUTHENTICATED_USER": None,
    },
    SIMPLE_JWT={
        # The algorithm is fixed here, never read from the token.
        "ALGORITHM": env("TOKEND_ALGORITHM") or "HS256",
        "SIGNING_KEY": env("TOKEND_SHARED_KEY") or "",
        "VERIFYING_KEY": None,
        "JWK_URL": env("TOKEND_JWKS_URL") or None,
        "ISSUER": env("TOKEND_ISSUER") or None,
        "AUDIENCE": env("TOKEND_AUDIENCE") or None,
        "LEEWAY": 0,
        # tokend's jwt.user_id_claim: the claim holding the user id.
        "USER_ID_CLAIM": env("TOKEND_USER_ID_CLAIM") or "user_id",
        "TOKEN_TYPE_CLAIM": "token_type",
        "JTI_CLAIM": "jti",
        "AUTH_TOKEN_CLASSES": ("rest_framework_simplejwt.tokens.AccessToken",),
    },
)
django.setup()

from rest_framework.decorators import api_view  # noqa: E402  (after setup)
from rest_framework.response import Response  # noqa: E402


@api_view(["GET"])
def hello(request):
    return Response({"user_id": request.user.id})


urlpatterns = [path("hello/", hello)]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def check_settings():
    """Refuse set-ups that would accept forged tokens: JWKS with an HS
    algorithm (simplejwt would then check HMACs with SIGNING_KEY, possibly
    empty), or a short shared key."""
    algorithm = env("TOKEND_ALGORITHM") or "HS256"
    if env("TOKEND_JWKS_URL"):
        if algorithm not in ("EdDSA", "RS256"):
            sys.exit("TOKEND_JWKS_URL needs TOKEND_ALGORITHM=EdDSA or RS256")
    elif algorithm != "HS256" or len(env("TOKEND_SHARED_KEY") or "") < 32:
        sys.exit("set TOKEND_SHARED_KEY (tokend's HS256 key, at least 32 bytes) or TOKEND_JWKS_URL")


def main():
    check_settings()
    from django.core.wsgi import get_wsgi_application

    host = env("HOST") or "127.0.0.1"
    server = make_server(
        host, int(env("PORT") or 8081), get_wsgi_application(), handler_class=QuietHandler
    )
    print(f"listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

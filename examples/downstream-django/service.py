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
  TOKEND_REQUIRED_GROUP  the group GET /editors/ requires, default editors
  PORT                default 8081; 0 picks a free port
  HOST                listen address, default 127.0.0.1 (0.0.0.0 in a container)

GET /hello/ answers {"user_id": "42"} for a valid access token and 401
otherwise (refresh tokens are refused: AUTH_TOKEN_CLASSES is AccessToken).
GET /editors/ also needs the group in the token's "groups" claim (tokend's
TOKEND__JWT__EXTRA_CLAIMS=groups): {"user_id": "42", "group": "editors"},
or 403 {"detail": "Membership of group 'editors' is required."}.

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

from rest_framework.decorators import api_view, permission_classes  # noqa: E402  (after setup)
from rest_framework.permissions import BasePermission, IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402


class HasGroupClaim(BasePermission):
    """Grants requests whose access token lists `group` in its "groups" claim.

    The claim is as of the token's issue (login or refresh), not of now.
    Use HasGroupClaim.of("editors") after IsAuthenticated (which answers 401
    when there is no valid token; this class alone would answer 403)."""

    group = None

    @classmethod
    def of(cls, group):
        return type(f"HasGroupClaim_{group}", (cls,), {"group": group})

    @property
    def message(self):
        return f"Membership of group '{self.group}' is required."

    def has_permission(self, request, view):
        # request.auth is the validated AccessToken (JWTStatelessUserAuthentication).
        groups = request.auth.get("groups", []) if request.auth is not None else []
        # Anything but a list of strings grants nothing (`in` on a string
        # would match substrings).
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            return False
        return self.group in groups


REQUIRED_GROUP = env("TOKEND_REQUIRED_GROUP") or "editors"


@api_view(["GET"])
def hello(request):
    return Response({"user_id": request.user.id})


@api_view(["GET"])
@permission_classes([IsAuthenticated, HasGroupClaim.of(REQUIRED_GROUP)])
def editors(request):
    return Response({"user_id": request.user.id, "group": REQUIRED_GROUP})


urlpatterns = [path("hello/", hello), path("editors/", editors)]


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

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
  TOKEND_SERVICE_AUDIENCE  this service's own name: the audience service
                      tokens must carry (the client's --audience); without it
                      GET /orders/ refuses every token
  TOKEND_REQUIRED_GROUP  the group GET /editors/ requires, default editors
  TOKEND_REQUIRED_SCOPE  the scope GET /orders/ requires, default orders:read
  PORT                default 8081; 0 picks a free port
  HOST                listen address, default 127.0.0.1 (0.0.0.0 in a container)

GET /hello/ answers {"user_id": "42"} for a valid user access token and 401
otherwise (refresh tokens are refused: AUTH_TOKEN_CLASSES is AccessToken;
service tokens too: they have no user id claim).
GET /editors/ also needs the group in the token's "groups" claim (tokend's
TOKEND__JWT__EXTRA_CLAIMS=groups): {"user_id": "42", "group": "editors"},
or 403 {"detail": "Membership of group 'editors' is required."}.
GET /orders/ is for services only (ServiceTokenAuthentication, IsService,
HasScope below): a client credentials token (client_id, no user id) for
TOKEND_SERVICE_AUDIENCE (401 otherwise) whose scope lists the required scope:
{"client_id": "3f0c...", "scope": "orders:read"}. A user's token is 403
{"detail": "A service token is required."}, a missing scope 403
{"detail": "Scope 'orders:read' is required."} with
WWW-Authenticate: Bearer error="insufficient_scope", scope="orders:read".

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

from rest_framework.decorators import (  # noqa: E402  (after setup)
    api_view,
    authentication_classes,
    permission_classes,
)
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied  # noqa: E402
from rest_framework.permissions import BasePermission, IsAuthenticated  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework_simplejwt.authentication import JWTAuthentication  # noqa: E402
from rest_framework_simplejwt.backends import TokenBackend  # noqa: E402
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError  # noqa: E402
from rest_framework_simplejwt.settings import api_settings  # noqa: E402
from rest_framework_simplejwt.tokens import AccessToken  # noqa: E402

SERVICE_AUDIENCE = env("TOKEND_SERVICE_AUDIENCE") or None


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


class ServiceClient:
    """The caller of a valid access token, for ServiceTokenAuthentication.

    client_id is None for a user's token (one with the user id claim):
    IsService turns those away with 403."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, token):
        client_id = token.get("client_id")
        is_service = isinstance(client_id, str) and api_settings.USER_ID_CLAIM not in token
        self.client_id = client_id if is_service else None
        # RFC 6749 3.3: space-separated; anything but a string grants nothing.
        scope = token.get("scope")
        self.scopes = scope.split(" ") if isinstance(scope, str) else []


class ServiceAccessToken(AccessToken):
    """An access token checked as SIMPLE_JWT says, except that its audience
    must be this service's own name (TOKEND_SERVICE_AUDIENCE), not the
    audience of users' tokens."""

    _token_backend = TokenBackend(
        api_settings.ALGORITHM,
        api_settings.SIGNING_KEY,
        api_settings.VERIFYING_KEY,
        SERVICE_AUDIENCE,
        api_settings.ISSUER,
        api_settings.JWK_URL,
        api_settings.LEEWAY,
    )


class ServiceTokenAuthentication(JWTAuthentication):
    """simplejwt's checks (signature, exp, token_type, iss), the audience
    TOKEND_SERVICE_AUDIENCE, and no user id required: request.user is a
    ServiceClient. Without TOKEND_SERVICE_AUDIENCE every service token is
    refused (401) rather than accept tokens tokend issued for other
    services."""

    def get_validated_token(self, raw_token):
        if SERVICE_AUDIENCE is None:
            raise AuthenticationFailed(
                "TOKEND_SERVICE_AUDIENCE is not set: service tokens are refused",
                code="no_audience",
            )
        try:
            return ServiceAccessToken(raw_token)
        except TokenError as e:
            # simplejwt's own answer for a token it refuses.
            raise InvalidToken({
                "detail": "Given token not valid for any token type",
                "messages": [{"token_class": "ServiceAccessToken", "token_type": "access",
                              "message": e.args[0]}],
            }) from e

    def get_user(self, validated_token):
        return ServiceClient(validated_token)


class IsService(BasePermission):
    """Grants service tokens only (after ServiceTokenAuthentication)."""

    message = "A service token is required."

    def has_permission(self, request, view):
        return isinstance(request.user, ServiceClient) and request.user.client_id is not None


class InsufficientScope(PermissionDenied):
    def __init__(self, scope):
        super().__init__(f"Scope '{scope}' is required.", code="insufficient_scope")
        # DRF's exception handler sends auth_header as WWW-Authenticate (RFC 6750 3.1).
        self.auth_header = f'Bearer error="insufficient_scope", scope="{scope}"'


class HasScope(BasePermission):
    """Grants service tokens whose "scope" lists `scope` (as of the token's
    issue). Use HasScope.of("orders:read") after IsService."""

    scope = None

    @classmethod
    def of(cls, scope):
        return type(f"HasScope_{scope}", (cls,), {"scope": scope})

    def has_permission(self, request, view):
        if self.scope not in getattr(request.user, "scopes", []):
            raise InsufficientScope(self.scope)
        return True


REQUIRED_GROUP = env("TOKEND_REQUIRED_GROUP") or "editors"
REQUIRED_SCOPE = env("TOKEND_REQUIRED_SCOPE") or "orders:read"


@api_view(["GET"])
def hello(request):
    return Response({"user_id": request.user.id})


@api_view(["GET"])
@permission_classes([IsAuthenticated, HasGroupClaim.of(REQUIRED_GROUP)])
def editors(request):
    return Response({"user_id": request.user.id, "group": REQUIRED_GROUP})


@api_view(["GET"])
@authentication_classes([ServiceTokenAuthentication])
@permission_classes([IsAuthenticated, IsService, HasScope.of(REQUIRED_SCOPE)])
def orders(request):
    return Response({"client_id": request.user.client_id, "scope": REQUIRED_SCOPE})


urlpatterns = [path("hello/", hello), path("editors/", editors), path("orders/", orders)]


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

//! The OpenAPI 3.1 document (`GET /openapi.json`) and the bundled Swagger UI
//! (`/docs/`), generated with utoipa from the handlers' `#[utoipa::path]`
//! annotations and the body shapes below. The Swagger UI assets are vendored
//! into the binary at build time (nothing is downloaded).
//!
//! The types here describe the wire format for the document only; the
//! handlers write the same shapes (tests/api/ops.rs checks the document
//! against the running routes).
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Username and password (JSON or form-encoded).
#[derive(ToSchema)]
pub struct Credentials {
    /// At most 150 characters: letters, digits and `@.+-_`.
    #[schema(example = "alice")]
    username: String,
    /// At most 128 characters.
    #[schema(example = "correct horse battery staple")]
    password: String,
}

#[derive(ToSchema)]
pub struct User {
    #[schema(example = 1)]
    id: i64,
    #[schema(example = "alice")]
    username: String,
}

/// A new pair: `refresh` then `access` (login), as simplejwt.
#[derive(ToSchema)]
pub struct TokenPair {
    refresh: String,
    access: String,
}

/// A rotated pair: `access` then `refresh`, as simplejwt. The presented
/// refresh token is spent.
#[derive(ToSchema)]
pub struct RotatedPair {
    access: String,
    refresh: String,
}

#[derive(ToSchema)]
pub struct RefreshRequest {
    refresh: String,
}

#[derive(ToSchema)]
pub struct VerifyRequest {
    /// An access or a refresh token.
    token: String,
}

#[derive(ToSchema)]
pub struct PasswordChange {
    old_password: String,
    /// At most 128 characters.
    new_password: String,
}

/// An empty object.
#[derive(ToSchema)]
pub struct Empty {}

/// DRF field errors: each invalid field with its messages.
#[derive(ToSchema)]
#[schema(example = json!({"username": ["This field is required."]}))]
pub struct FieldErrorsBody(BTreeMap<String, Vec<String>>);

/// A DRF error: `{"detail": …}` (bad credentials, 404, 405, 413, 415, 429
/// with `Retry-After`, 503 with `Retry-After`).
#[derive(ToSchema)]
#[schema(example = json!({"detail": "No active account found with the given credentials"}))]
pub struct Detail {
    detail: String,
}

/// simplejwt's token error; `messages` only for Bearer authentication.
#[derive(ToSchema)]
#[schema(example = json!({"detail": "Token is invalid", "code": "token_not_valid"}))]
pub struct TokenErrorBody {
    detail: String,
    code: String,
    messages: Option<Vec<TokenMessage>>,
}

#[derive(ToSchema)]
pub struct TokenMessage {
    token_class: String,
    token_type: String,
    message: String,
}

/// RFC 7662 / RFC 7009 form parameters.
#[derive(ToSchema)]
pub struct TokenForm {
    token: String,
    token_type_hint: Option<String>,
}

/// RFC 7662: `{"active": false}` for anything not valid right now.
#[derive(ToSchema)]
pub struct Introspection {
    active: bool,
    token_type: Option<String>,
    sub: Option<String>,
    user_id: Option<String>,
    username: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
}

/// RFC 6749 §5.2 error.
#[derive(ToSchema)]
#[schema(example = json!({"error": "invalid_client"}))]
pub struct OAuthError {
    error: String,
}

#[derive(ToSchema)]
pub struct Status {
    #[schema(example = "ok")]
    status: String,
}

/// RFC 7517 JWK Set of the public verification keys (empty with HS256).
#[derive(ToSchema)]
pub struct JwkSet {
    keys: Vec<BTreeMap<String, String>>,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "introspection_client",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokend",
        description = "Users and JWT access/refresh tokens, wire-compatible with djangorestframework-simplejwt 5.5. \
                       Every path is also served without its trailing slash. Bodies are JSON or form-encoded."
    ),
    paths(
        super::users::register,
        super::tokens::obtain_pair,
        super::tokens::refresh,
        super::tokens::verify,
        super::tokens::blacklist,
        super::users::me,
        super::users::logout_everywhere,
        super::users::change_password,
        super::oauth::introspect,
        super::oauth::revoke,
        super::jwks::jwks,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        Credentials, User, TokenPair, RotatedPair, RefreshRequest, VerifyRequest, PasswordChange,
        Empty, FieldErrorsBody, Detail, TokenErrorBody, TokenMessage, TokenForm, Introspection, OAuthError,
        Status, JwkSet
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tokens", description = "simplejwt's token endpoints"),
        (name = "users", description = "Registration and the current user"),
        (name = "oauth", description = "RFC 7662 introspection and RFC 7009 revocation"),
        (name = "operations", description = "Health, metrics and keys"),
    )
)]
pub struct ApiDoc;

/// The document as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

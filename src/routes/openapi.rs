//! The OpenAPI 3.1 document (`GET /openapi.json`) and the bundled Swagger UI
//! (`/docs/`), generated with utoipa from the handlers' `#[utoipa::path]`
//! annotations and the body shapes below. The Swagger UI assets are vendored
//! into the binary at build time (nothing is downloaded).
//!
//! The types here describe the wire format for the document only; the
//! handlers write the same shapes (scripts/schemathesis.sh checks the
//! running server against the document). The paths come from the route
//! table (`routes::routes`): nothing here names a handler.
#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::BTreeMap;

use utoipa::openapi::content::Content;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, ToSchema};

/// What Rust's `str::trim` (and Python's `str.strip`, for these) removes:
/// the Unicode White_Space characters.
const SPACE: &str = r"\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// A DRF `CharField` value: a string (numbers are taken as their decimal
/// text), trimmed, then matched by `inner` (which must start and end with
/// a non-space).
fn char_field(inner: &str, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Number]))
        .pattern(Some(format!("^[{SPACE}]*{inner}[{SPACE}]*$")))
        .description(Some(description))
        .build()
}

/// Not blank after trimming, no NUL character (DRF's `CharField`).
fn text() -> Object {
    let c = format!("[^{SPACE}\\x00]");
    char_field(
        &format!("{c}(?:[^\\x00]*{c})?"),
        "Not blank once trimmed; no NUL character. A number is taken as its decimal text.",
    )
}

/// Not blank after trimming (the OAuth endpoints take any other value).
fn non_blank() -> Object {
    let c = format!("[^{SPACE}]");
    char_field(
        &format!("{c}(?:[\\s\\S]*{c})?"),
        "Not blank once trimmed. A number is taken as its decimal text.",
    )
}

/// Django's username rules: at most 150 characters once trimmed, letters,
/// digits and `@.+-_` only.
fn username() -> Object {
    char_field(
        r"[\w.@+-]{1,150}",
        "At most 150 characters once trimmed: Unicode letters and digits, and `@.+-_`.",
    )
}

/// A new password: at most 128 characters once trimmed, no NUL.
fn new_password() -> Object {
    let c = format!("[^{SPACE}\\x00]");
    char_field(
        &format!("{c}(?:[^\\x00]{{0,126}}{c})?"),
        "At most 128 characters once trimmed, not blank; no NUL character.",
    )
}

/// Login credentials (JSON or form-encoded). Wrong ones are a 401, whatever
/// their length.
#[derive(ToSchema)]
pub struct Credentials {
    #[schema(schema_with = text)]
    username: String,
    #[schema(schema_with = text)]
    password: String,
}

/// A new user (JSON or form-encoded). `email` is optional (absent, null
/// or blank: none) unless `accounts.email_verification` is `mandatory`.
#[derive(ToSchema)]
pub struct Registration {
    #[schema(schema_with = username)]
    username: String,
    #[schema(schema_with = new_password)]
    password: String,
    #[schema(schema_with = email)]
    email: Option<String>,
}

/// An e-mail address: at most 254 characters.
fn email() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .max_length(Some(254))
        .description(Some(
            "An e-mail address, at most 254 characters once trimmed.",
        ))
        .build()
}

/// A user created by an administrator: registration's fields, and the
/// flags (setting either needs a superuser).
#[derive(ToSchema)]
pub struct AdminNewUser {
    #[schema(schema_with = username)]
    username: String,
    #[schema(schema_with = new_password)]
    password: String,
    #[schema(schema_with = email)]
    email: Option<String>,
    is_staff: Option<bool>,
    is_superuser: Option<bool>,
}

/// `{"password": …}`: a new password (the password policy applies).
#[derive(ToSchema)]
pub struct AdminPassword {
    #[schema(schema_with = new_password)]
    password: String,
}

/// The flags to set; either may be left out.
#[derive(ToSchema)]
pub struct AdminFlags {
    is_staff: Option<bool>,
    is_superuser: Option<bool>,
}

/// `{"name": …}`: a group to create.
#[derive(ToSchema)]
pub struct AdminGroup {
    #[schema(schema_with = text)]
    name: String,
}

/// `{"group": …}`: a group to add the user to.
#[derive(ToSchema)]
pub struct AdminGroupRef {
    #[schema(schema_with = text)]
    group: String,
}

/// A client, as `tokend clients create` makes it: `scopes` a list (or, in
/// a form, one space-separated string).
#[derive(ToSchema)]
pub struct AdminNewClient {
    #[schema(schema_with = text)]
    name: String,
    scopes: Vec<String>,
    /// The `aud` of its tokens (default: `jwt.audience`).
    audience: Option<String>,
    /// Lifetime of its tokens, 1-86400 s (default: the access token's).
    ttl_secs: Option<i64>,
    /// A PEM public key (EdDSA or RS256): the client authenticates with
    /// `private_key_jwt`.
    public_key: Option<String>,
}

/// `{"overlap_secs": …}`: how long the old secret keeps working (0-2592000,
/// default 0).
#[derive(ToSchema)]
pub struct AdminRotateSecret {
    overlap_secs: Option<i64>,
}

/// `{"email": …}`.
#[derive(ToSchema)]
pub struct EmailRequest {
    #[schema(schema_with = email)]
    email: String,
}

/// A password-reset confirmation: the `uid` and `token` of the mailed
/// link, the new password twice.
#[derive(ToSchema)]
pub struct ResetConfirmation {
    #[schema(schema_with = new_password)]
    new_password1: String,
    #[schema(schema_with = new_password)]
    new_password2: String,
    #[schema(schema_with = text)]
    uid: String,
    #[schema(schema_with = text)]
    token: String,
}

/// RFC 6749 §4.4.2: `grant_type=client_credentials`, optional `scope`
/// (space-separated; default: all the client's), and the client's
/// credentials here (`client_secret_post`) or in HTTP Basic.
#[derive(ToSchema)]
pub struct ClientTokenForm {
    #[schema(example = "client_credentials")]
    grant_type: String,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    /// `private_key_jwt` (RFC 7523):
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: Option<String>,
    /// A JWT signed with the client's registered key.
    client_assertion: Option<String>,
}

/// `{"key": …}`: the key of a verification mail.
#[derive(ToSchema)]
pub struct KeyRequest {
    #[schema(schema_with = text)]
    key: String,
}

// The success bodies are the served types themselves.
pub use super::bodies::{
    AccessOnly, AdminSessionBody, AdminUserBody, AuditEventBody, AuditPageBody, AuthUser,
    ClientBody, ClientCredentialsBody, ClientIntrospectionBody, ClientTokenBody as ClientToken,
    DetailBody, Empty, GroupBody, Inactive, IntrospectionBody, RevokedBody, RotatedPair,
    SessionBody, Status, TokenPair, UserBody as User, UserPageBody,
};

/// RFC 7662: the claims of a live token, or `{"active": false}` for
/// anything not valid right now.
pub struct Introspection;

/// A new pair: without the cookie mode both tokens, with it the access
/// token only.
pub struct IssuedPair;
/// A rotated pair, or the access token only (cookie mode, or rotation off).
pub struct Rotated;

/// In cookie mode the field may be left out: the refresh cookie is used.
#[derive(ToSchema)]
pub struct RefreshRequest {
    #[schema(schema_with = text)]
    refresh: String,
}

#[derive(ToSchema)]
pub struct VerifyRequest {
    /// An access or a refresh token.
    #[schema(schema_with = text)]
    token: String,
}

#[derive(ToSchema)]
pub struct PasswordChange {
    #[schema(schema_with = text)]
    old_password: String,
    #[schema(schema_with = new_password)]
    new_password: String,
}

/// DRF field errors: each invalid field with its messages
/// (`non_field_errors` for a body that is not an object).
#[derive(ToSchema)]
#[schema(example = json!({"username": ["This field is required."]}))]
pub struct FieldErrorsBody(BTreeMap<String, Vec<String>>);

/// A DRF error: `{"detail": …}` (bad credentials, missing credentials, JSON
/// parse errors, 403, 404, 405, 408, 413, 415, 429, 500, 503).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"detail": "No active account found with the given credentials"}))]
pub struct Detail {
    detail: String,
}

/// The claims hook failed and `claims.hook_failure` is `closed`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"detail": "Claims service unavailable.", "code": "claims_hook_unavailable"}))]
pub struct ClaimsHookUnavailable {
    detail: String,
    code: String,
}

/// A 503 of the endpoints that issue access tokens.
pub struct IssuingUnavailable;

/// simplejwt's token error, with a `code`; `messages` only for Bearer
/// authentication.
#[derive(ToSchema)]
#[schema(example = json!({"detail": "Token is invalid", "code": "token_not_valid"}))]
pub struct TokenErrorBody {
    detail: String,
    code: String,
    #[schema(nullable = false)]
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
    #[schema(schema_with = non_blank)]
    token: String,
    /// Ignored: the token says what it is.
    token_type_hint: Option<String>,
}

/// RFC 6749 §5.2 error.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"error": "invalid_client"}))]
pub struct OAuthError {
    error: String,
}

/// RFC 7517 JWK Set of the public verification keys (empty with HS256).
#[derive(ToSchema)]
pub struct JwkSet {
    keys: Vec<BTreeMap<String, String>>,
}

/// A 400: field errors, or `{"detail": …}` for a body that cannot be
/// parsed or read (or an origin the CORS settings refuse).
pub struct BadRequest;
/// A 401 on Bearer routes: `{"detail": …}` without a code when no
/// credentials were given, simplejwt's coded token errors otherwise.
pub struct BearerError;
/// A 400 of the OAuth endpoints: `invalid_request` without a token, field
/// errors or `{"detail": …}` for a body that cannot be parsed.
pub struct OAuthBadRequest;

/// A named schema that is one of other named schemas.
macro_rules! one_of {
    ($ty:ident: $($member:literal),+) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                OneOfBuilder::new()
                    $(.item(Ref::from_schema_name($member)))+
                    .into()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
        }
    };
}

one_of!(IssuedPair: "TokenPair", "AccessOnly");
one_of!(Introspection: "IntrospectionBody", "ClientIntrospectionBody", "Inactive");
one_of!(Rotated: "RotatedPair", "AccessOnly");
one_of!(BadRequest: "FieldErrorsBody", "Detail");
one_of!(BearerError: "Detail", "TokenErrorBody");
one_of!(OAuthBadRequest: "OAuthError", "FieldErrorsBody", "Detail");
one_of!(IssuingUnavailable: "Detail", "ClaimsHookUnavailable");

/// A `{"detail": …}` response, with `Retry-After` when `retry` says so.
fn detail_response(description: &str, retry: bool) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("Detail"))),
    );
    if retry {
        response = response.header("Retry-After", retry_after());
    }
    response.build().into()
}

fn retry_after() -> Header {
    let mut header = Header::new(Object::with_type(Type::Integer));
    header.description = Some("Seconds to wait".to_owned());
    header
}

/// The answers every route may give besides its own: refusals of the
/// connection cap, of the CORS settings, and of request bodies.
fn add_common_responses(method: &HttpMethod, operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: RefOr<utoipa::openapi::Response>| {
        responses.entry(status.to_owned()).or_insert(response);
    };
    add(
        "429",
        detail_response(
            "Too many open connections from this address (`server.max_connections_per_ip`)",
            true,
        ),
    );
    if *method == HttpMethod::Post {
        add(
            "400",
            ResponseBuilder::new()
                .description("Invalid fields, or a body that cannot be parsed")
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("BadRequest"))),
                )
                .build()
                .into(),
        );
        add(
            "408",
            detail_response(
                "The body did not arrive within `server.request_timeout_ms`",
                false,
            ),
        );
        add(
            "413",
            detail_response("Body over `server.body_limit_bytes`", false),
        );
        add(
            "415",
            detail_response("A body neither JSON nor form-encoded", false),
        );
    } else {
        add(
            "400",
            detail_response("An origin the CORS settings refuse", false),
        );
    }
}

/// What every admin route may answer besides its own (docs/admin.md): no
/// or a bad token, no rights, no such id, errors.
fn add_admin_responses(path: &str, operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: RefOr<utoipa::openapi::Response>| {
        responses.entry(status.to_owned()).or_insert(response);
    };
    let mut challenge = Header::new(Object::with_type(Type::String));
    challenge.description = Some("`Bearer realm=\"api\"`".to_owned());
    add(
        "401",
        ResponseBuilder::new()
            .description("No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user")
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("BearerError"))),
            )
            .header("WWW-Authenticate", challenge)
            .build()
            .into(),
    );
    add(
        "403",
        detail_response(
            "Not a staff user's token nor a `tokend:admin` service token; or an action for superusers only",
            false,
        ),
    );
    if path.contains('{') {
        add(
            "404",
            detail_response("No such user, session, group or client", false),
        );
    }
    add("500", detail_response("Internal error", false));
    add("503", detail_response("Database unavailable", true));
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
                       Every path is also served without its trailing slash. Bodies are JSON or form-encoded. \
                       Other methods are answered 405 with `Allow` (on /api/user/me/ after authentication), \
                       OPTIONS 200 `{}` with `Allow`."
    ),
    components(schemas(
        Credentials, Registration, User, TokenPair, RotatedPair, AccessOnly, IssuedPair, Rotated,
        RefreshRequest, VerifyRequest, PasswordChange, Empty, FieldErrorsBody, Detail, TokenErrorBody,
        TokenMessage, TokenForm, Introspection, IntrospectionBody, ClientIntrospectionBody, Inactive, OAuthError, Status, JwkSet, BadRequest, BearerError,
        OAuthBadRequest, ClaimsHookUnavailable, IssuingUnavailable, EmailRequest, ResetConfirmation,
        KeyRequest, DetailBody, AuthUser, ClientTokenForm, ClientToken, SessionBody, RevokedBody,
        AdminNewUser, AdminPassword, AdminFlags, AdminGroup, AdminGroupRef, AdminNewClient, AdminRotateSecret,
        AdminUserBody, UserPageBody, AdminSessionBody, GroupBody, AuditEventBody, AuditPageBody,
        ClientBody, ClientCredentialsBody
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "tokens", description = "simplejwt's token endpoints"),
        (name = "users", description = "Registration and the current user"),
        (name = "accounts", description = "Password reset and e-mail verification (dj-rest-auth's paths and bodies)"),
        (name = "oauth", description = "RFC 7662 introspection and RFC 7009 revocation"),
        (name = "operations", description = "Health, metrics and keys"),
        (name = "admin", description = "Administration (docs/admin.md): a staff user's access token, or a service token with the scope `tokend:admin`"),
    )
)]
pub struct ApiDoc;

/// The document of `operations` (path, method, operation), each with the
/// answers every route may give.
pub fn document(
    operations: impl IntoIterator<Item = (String, HttpMethod, Operation)>,
) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for (path, method, mut operation) in operations {
        if path.starts_with("/api/admin/") {
            add_admin_responses(&path, &mut operation);
        }
        add_common_responses(&method, &mut operation);
        doc.paths.add_path_operation(path, vec![method], operation);
    }
    doc
}

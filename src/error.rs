//! One error type for the whole API, mapped to simplejwt/DRF-shaped HTTP
//! responses here and nowhere else.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Map, Value};

use crate::auth::jwt::TokenError;
use crate::auth::throttle::retry_after_secs;
use crate::storage::{BoxError, StorageError};

/// Field errors in the order the fields are declared (DRF's order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(Vec<(String, Vec<String>)>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, messages: Vec<String>) {
        if messages.is_empty() {
            return;
        }
        match self.0.iter_mut().find(|(name, _)| name == field) {
            Some((_, existing)) => existing.extend(messages),
            None => self.0.push((field.to_owned(), messages)),
        }
    }

    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = FieldErrors::default();
        errors.add(field, vec![message.into()]);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err(self)` when any field has an error.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self))
        }
    }

    fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(field, messages)| (field.clone(), json!(messages)))
            .collect();
        Value::Object(map)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(FieldErrors),
    #[error("JSON parse error")]
    JsonParse(String),
    #[error("unsupported media type")]
    UnsupportedMediaType(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("could not read the request body")]
    BadBody,
    /// The body did not arrive within `server.request_timeout_ms`.
    #[error("request body not received in time")]
    RequestTimeout,
    /// Over `server.max_connections_per_ip` open connections.
    #[error("too many open connections")]
    TooManyConnections,
    /// Login with wrong credentials, an unknown or an inactive user.
    #[error("bad credentials")]
    BadCredentials,
    /// Right credentials, but `accounts.email_verification` is mandatory
    /// and the user's address is not verified yet.
    #[error("e-mail not verified")]
    EmailNotVerified,
    /// A token refused by refresh, verify or blacklist.
    #[error("token refused: {0}")]
    Token(TokenError),
    /// A well-signed refresh token whose user is gone or inactive.
    #[error("no active account for the token")]
    NoActiveAccountForToken,
    #[error("no credentials")]
    NotAuthenticated,
    #[error("bad Authorization header")]
    BadAuthorizationHeader,
    /// A Bearer token refused on a protected route.
    #[error("bearer token refused: {0}")]
    BearerToken(TokenError),
    #[error("token without user identification")]
    NoUserIdentification,
    #[error("user not found")]
    UserNotFound,
    #[error("user inactive")]
    UserInactive,
    /// Authenticated, but without the rights this action needs (DRF's
    /// `PermissionDenied`).
    #[error("permission denied")]
    PermissionDenied,
    #[error("method not allowed")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("not found")]
    NotFound,
    /// Cookie mode: a browser request from an origin that is not allowed
    /// (cross-site request forgery), as Django's CSRF check words it.
    #[error("request from a foreign origin: {0}")]
    CrossOrigin(String),
    /// Over a rate limit or in a login back-off; wait this long.
    #[error("throttled")]
    Throttled(std::time::Duration),
    /// RFC 6749 §5.2 errors of the introspection/revocation endpoints.
    #[error("OAuth client authentication failed")]
    OAuthInvalidClient,
    #[error("OAuth request without a token")]
    OAuthInvalidRequest,
    /// RFC 6749 §5.2 errors of the token endpoint.
    #[error("OAuth grant type not supported")]
    OAuthUnsupportedGrantType,
    #[error("OAuth scope not allowed")]
    OAuthInvalidScope,
    #[error("OAuth client may not use this grant")]
    OAuthUnauthorizedClient,
    /// The cause is kept whole for the log; the client sees a fixed body.
    #[error("service unavailable")]
    Unavailable(#[source] BoxError),
    /// The claims hook failed and `claims.hook_failure` is `closed` (the
    /// failure is logged where it happens).
    #[error("claims hook unavailable")]
    ClaimsHookUnavailable,
    /// The cause is kept whole for the log; the client sees a fixed body.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(Box::new(e))
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

impl From<crate::auth::hashing::PoolError> for ApiError {
    fn from(e: crate::auth::hashing::PoolError) -> Self {
        use crate::auth::hashing::PoolError;
        match e {
            PoolError::Busy => ApiError::Unavailable(Box::new(e)),
            // This address's own checks fill its share: its problem, not ours.
            PoolError::ClientBusy => ApiError::Throttled(std::time::Duration::from_secs(1)),
            PoolError::Failed => ApiError::Internal(Box::new(e)),
        }
    }
}

impl From<crate::auth::jwt::SigningError> for ApiError {
    fn from(e: crate::auth::jwt::SigningError) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

/// Displays an error and each of its causes, `outer: inner: innermost`,
/// for logs (a plain `Display` shows only the outermost message).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

const WWW_AUTHENTICATE: &str = "Bearer realm=\"api\"";

impl ApiError {
    fn body(&self) -> Value {
        match self {
            ApiError::Validation(errors) => errors.to_json(),
            ApiError::JsonParse(msg) => json!({ "detail": format!("JSON parse error - {msg}") }),
            ApiError::UnsupportedMediaType(media) => {
                json!({ "detail": format!("Unsupported media type \"{media}\" in request.") })
            }
            ApiError::PayloadTooLarge => json!({ "detail": "Request body is too large." }),
            ApiError::BadBody => json!({ "detail": "Could not read the request body." }),
            ApiError::RequestTimeout => json!({ "detail": "Request body not received in time." }),
            ApiError::TooManyConnections => {
                json!({ "detail": "Too many open connections from this address." })
            }
            ApiError::BadCredentials => {
                json!({ "detail": "No active account found with the given credentials" })
            }
            // dj-rest-auth's wording (django-allauth's mandatory verification).
            ApiError::EmailNotVerified => json!({
                "detail": "E-mail is not verified.",
                "code": "email_not_verified",
            }),
            ApiError::Token(e) => json!({ "detail": e.to_string(), "code": "token_not_valid" }),
            ApiError::NoActiveAccountForToken => json!({
                "detail": "No active account found for the given token.",
                "code": "no_active_account",
            }),
            ApiError::NotAuthenticated => {
                json!({ "detail": "Authentication credentials were not provided." })
            }
            ApiError::BadAuthorizationHeader => json!({
                "detail": "Authorization header must contain two space-delimited values",
                "code": "bad_authorization_header",
            }),
            ApiError::BearerToken(e) => json!({
                "detail": "Given token not valid for any token type",
                "code": "token_not_valid",
                "messages": [{
                    "token_class": "AccessToken",
                    "token_type": "access",
                    "message": e.to_string(),
                }],
            }),
            ApiError::NoUserIdentification => json!({
                "detail": "Token contained no recognizable user identification",
                "code": "token_not_valid",
            }),
            ApiError::UserNotFound => {
                json!({ "detail": "User not found", "code": "user_not_found" })
            }
            ApiError::UserInactive => {
                json!({ "detail": "User is inactive", "code": "user_inactive" })
            }
            ApiError::MethodNotAllowed { method, .. } => {
                json!({ "detail": format!("Method \"{method}\" not allowed.") })
            }
            ApiError::NotFound => json!({ "detail": "Not found." }),
            ApiError::PermissionDenied => {
                json!({ "detail": "You do not have permission to perform this action." })
            }
            ApiError::CrossOrigin(origin) => json!({
                "detail": format!("CSRF Failed: Origin checking failed - {origin} does not match any trusted origins.")
            }),
            ApiError::Throttled(wait) => {
                // DRF's Throttled wording.
                let secs = retry_after_secs(*wait);
                let unit = if secs == 1 { "second" } else { "seconds" };
                json!({ "detail": format!("Request was throttled. Expected available in {secs} {unit}.") })
            }
            ApiError::OAuthInvalidClient => json!({ "error": "invalid_client" }),
            ApiError::OAuthInvalidRequest => json!({ "error": "invalid_request" }),
            ApiError::OAuthUnsupportedGrantType => json!({ "error": "unsupported_grant_type" }),
            ApiError::OAuthInvalidScope => json!({ "error": "invalid_scope" }),
            ApiError::OAuthUnauthorizedClient => json!({ "error": "unauthorized_client" }),
            ApiError::Unavailable(_) => {
                json!({ "detail": "Service temporarily unavailable, try again later." })
            }
            ApiError::ClaimsHookUnavailable => json!({
                "detail": "Claims service unavailable.",
                "code": "claims_hook_unavailable",
            }),
            ApiError::Internal(_) => json!({ "detail": "A server error occurred." }),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation(_)
            | ApiError::JsonParse(_)
            | ApiError::BadBody
            | ApiError::OAuthInvalidRequest
            | ApiError::OAuthUnsupportedGrantType
            | ApiError::OAuthInvalidScope
            | ApiError::OAuthUnauthorizedClient => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadCredentials
            | ApiError::EmailNotVerified
            | ApiError::Token(_)
            | ApiError::NoActiveAccountForToken
            | ApiError::NotAuthenticated
            | ApiError::BadAuthorizationHeader
            | ApiError::BearerToken(_)
            | ApiError::NoUserIdentification
            | ApiError::UserNotFound
            | ApiError::UserInactive
            | ApiError::OAuthInvalidClient => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::CrossOrigin(_) | ApiError::PermissionDenied => StatusCode::FORBIDDEN,
            ApiError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::ClaimsHookUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            // Causes are logged here, once; they never reach the client.
            ApiError::Internal(cause) => {
                tracing::error!(cause = %Chain(cause.as_ref()), "internal error")
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %Chain(cause.as_ref()), "unavailable")
            }
            _ => {}
        }
        let mut response = HttpResponse::build(status);
        let challenge = match self {
            ApiError::OAuthInvalidClient => "Basic realm=\"tokend\"",
            _ => WWW_AUTHENTICATE,
        };
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ));
        }
        match self {
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            ApiError::Unavailable(_) | ApiError::ClaimsHookUnavailable => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::Throttled(wait) => {
                response.insert_header((header::RETRY_AFTER, retry_after_secs(*wait).to_string()));
            }
            // The rest of a late body, or the connection over the cap, is
            // not worth keeping the connection for.
            ApiError::RequestTimeout => {
                response.force_close();
            }
            ApiError::TooManyConnections => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
                response.force_close();
            }
            _ => {}
        }
        response.json(self.body())
    }
}

/// Middleware: every error answer is JSON, including those made outside the
/// handlers (CORS refusals, errors of actix's own extractors):
/// a non-JSON error body becomes `{"detail": "..."}`, headers are kept.
pub async fn json_error_bodies(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    // Errors raised as `Err` (rather than answered) are rendered by their
    // own `ResponseError`; inside the app that is `ApiError`, already JSON.
    let res = next.call(req).await?.map_into_boxed_body();
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return Ok(res);
    }
    let detail = match res.response().error() {
        Some(e) if !status.is_server_error() => e.to_string(),
        _ => status.canonical_reason().unwrap_or("Error").to_owned(),
    };
    let (request, old) = res.into_parts();
    let mut new = HttpResponse::build(status).json(json!({ "detail": detail }));
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(e: ApiError) -> (u16, String, Option<String>) {
        let r = e.error_response();
        let www = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let status = r.status().as_u16();
        let body = r.into_body().try_into_bytes().unwrap_or_default();
        (status, String::from_utf8_lossy(&body).into_owned(), www)
    }

    #[test]
    fn a_failed_claims_hook_answers_503_like_unavailable() {
        let response = ApiError::ClaimsHookUnavailable.error_response();
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        assert_eq!(
            render(ApiError::ClaimsHookUnavailable),
            (
                503,
                r#"{"detail":"Claims service unavailable.","code":"claims_hook_unavailable"}"#
                    .into(),
                None
            )
        );
    }

    #[test]
    fn simplejwt_bodies_byte_for_byte() {
        let mut errors = FieldErrors::default();
        errors.add("username", vec!["This field is required.".into()]);
        errors.add("password", vec!["This field may not be blank.".into()]);
        assert_eq!(
            render(ApiError::Validation(errors)),
            (
                400,
                r#"{"username":["This field is required."],"password":["This field may not be blank."]}"#.into(),
                None
            )
        );
        assert_eq!(
            render(ApiError::Token(TokenError::Blacklisted)),
            (
                401,
                r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#.into(),
                Some(r#"Bearer realm="api""#.into())
            )
        );
        assert_eq!(
            render(ApiError::BearerToken(TokenError::WrongType)).1,
            r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token has wrong type"}]}"#
        );
        assert_eq!(
            render(ApiError::Throttled(std::time::Duration::from_millis(1500))).1,
            r#"{"detail":"Request was throttled. Expected available in 2 seconds."}"#
        );
        assert_eq!(
            render(ApiError::Throttled(std::time::Duration::from_millis(10))).1,
            r#"{"detail":"Request was throttled. Expected available in 1 second."}"#
        );
        assert_eq!(
            render(ApiError::PermissionDenied),
            (
                403,
                r#"{"detail":"You do not have permission to perform this action."}"#.into(),
                None
            )
        );
        assert_eq!(
            render(ApiError::UnsupportedMediaType("text/plain".into())).1,
            r#"{"detail":"Unsupported media type \"text/plain\" in request."}"#
        );
        assert_eq!(
            render(ApiError::MethodNotAllowed {
                method: "GET".into(),
                allow: "POST, OPTIONS"
            }),
            (
                405,
                r#"{"detail":"Method \"GET\" not allowed."}"#.into(),
                None
            )
        );
    }

    #[test]
    fn internal_causes_never_reach_the_client() {
        let (status, body, _) = render(ApiError::Internal("secret detail".into()));
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"detail":"A server error occurred."}"#);
        let (status, body, _) = render(ApiError::Unavailable("pg://user:pw@host".into()));
        assert_eq!(status, 503);
        assert_eq!(
            body,
            r#"{"detail":"Service temporarily unavailable, try again later."}"#
        );
    }

    /// An error two levels below what diesel reports itself.
    #[derive(Debug, thiserror::Error)]
    #[error("row decoding failed")]
    struct Decoding(#[source] std::io::Error);

    fn deep_query_error() -> ApiError {
        let root = std::io::Error::other("root cause 42");
        StorageError::from(diesel::result::Error::DeserializationError(Box::new(
            Decoding(root),
        )))
        .into()
    }

    #[test]
    fn storage_errors_keep_their_cause_chain() {
        let e = deep_query_error();
        let chain: Vec<String> =
            std::iter::successors(std::error::Error::source(&e), |e| e.source())
                .map(|e| e.to_string())
                .collect();
        assert_eq!(
            chain,
            ["database error", "row decoding failed", "root cause 42"]
        );
    }

    /// Log output, captured.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_500_logs_the_whole_chain_and_answers_a_fixed_body() {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let (status, body, _) =
            tracing::subscriber::with_default(subscriber, || render(deep_query_error()));
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"detail":"A server error occurred."}"#);
        let log =
            String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        assert!(
            log.contains("cause=database error: row decoding failed: root cause 42"),
            "{log}"
        );
    }
}

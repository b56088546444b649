//! RFC 7009 token revocation and RFC 7662 token introspection.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;

use super::bodies::{ClientIntrospectionBody, ClientTokenBody, Inactive, IntrospectionBody};
use super::fields::Fields;
use super::AppState;
use crate::error::ApiError;
use crate::service::introspect::Active;
use crate::service::oauth_token::{self, TokenRequest};
use crate::service::{introspect as introspection, revoke as revocation};

/// The `token` parameter, or the RFC's invalid_request answer.
fn token_param(fields: &Fields) -> Result<String, ApiError> {
    fields
        .char_field("token")
        .map_err(|_| ApiError::OAuthInvalidRequest)
}

/// The HTTP Basic credentials of a request: (id, secret).
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let encoded = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded inside Basic.
fn form_decoded(text: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={text}"))
        .ok()
        .and_then(|mut pairs| pairs.pop())
        .map_or_else(|| text.to_owned(), |(_, v)| v)
}

/// POST /api/oauth/token/ (RFC 6749 §4.4): the client credentials grant.
#[utoipa::path(post, path = "/api/oauth/token/", tag = "oauth",
    security(("introspection_client" = [])),
    request_body(content((super::openapi::ClientTokenForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "RFC 6749 §5.1: the client's access token", body = super::openapi::ClientToken,
            headers(("Cache-Control" = String, description = "no-store"), ("Pragma" = String, description = "no-cache"))),
        (status = 400, description = "RFC 6749 §5.2: `invalid_request`, `unsupported_grant_type`, `invalid_scope`", body = super::openapi::OAuthBadRequest),
        (status = 401, description = "`invalid_client`: unknown, disabled or wrong credentials", body = super::openapi::OAuthError,
            headers(("WWW-Authenticate" = String))),
        (status = 429, description = "A back-off after wrong client credentials", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn token(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let field = |name: &str| fields.char_field(name).ok();
    let request = TokenRequest {
        grant_type: field("grant_type"),
        scope: fields
            .has("scope")
            .then(|| field("scope").unwrap_or_default()),
        basic: basic_credentials(&req)
            .map(|(id, secret)| (form_decoded(&id), form_decoded(&secret))),
        form_id: field("client_id"),
        form_secret: field("client_secret"),
        assertion_type: field("client_assertion_type"),
        assertion: field("client_assertion"),
        audiences: {
            let issuer = issuer(&state, &req);
            let endpoint = format!("{}/api/oauth/token/", issuer.trim_end_matches('/'));
            vec![
                endpoint.clone(),
                endpoint.trim_end_matches('/').to_owned(),
                issuer,
            ]
        },
    };
    let issued =
        oauth_token::client_credentials(&state, super::client_ip(&state, &req), request).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(ClientTokenBody {
            access_token: issued.access_token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            scope: issued.scope,
        }))
}

/// The configured issuer, else this server as the client reached it.
fn issuer(state: &AppState, req: &HttpRequest) -> String {
    state.keys.issuer().map_or_else(
        || {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        },
        str::to_owned,
    )
}

/// GET /.well-known/oauth-authorization-server (RFC 8414).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses(
        (status = 200, description = "RFC 8414 authorization server metadata", body = Object),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn metadata(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let issuer = issuer(&state, &req);
    let base = issuer.trim_end_matches('/');
    let scopes = crate::service::clients::scopes_supported(&state.db).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{base}/api/oauth/token/"),
            "jwks_uri": format!("{base}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "RS256"],
            "introspection_endpoint": format!("{base}/api/token/introspect/"),
            "revocation_endpoint": format!("{base}/api/token/revoke/"),
            "scopes_supported": scopes,
        })))
}

/// POST /api/token/introspect/ (RFC 7662), for services: Basic client
/// credentials; form `token` (and an ignored `token_type_hint`). Answers
/// `{"active": false}` for anything not valid right now.
#[utoipa::path(post, path = "/api/token/introspect/", tag = "oauth",
    security(("introspection_client" = [])),
    request_body(content((super::openapi::TokenForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Claims of a live token, or {\"active\":false}", body = super::openapi::Introspection),
        (status = 400, description = "No token (`invalid_request`), or a body that cannot be parsed", body = super::openapi::OAuthBadRequest),
        (status = 401, description = "Missing or wrong service credentials", body = super::openapi::OAuthError,
            headers(("WWW-Authenticate" = String))),
        (status = 429, description = "A back-off after wrong service credentials", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let credentials = basic_credentials(&req);
    let credentials = credentials
        .as_ref()
        .map(|(id, s)| (id.as_str(), s.as_str()));
    let token = token_param(&fields).ok();
    let client = super::client_ip(&state, &req);
    Ok(
        match introspection::introspect(&state, client, credentials, token).await? {
            Some(Active::User(active)) => HttpResponse::Ok().json(IntrospectionBody::from(active)),
            Some(Active::Client(active)) => {
                HttpResponse::Ok().json(ClientIntrospectionBody::from(active))
            }
            None => HttpResponse::Ok().json(Inactive::BODY),
        },
    )
}

/// POST /api/token/revoke/ (RFC 7009): form `token` (access or refresh; the
/// hint is not needed). The token's whole session is revoked. Always 200,
/// also for invalid or unknown tokens, as the RFC requires; the token itself
/// is the proof of possession, so browser clients can call it.
#[utoipa::path(post, path = "/api/token/revoke/", tag = "oauth",
    request_body(content((super::openapi::TokenForm = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Revoked (also for invalid or unknown tokens, as RFC 7009 requires); empty body"),
        (status = 400, description = "No token (`invalid_request`), or a body that cannot be parsed", body = super::openapi::OAuthBadRequest),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let token = token_param(&fields)?;
    revocation::revoke(&state, &super::origin(&state, &req), &token).await?;
    Ok(HttpResponse::Ok().finish())
}

//! RFC 7009 token revocation and RFC 7662 token introspection.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::fields::Fields;
use super::{session_check, session_error, unix_now, AppState, SessionCheck, TokenUse};
use crate::auth::jwt::TokenType;
use crate::error::ApiError;
use crate::storage::refresh_tokens::{self, TokenStatus};
use crate::storage::sessions::{self, RevokeReason};
use crate::storage::users;

/// The `token` parameter, or the RFC's invalid_request answer.
fn token_param(fields: &Fields) -> Result<String, ApiError> {
    fields
        .char_field("token")
        .map_err(|_| ApiError::OAuthInvalidRequest)
}

/// The (id, secret) of a request's HTTP Basic credentials.
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let encoded = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// True when `id`/`secret` are the credentials of a configured
/// introspection client. Compared as SHA-256 digests in constant time, every
/// configured client every time: neither the length of a secret nor which
/// id matched shows in the timing.
fn is_introspection_client(state: &AppState, id: &str, secret: &str) -> bool {
    let (id, secret) = (Sha256::digest(id), Sha256::digest(secret));
    state
        .introspection_clients
        .iter()
        .fold(false, |found, (client, expected)| {
            let matches =
                Sha256::digest(client).ct_eq(&id) & Sha256::digest(expected).ct_eq(&secret);
            found | bool::from(matches)
        })
}

/// Failed introspection credentials back off per client id and address, as
/// failed logins do per username: one client's misconfigured replica (or a
/// guesser of its secret) does not lock out another client behind the same
/// address. Ids that are not configured share one subject, so made-up ids
/// are no way around it.
fn introspection_subject(state: &AppState, id: Option<&str>) -> String {
    match id {
        Some(id) if state.introspection_clients.iter().any(|(c, _)| c == id) => {
            format!("\0introspection:{id}")
        }
        _ => "\0introspection".to_owned(),
    }
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
    // Reserved before the check (a back-off refuses right credentials too,
    // or it would tell them apart).
    let guess = match &state.throttle {
        Some(throttle) => Some(
            throttle
                .begin_guess(
                    &introspection_subject(&state, credentials.as_ref().map(|c| c.0.as_str())),
                    super::client_ip(&state, &req),
                    None,
                    std::time::Instant::now(),
                )
                .map_err(ApiError::Throttled)?,
        ),
        None => None,
    };
    let valid = credentials
        .as_ref()
        .is_some_and(|(id, secret)| is_introspection_client(&state, id, secret));
    match guess {
        Some(guess) if valid => guess.succeeded(),
        Some(guess) => {
            guess.failed(std::time::Instant::now());
        }
        None => {}
    }
    if !valid {
        return Err(ApiError::OAuthInvalidClient);
    }
    let token = token_param(&fields)?;
    Ok(match introspection(&state, &token).await? {
        Some(claims) => HttpResponse::Ok().json(claims),
        None => HttpResponse::Ok().json(json!({ "active": false })),
    })
}

async fn introspection(
    state: &AppState,
    token: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let now = unix_now();
    let Ok(verified) = state.keys.verify(token, None, now) else {
        return Ok(None);
    };
    let Some(user_id) = verified.user_id else {
        return Ok(None);
    };
    let SessionCheck::Live(sid) = session_check(state, &verified, TokenUse::Session, now) else {
        return Ok(None);
    };
    let sid = sid.to_owned();
    let (jti, token_type, exp) = (verified.jti.clone(), verified.token_type, verified.exp);
    let found = state
        .db
        .run(move |conn| {
            let alive = match token_type {
                TokenType::Refresh => {
                    refresh_tokens::status(conn, &jti, &sid, user_id, exp, now)?
                        == TokenStatus::Live
                }
                TokenType::Access => {
                    session_error(sessions::state(conn, &sid, user_id, now)?).is_none()
                }
            };
            Ok(if alive {
                users::find_by_id(conn, user_id)?
            } else {
                None
            })
        })
        .await?;
    Ok(found.filter(|user| user.is_active).map(|user| {
        json!({
            "active": true,
            "token_type": verified.token_type.as_str(),
            "sub": user.id.to_string(),
            "user_id": user.id.to_string(),
            "username": user.username,
            "exp": verified.exp,
            "iat": verified.iat,
            "jti": verified.jti,
            "sid": verified.sid,
        })
    }))
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
pub async fn revoke(state: web::Data<AppState>, fields: Fields) -> Result<HttpResponse, ApiError> {
    let token = token_param(&fields)?;
    let now = unix_now();
    if let Ok(verified) = state.keys.verify(&token, None, now) {
        if let (Some(user_id), SessionCheck::Live(sid)) = (
            verified.user_id,
            session_check(&state, &verified, TokenUse::Session, now),
        ) {
            let (key, sid) = (sid.to_owned(), sid.to_owned());
            let revoked = state
                .db
                .write(move |conn| {
                    sessions::revoke_session(conn, &key, user_id, RevokeReason::Logout, now)
                })
                .await?;
            if revoked {
                state
                    .cache
                    .session_revoked(&sid, user_id, std::time::Instant::now());
            }
        }
    }
    Ok(HttpResponse::Ok().finish())
}

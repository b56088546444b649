//! "Your devices": the caller's live sessions, and ending them.

use actix_web::{web, HttpRequest, HttpResponse};

use super::bearer::bearer_token;
use super::bodies::{Empty, RevokedBody, SessionBody};
use super::fields::Fields;
use super::AppState;
use crate::error::ApiError;
use crate::service::devices;

/// GET /api/user/sessions/ (Bearer) -> the caller's live sessions, newest
/// first, the one of the presented token marked `current`.
#[utoipa::path(get, path = "/api/user/sessions/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live sessions (neither revoked nor ended), newest first", body = Vec<SessionBody>),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn list(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let sessions =
        devices::list(&state, &super::origin(&state, &req), &bearer_token(&req)?).await?;
    let body: Vec<SessionBody> = sessions.into_iter().map(SessionBody::from).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// DELETE /api/user/sessions/{id}/ (Bearer) -> {}: the session ends at
/// once, with all its tokens.
#[utoipa::path(delete, path = "/api/user/sessions/{id}/", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id, as listed by `GET /api/user/sessions/`")),
    responses(
        (status = 200, description = "Revoked: its refresh and access tokens are refused from now on (the caller's own session too, if it is this one)", body = super::openapi::Empty),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "No live session of the caller with this id (unknown, another user's, already revoked or ended)", body = super::openapi::Detail),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    devices::revoke(
        &state,
        &super::origin(&state, &req),
        &bearer_token(&req)?,
        &id,
    )
    .await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// POST /api/user/sessions/revoke-others/ (Bearer) -> {"revoked": N}: every
/// live session of the caller but the current one ends.
#[utoipa::path(post, path = "/api/user/sessions/revoke-others/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's other sessions revoked; how many", body = RevokedBody),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn revoke_others(
    state: web::Data<AppState>,
    req: HttpRequest,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    let revoked =
        devices::revoke_others(&state, &super::origin(&state, &req), &bearer_token(&req)?).await?;
    Ok(HttpResponse::Ok().json(RevokedBody { revoked }))
}

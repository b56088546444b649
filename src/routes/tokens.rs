use actix_web::{web, HttpRequest, HttpResponse};

use super::bodies::{AccessOnly, Empty, RotatedPair, TokenPair};
use super::fields::Fields;
use super::AppState;
use crate::auth::sessions::SignedPair;
use crate::error::ApiError;
use crate::service::login::Credentials;
use crate::service::rotate::Refreshed;
use crate::service::{login, logout, rotate, verify as verify_token};

/// The refresh token of a request and whether it came from the cookie: the
/// body's `refresh` field, or in cookie mode the cookie when the body has no
/// such field.
fn refresh_param(
    state: &AppState,
    req: &HttpRequest,
    fields: &Fields,
) -> Result<(String, bool), ApiError> {
    if !fields.has("refresh") {
        if let Some(token) = state.refresh_cookie.as_ref().and_then(|c| c.read(req)) {
            return Ok((token, true));
        }
    }
    let [refresh] = fields.char_fields(["refresh"])?;
    Ok((refresh, false))
}

/// A new pair as simplejwt writes it: login's order (`rotated` false) or
/// refresh's. In cookie mode the refresh token travels only in the HttpOnly
/// cookie: never where page scripts (or an injected one) could read it.
fn pair_response(state: &AppState, tokens: SignedPair, rotated: bool) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    let SignedPair { access, refresh } = tokens;
    match &state.refresh_cookie {
        Some(cookie) => {
            response.cookie(cookie.set(&refresh, state.keys.lifetimes().refresh_secs));
            response.json(AccessOnly { access })
        }
        None if rotated => response.json(RotatedPair { access, refresh }),
        None => response.json(TokenPair { refresh, access }),
    }
}

/// Cookie mode: login, refresh and logout only from allowed origins.
fn check_origin(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    match &state.refresh_cookie {
        Some(cookie) => cookie.check_origin(req).map_err(ApiError::CrossOrigin),
        None => Ok(()),
    }
}

/// A refusal of a token that came from the cookie also clears the cookie:
/// page scripts cannot remove an HttpOnly cookie themselves.
fn clearing_refused_cookie(
    state: &AppState,
    from_cookie: bool,
    result: Result<HttpResponse, ApiError>,
) -> Result<HttpResponse, ApiError> {
    match (result, &state.refresh_cookie) {
        (Err(e @ (ApiError::Token(_) | ApiError::NoActiveAccountForToken)), Some(cookie))
            if from_cookie =>
        {
            let mut response = actix_web::ResponseError::error_response(&e);
            let _ = response.add_cookie(&cookie.clear());
            Ok(response)
        }
        (result, _) => result,
    }
}

/// POST /api/token/ {username, password} -> {refresh, access}: a new session.
#[utoipa::path(post, path = "/api/token/", tag = "tokens",
    request_body(content((super::openapi::Credentials = "application/json"), (super::openapi::Credentials = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "A new session's pair (in cookie mode: the access token, the refresh token in the cookie)", body = super::openapi::IssuedPair),
        (status = 401, description = "Wrong credentials or inactive user", body = super::openapi::Detail,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "Cookie mode: a request from an origin not allowed", body = super::openapi::Detail),
        (status = 429, description = "Too many attempts, or a login back-off", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable; or the claims hook failed (claims.hook_failure closed)", body = super::openapi::IssuingUnavailable,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn obtain_pair(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    check_origin(&state, &req)?;
    let credentials = fields
        .char_fields(["username", "password"])
        .map(|[username, password]| Credentials { username, password });
    let origin = super::origin(&state, &req);
    let tokens = login::login(&state, &origin, credentials).await?;
    Ok(pair_response(&state, tokens, false))
}

/// POST /api/token/refresh/ {refresh} -> {access, refresh}: the presented
/// refresh token is spent (exactly once, however many requests race) and a
/// new pair of the same session is issued. Re-presenting it within the grace
/// window replays the same new pair; later, or an older token of the
/// session, revokes the session. With `jwt.rotate_refresh_tokens` false:
/// {access} only, and the refresh token stays usable.
#[utoipa::path(post, path = "/api/token/refresh/", tag = "tokens",
    request_body(content((super::openapi::RefreshRequest = "application/json"), (super::openapi::RefreshRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Rotated: the presented token is spent (in cookie mode: the access token, the refresh token in the cookie). With rotation off (jwt.rotate_refresh_tokens): the access token only, the refresh token stays usable", body = super::openapi::Rotated),
        (status = 401, description = "Invalid, expired, spent or revoked token; no active account", body = super::openapi::TokenErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "Cookie mode: a request from an origin not allowed", body = super::openapi::Detail),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable; or the claims hook failed (claims.hook_failure closed)", body = super::openapi::IssuingUnavailable,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    check_origin(&state, &req)?;
    let (refresh, from_cookie) = refresh_param(&state, &req, &fields)?;
    let origin = super::origin(&state, &req);
    let result =
        rotate::refresh(&state, &origin, &refresh)
            .await
            .map(|refreshed| match refreshed {
                Refreshed::Pair(tokens) => pair_response(&state, tokens, true),
                // The refresh token did not change: in cookie mode the cookie
                // is not set again.
                Refreshed::Access(access) => HttpResponse::Ok().json(AccessOnly { access }),
            });
    clearing_refused_cookie(&state, from_cookie, result)
}

/// POST /api/token/verify/ {token} -> {} for a valid access or refresh
/// token whose session is live.
#[utoipa::path(post, path = "/api/token/verify/", tag = "tokens",
    request_body(content((super::openapi::VerifyRequest = "application/json"), (super::openapi::VerifyRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Valid", body = super::openapi::Empty),
        (status = 401, description = "Invalid, expired or revoked", body = super::openapi::TokenErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn verify(state: web::Data<AppState>, fields: Fields) -> Result<HttpResponse, ApiError> {
    let [token] = fields.char_fields(["token"])?;
    verify_token::verify(&state, &token).await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// POST /api/token/blacklist/ {refresh} -> {}: logout. The refresh token and
/// its session (with the session's access tokens) can no longer be used.
#[utoipa::path(post, path = "/api/token/blacklist/", tag = "tokens",
    request_body(content((super::openapi::RefreshRequest = "application/json"), (super::openapi::RefreshRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Logged out: the token and its session are revoked", body = super::openapi::Empty),
        (status = 401, description = "Invalid, expired or already revoked", body = super::openapi::TokenErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "Cookie mode: a request from an origin not allowed", body = super::openapi::Detail),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn blacklist(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    check_origin(&state, &req)?;
    let (refresh, from_cookie) = refresh_param(&state, &req, &fields)?;
    let origin = super::origin(&state, &req);
    let result = logout::logout(&state, &origin, &refresh).await.map(|()| {
        let mut response = HttpResponse::Ok();
        if let Some(cookie) = &state.refresh_cookie {
            response.cookie(cookie.clear());
        }
        response.json(Empty {})
    });
    clearing_refused_cookie(&state, from_cookie, result)
}

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::fields::Fields;
use super::{unix_now, AppState};
use crate::auth::jwt::{TokenError, TokenType, VerifiedToken};
use crate::auth::sessions::{new_session_id, PairSpec};
use crate::error::ApiError;
use crate::metrics::{LoginOutcome, RefreshOutcome};
use crate::storage::refresh_tokens::{
    self, IssueOutcome, RevokeOutcome, SpendOutcome, TokenStatus,
};
use crate::storage::users;

/// A refresh token that passed the signature, expiry and type checks, with
/// the user and session it names.
struct PresentedRefresh {
    token: VerifiedToken,
    user_id: i64,
    session_id: String,
}

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

/// A new pair as simplejwt writes it (`first` names the key that comes
/// first). In cookie mode the refresh token travels only in the HttpOnly
/// cookie: never where page scripts (or an injected one) could read it.
fn pair_body(state: &AppState, first: &str, refresh: &str, access: &str) -> serde_json::Value {
    match (&state.refresh_cookie, first) {
        (Some(_), _) => json!({ "access": access }),
        (None, "refresh") => json!({ "refresh": refresh, "access": access }),
        (None, _) => json!({ "access": access, "refresh": refresh }),
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

/// In cookie mode, the response also carries the new refresh token.
fn with_refresh_cookie(
    state: &AppState,
    mut response: actix_web::HttpResponseBuilder,
    refresh: &str,
) -> actix_web::HttpResponseBuilder {
    if let Some(cookie) = &state.refresh_cookie {
        response.cookie(cookie.set(refresh, state.keys.lifetimes().refresh_secs));
    }
    response
}

fn presented_refresh(
    state: &AppState,
    refresh: &str,
    now: i64,
) -> Result<PresentedRefresh, ApiError> {
    let token = state
        .keys
        .verify(refresh, Some(TokenType::Refresh), now)
        .map_err(ApiError::Token)?;
    let user_id = token.user_id.ok_or(ApiError::NoActiveAccountForToken)?;
    // tokend's refresh tokens always name their session; others were never
    // recorded here and cannot be spent or revoked.
    let super::SessionCheck::Live(sid) =
        super::session_check(state, &token, super::TokenUse::Session, now)
    else {
        return Err(ApiError::Token(TokenError::Invalid));
    };
    let session_id = sid.to_owned();
    Ok(PresentedRefresh {
        token,
        user_id,
        session_id,
    })
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
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn obtain_pair(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    check_origin(&state, &req)?;
    let ip = super::client_ip(&state, &req);
    if let Some(throttle) = &state.throttle {
        throttle.login_attempt(ip).map_err(ApiError::Throttled)?;
    }
    let [username, password] = fields.char_fields(["username", "password"])?;
    // Reserved before the password is checked: no guesses while backing
    // off, and simultaneous guesses count before their outcome is known.
    let guess = match &state.throttle {
        Some(throttle) => Some(
            throttle
                .begin_guess(&username, ip, None, Instant::now())
                .map_err(ApiError::Throttled)?,
        ),
        None => None,
    };
    let user = state
        .db
        .run(move |conn| users::find_by_username(conn, &username))
        .await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let outcome = state.hashing.check(ip, password, stored, true).await?;
    let user = match user {
        Some(user) if outcome.matches && user.is_active => user,
        _ => {
            if let Some(guess) = guess {
                guess.failed(Instant::now());
            }
            state.metrics.login(LoginOutcome::Failed);
            return Err(ApiError::BadCredentials);
        }
    };
    if let Some(guess) = guess {
        guess.succeeded();
    }
    // The hashes this login may rely on: the one checked, and its upgrade.
    let mut checked = vec![user.password_hash.clone()];
    if let Some(hash) = outcome.upgraded {
        // An imported Django hash (or a cheaper bcrypt) matched: store
        // tokend's own from now on. Only if the hash is still the one that
        // was checked; a failure here does not fail the login.
        checked.push(hash.clone());
        let (id, old) = (user.id, user.password_hash.clone());
        if let Err(e) = state
            .db
            .write(move |conn| users::upgrade_password_hash(conn, id, &old, &hash))
            .await
        {
            tracing::warn!(error = %e, user_id = user.id, "password hash upgrade failed");
        }
    }
    let now = unix_now();
    let session_end = now + state.session_max_age_secs;
    let pair = PairSpec::new(
        user.id,
        &new_session_id(),
        now,
        state.keys.lifetimes(),
        session_end,
    );
    let tokens = pair.sign(&state.keys)?;
    match state
        .db
        .write(move |conn| {
            let checked: Vec<&str> = checked.iter().map(String::as_str).collect();
            refresh_tokens::start_session(conn, &pair, session_end, &checked)
        })
        .await?
    {
        IssueOutcome::Issued => {
            state.metrics.login(LoginOutcome::Ok);
            Ok(
                with_refresh_cookie(&state, HttpResponse::Ok(), &tokens.refresh).json(pair_body(
                    &state,
                    "refresh",
                    &tokens.refresh,
                    &tokens.access,
                )),
            )
        }
        IssueOutcome::NoSuchUser => Err(ApiError::BadCredentials),
    }
}

/// POST /api/token/refresh/ {refresh} -> {access, refresh}: the presented
/// refresh token is spent (exactly once, however many requests race) and a
/// new pair of the same session is issued. Re-presenting it within the grace
/// window replays the same new pair; later, or an older token of the
/// session, revokes the session.
#[utoipa::path(post, path = "/api/token/refresh/", tag = "tokens",
    request_body(content((super::openapi::RefreshRequest = "application/json"), (super::openapi::RefreshRequest = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Rotated: the presented token is spent (in cookie mode: the access token, the refresh token in the cookie)", body = super::openapi::Rotated),
        (status = 401, description = "Invalid, expired, spent or revoked token; no active account", body = super::openapi::TokenErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "Cookie mode: a request from an origin not allowed", body = super::openapi::Detail),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    check_origin(&state, &req)?;
    let (refresh, from_cookie) = refresh_param(&state, &req, &fields)?;
    let result = rotate(&state, &req, &refresh).await;
    clearing_refused_cookie(&state, from_cookie, result)
}

async fn rotate(
    state: &AppState,
    req: &HttpRequest,
    refresh: &str,
) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    let presented = presented_refresh(state, refresh, now)?;
    // Cut to the session's end inside the rotation.
    let successor = PairSpec::new(
        presented.user_id,
        &presented.session_id,
        now,
        state.keys.lifetimes(),
        i64::MAX,
    );
    let grace = state.reuse_grace_secs;
    let (jti, sid, exp) = (
        presented.token.jti,
        presented.session_id.clone(),
        presented.token.exp,
    );
    let outcome = state
        .db
        .write(move |conn| refresh_tokens::rotate(conn, &jti, &sid, exp, successor, grace))
        .await?;
    let refused = || state.metrics.refresh(RefreshOutcome::Refused);
    let pair = match outcome {
        SpendOutcome::Rotated(pair) => {
            state.metrics.refresh(RefreshOutcome::Rotated);
            pair
        }
        SpendOutcome::Replayed(pair) => {
            state.metrics.refresh(RefreshOutcome::Replayed);
            // Usually a second tab or a retry; also what a thief racing the
            // owner inside the grace window looks like, hence on record.
            tracing::warn!(
                security_event = "refresh_token_replay",
                user_id = presented.user_id,
                client_ip = %super::client_ip(state, req),
                "a just-rotated refresh token was presented again inside the grace window: \
                 the same successor pair is returned"
            );
            pair
        }
        SpendOutcome::ReuseDetected => {
            refused();
            state.metrics.reuse_detected();
            state.cache.session_revoked(
                &presented.session_id,
                presented.user_id,
                std::time::Instant::now(),
            );
            tracing::warn!(
                security_event = "refresh_token_reuse",
                user_id = presented.user_id,
                client_ip = %super::client_ip(state, req),
                "a spent refresh token was presented again: its session is revoked"
            );
            return Err(ApiError::Token(TokenError::Blacklisted));
        }
        refusal => {
            refused();
            return Err(match refusal {
                SpendOutcome::SessionExpired => ApiError::Token(TokenError::Expired),
                SpendOutcome::Unknown => ApiError::Token(TokenError::Invalid),
                SpendOutcome::NoActiveAccount => ApiError::NoActiveAccountForToken,
                _ => ApiError::Token(TokenError::Blacklisted),
            });
        }
    };
    let tokens = pair.sign(&state.keys)?;
    Ok(
        with_refresh_cookie(state, HttpResponse::Ok(), &tokens.refresh).json(pair_body(
            state,
            "access",
            &tokens.refresh,
            &tokens.access,
        )),
    )
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
    let now = unix_now();
    let verified = state
        .keys
        .verify(&token, None, now)
        .map_err(ApiError::Token)?;
    match verified.token_type {
        TokenType::Refresh => {
            let user_id = verified
                .user_id
                .ok_or(ApiError::Token(TokenError::Invalid))?;
            let super::SessionCheck::Live(sid) =
                super::session_check(&state, &verified, super::TokenUse::Identify, now)
            else {
                return Err(ApiError::Token(TokenError::Invalid));
            };
            let sid = sid.to_owned();
            let (jti, exp) = (verified.jti, verified.exp);
            let status = state
                .db
                .run(move |conn| refresh_tokens::status(conn, &jti, &sid, user_id, exp, now))
                .await?;
            match status {
                TokenStatus::Live => {}
                TokenStatus::Revoked => return Err(ApiError::Token(TokenError::Blacklisted)),
                TokenStatus::Expired => return Err(ApiError::Token(TokenError::Expired)),
                TokenStatus::Unknown => return Err(ApiError::Token(TokenError::Invalid)),
            }
        }
        TokenType::Access => {
            if let Some(problem) =
                super::session_problem(&state, &verified, super::TokenUse::Identify, now).await?
            {
                return Err(ApiError::Token(problem));
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({})))
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
    let result = logout(&state, &refresh).await;
    clearing_refused_cookie(&state, from_cookie, result)
}

async fn logout(state: &AppState, refresh: &str) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    let presented = presented_refresh(state, refresh, now)?;
    let (jti, sid, user_id, exp) = (
        presented.token.jti,
        presented.session_id.clone(),
        presented.user_id,
        presented.token.exp,
    );
    let outcome = state
        .db
        .write(move |conn| refresh_tokens::revoke(conn, &jti, &sid, user_id, exp, now))
        .await?;
    if outcome == RevokeOutcome::Revoked {
        state
            .cache
            .session_revoked(&presented.session_id, user_id, Instant::now());
    }
    match outcome {
        // Unknown here means nothing live to revoke (e.g. the user was
        // deleted): the token is unusable either way, as simplejwt answers.
        RevokeOutcome::Revoked | RevokeOutcome::Unknown => {
            let mut response = HttpResponse::Ok();
            if let Some(cookie) = &state.refresh_cookie {
                response.cookie(cookie.clear());
            }
            Ok(response.json(json!({})))
        }
        RevokeOutcome::AlreadyRevoked => Err(ApiError::Token(TokenError::Blacklisted)),
    }
}

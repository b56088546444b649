use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::bearer::bearer_token;
use super::fields::Fields;
use super::{unix_now, AppState, SessionCheck, TokenUse};
use crate::auth::credentials::{NewPassword, NewUsername};
use crate::auth::jwt::{TokenError, TokenType, VerifiedToken};
use crate::error::{ApiError, FieldErrors};
use crate::storage::cache::UserSummary;
use crate::storage::sessions::{self, RevokeReason};
use crate::storage::users::{self, CreateUser, UserRecord};

const MSG_USERNAME_TAKEN: &str = "A user with that username already exists.";

/// POST /api/user/register/ {username, password} -> 201 {id, username}
#[utoipa::path(post, path = "/api/user/register/", tag = "users",
    request_body(content((super::openapi::Registration = "application/json"), (super::openapi::Registration = "application/x-www-form-urlencoded"))),
    responses(
        (status = 201, description = "Created", body = super::openapi::User),
        (status = 400, description = "Invalid fields or a name already taken (DRF field errors), or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many registrations from this address", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let ip = super::client_ip(&state, &req);
    if let Some(throttle) = &state.throttle {
        throttle.register_attempt(ip).map_err(ApiError::Throttled)?;
    }
    let mut errors = FieldErrors::default();
    let username = match fields
        .char_field("username")
        .map(|v| NewUsername::parse(&v))
    {
        Ok(Ok(name)) => Some(name),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("username", messages);
            None
        }
    };
    // As DRF's UniqueValidator: reported with the other field errors, and
    // checked before paying for a hash. The insert below still decides races.
    if let Some(name) = &username {
        let name = name.as_str().to_owned();
        if state
            .db
            .run(move |conn| users::username_exists(conn, &name))
            .await?
        {
            errors.add("username", vec![MSG_USERNAME_TAKEN.to_owned()]);
        }
    }
    let password = match fields
        .char_field("password")
        .map(|v| NewPassword::parse(&v))
    {
        Ok(Ok(password)) => Some(password),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("password", messages);
            None
        }
    };
    errors.into_result()?;
    let (Some(username), Some(password)) = (username, password) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let hash = state.hashing.hash(ip, password.expose().to_owned()).await?;
    let name = username.as_str().to_owned();
    let created = state
        .db
        .write(move |conn| users::create(conn, &name, &hash, unix_now()))
        .await?;
    match created {
        CreateUser::Created { id } => {
            Ok(HttpResponse::Created().json(json!({ "id": id, "username": username.as_str() })))
        }
        CreateUser::UsernameTaken => Err(ApiError::Validation(FieldErrors::single(
            "username",
            MSG_USERNAME_TAKEN,
        ))),
    }
}

/// The user a Bearer access token names, checked as simplejwt's
/// `JWTAuthentication` does.
async fn authenticated_user(state: &AppState, req: &HttpRequest) -> Result<UserRecord, ApiError> {
    authenticated(state, req).await.map(|(user, _)| user)
}

/// The Bearer access token of a request, checked, with its user id and the
/// instant it was checked at. A token the session policy refuses outright
/// (see `session_check`) is refused here, before any lookup.
fn bearer_access(
    state: &AppState,
    req: &HttpRequest,
    purpose: TokenUse,
) -> Result<(VerifiedToken, i64, i64), ApiError> {
    let token = bearer_token(req)?;
    let now = unix_now();
    let verified = state
        .keys
        .verify(&token, Some(TokenType::Access), now)
        .map_err(ApiError::BearerToken)?;
    let user_id = verified.user_id.ok_or(ApiError::NoUserIdentification)?;
    if super::session_check(state, &verified, purpose, now) == SessionCheck::Refused {
        return Err(ApiError::BearerToken(TokenError::Invalid));
    }
    Ok((verified, user_id, now))
}

/// The user and the verified access token of a Bearer request that acts
/// on its session: the token must name a live one.
async fn authenticated(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(UserRecord, VerifiedToken), ApiError> {
    let (verified, user_id, now) = bearer_access(state, req, TokenUse::Session)?;
    let SessionCheck::Live(sid) = super::session_check(state, &verified, TokenUse::Session, now)
    else {
        return Err(ApiError::BearerToken(TokenError::Invalid));
    };
    let sid = sid.to_owned();
    // One trip to the blocking pool for both lookups.
    let (user, session) = state
        .db
        .run(move |conn| {
            let user = users::find_by_id(conn, user_id)?;
            let session = sessions::state(conn, &sid, user_id, now)?;
            Ok((user, session))
        })
        .await?;
    // simplejwt's order: the user first, then (ours) the session.
    let user = user.ok_or(ApiError::UserNotFound)?;
    if !user.is_active {
        return Err(ApiError::UserInactive);
    }
    if let Some(problem) = super::session_error(session) {
        return Err(ApiError::BearerToken(problem));
    }
    Ok((user, verified))
}

/// The user of a Bearer request for read-only answers: user and session
/// state may come from the per-process cache (see `storage::cache`).
async fn current_user(state: &AppState, req: &HttpRequest) -> Result<UserSummary, ApiError> {
    let (verified, user_id, now) = bearer_access(state, req, TokenUse::Identify)?;
    // simplejwt's order: the user first, then (ours) the session.
    let user = super::cached_user(state, user_id)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    if !user.is_active {
        return Err(ApiError::UserInactive);
    }
    if let Some(problem) = super::session_problem(state, &verified, TokenUse::Identify, now).await?
    {
        return Err(ApiError::BearerToken(problem));
    }
    Ok(user)
}

/// GET /api/user/me/ with `Authorization: Bearer <access>` -> {id, username}
#[utoipa::path(get, path = "/api/user/me/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The user of the access token", body = super::openapi::User),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn me(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let user = current_user(&state, &req).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": user.id, "username": user.username })))
}

/// Other methods on /api/user/me/: as DRF, authentication comes first, so an
/// anonymous caller learns nothing but 401.
pub async fn me_other_method(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    current_user(&state, &req).await?;
    super::other_method(req, super::ALLOW_GET).await
}

/// POST /api/user/logout-all/ (Bearer) -> {}: every session of the user is
/// revoked, this one included; all their tokens stop working.
#[utoipa::path(post, path = "/api/user/logout-all/", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every session of the user revoked", body = super::openapi::Empty),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn logout_everywhere(
    state: web::Data<AppState>,
    req: HttpRequest,
    _body: Fields,
) -> Result<HttpResponse, ApiError> {
    let user = authenticated_user(&state, &req).await?;
    let now = unix_now();
    let revoked = state
        .db
        .write(move |conn| {
            sessions::revoke_all_for_user(conn, user.id, None, RevokeReason::LogoutEverywhere, now)
        })
        .await?;
    state.cache.forget_user(user.id);
    tracing::info!(
        security_event = "logout_everywhere",
        user_id = user.id,
        revoked,
        "sessions revoked"
    );
    Ok(HttpResponse::Ok().json(json!({})))
}

const MSG_WRONG_PASSWORD: &str = "Wrong password.";

/// Ends a session whose access token keeps guessing the old password.
async fn revoke_guessing_session(
    state: &AppState,
    user_id: i64,
    session: String,
    ip: std::net::IpAddr,
) -> Result<(), ApiError> {
    let now = unix_now();
    let sid = session.clone();
    state
        .db
        .write(move |conn| {
            sessions::revoke_session(conn, &sid, user_id, RevokeReason::PasswordGuessing, now)
        })
        .await?;
    state
        .cache
        .session_revoked(&session, user_id, std::time::Instant::now());
    tracing::warn!(
        security_event = "password_guessing",
        user_id,
        client_ip = %ip,
        "wrong old passwords: the session is revoked"
    );
    Ok(())
}

/// POST /api/user/password/ (Bearer) {old_password, new_password} -> {}:
/// changes the password and revokes every other session of the user; the
/// calling session stays signed in.
#[utoipa::path(post, path = "/api/user/password/", tag = "users", security(("bearer" = [])),
    request_body(content((super::openapi::PasswordChange = "application/json"), (super::openapi::PasswordChange = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Changed; the user's other sessions are revoked", body = super::openapi::Empty),
        (status = 400, description = "Wrong old password or invalid new one, or a body that cannot be parsed", body = super::openapi::BadRequest),
        (status = 429, description = "Too many attempts, or a back-off after wrong old passwords", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 401, description = "No credentials (no `code`); an invalid, expired or revoked token; an unknown or inactive user", body = super::openapi::BearerError,
            headers(("WWW-Authenticate" = String))),
        (status = 500, description = "Internal error", body = super::openapi::Detail),
        (status = 503, description = "Database or hashing unavailable", body = super::openapi::Detail,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let (user, token) = authenticated(&state, &req).await?;
    let ip = super::client_ip(&state, &req);
    let mut errors = FieldErrors::default();
    let old = match fields.char_field("old_password") {
        Ok(old) => Some(old),
        Err(messages) => {
            errors.add("old_password", messages);
            None
        }
    };
    let new = match fields
        .char_field("new_password")
        .map(|v| NewPassword::parse(&v))
    {
        Ok(Ok(password)) => Some(password),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("new_password", messages);
            None
        }
    };
    errors.into_result()?;
    let (Some(old), Some(new)) = (old, new) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    // A stolen access token must not make the old password guessable: the
    // same quotas and back-off as login, and a count per session from every
    // address; when the session has used up its free failures, it is
    // revoked (a per-user lock would let the thief keep the owner from
    // changing the password; a new login starts a clean session).
    let session = token.sid.clone().unwrap_or_default();
    let guess = match &state.throttle {
        Some(throttle) => {
            throttle.login_attempt(ip).map_err(ApiError::Throttled)?;
            Some(
                throttle
                    .begin_guess(
                        &user.username,
                        ip,
                        Some(&format!("\0session:{session}")),
                        Instant::now(),
                    )
                    .map_err(ApiError::Throttled)?,
            )
        }
        None => None,
    };
    let checked = state
        .hashing
        .check(ip, old, Some(user.password_hash.clone()), false)
        .await?;
    if !checked.matches {
        if guess.is_some_and(|guess| guess.failed(Instant::now())) {
            revoke_guessing_session(&state, user.id, session, ip).await?;
        }
        return Err(ApiError::Validation(FieldErrors::single(
            "old_password",
            MSG_WRONG_PASSWORD,
        )));
    }
    if let Some(guess) = guess {
        guess.succeeded();
    }
    let hash = state.hashing.hash(ip, new.expose().to_owned()).await?;
    let now = unix_now();
    // `authenticated` made sure the token names its (live) session.
    let keep = token.sid;
    let revoked = state
        .db
        .write(move |conn| users::change_password(conn, user.id, &hash, keep.as_deref(), now))
        .await?;
    state.cache.forget_user(user.id);
    tracing::info!(
        security_event = "password_change",
        user_id = user.id,
        revoked,
        "other sessions revoked"
    );
    Ok(HttpResponse::Ok().json(json!({})))
}

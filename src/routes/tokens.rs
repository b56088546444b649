use actix_web::{web, HttpResponse};
use serde_json::json;

use super::fields::Fields;
use super::{unix_now, AppState};
use crate::auth::jwt::{IssuedToken, TokenError, TokenType, VerifiedToken};
use crate::error::ApiError;
use crate::storage::refresh_tokens::{
    self, IssueOutcome, NewRefreshToken, RevokeOutcome, SpendOutcome, TokenStatus,
};
use crate::storage::users;

fn record(token: &IssuedToken, user_id: i64, now: i64) -> NewRefreshToken {
    NewRefreshToken {
        jti: token.jti.clone(),
        user_id,
        issued_at: now,
        expires_at: token.exp,
    }
}

/// A refresh token that passed the signature, expiry and type checks, with
/// the user it names.
fn verified_refresh(
    state: &AppState,
    fields: &Fields,
    now: i64,
) -> Result<(VerifiedToken, i64), ApiError> {
    let [refresh] = fields.char_fields(["refresh"])?;
    let token = state
        .keys
        .verify(&refresh, Some(TokenType::Refresh), now)
        .map_err(ApiError::Token)?;
    let user_id = token.user_id.ok_or(ApiError::NoActiveAccountForToken)?;
    Ok((token, user_id))
}

/// POST /api/token/ {username, password} -> {refresh, access}
pub async fn obtain_pair(
    state: web::Data<AppState>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let [username, password] = fields.char_fields(["username", "password"])?;
    let user = state
        .db
        .run(move |conn| users::find_by_username(conn, &username))
        .await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let matches = state
        .hashing
        .verify(password, stored)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let user = match user {
        Some(user) if matches && user.is_active => user,
        _ => return Err(ApiError::BadCredentials),
    };
    let now = unix_now();
    let refresh = state.keys.issue(TokenType::Refresh, user.id, now)?;
    let access = state.keys.issue(TokenType::Access, user.id, now)?;
    let row = record(&refresh, user.id, now);
    match state
        .db
        .run(move |conn| refresh_tokens::record_issued(conn, &row))
        .await?
    {
        IssueOutcome::Issued => Ok(
            HttpResponse::Ok().json(json!({ "refresh": refresh.token, "access": access.token }))
        ),
        IssueOutcome::NoSuchUser => Err(ApiError::BadCredentials),
    }
}

/// POST /api/token/refresh/ {refresh} -> {access, refresh}: the presented
/// refresh token is spent (exactly once, however many requests race) and a
/// new pair is issued.
pub async fn refresh(state: web::Data<AppState>, fields: Fields) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    let (presented, user_id) = verified_refresh(&state, &fields, now)?;
    let refresh = state.keys.issue(TokenType::Refresh, user_id, now)?;
    let access = state.keys.issue(TokenType::Access, user_id, now)?;
    let successor = record(&refresh, user_id, now);
    let outcome = state
        .db
        .run(move |conn| refresh_tokens::rotate(conn, &presented.jti, user_id, &successor, now))
        .await?;
    match outcome {
        SpendOutcome::Rotated => Ok(
            HttpResponse::Ok().json(json!({ "access": access.token, "refresh": refresh.token }))
        ),
        SpendOutcome::AlreadySpent => Err(ApiError::Token(TokenError::Blacklisted)),
        SpendOutcome::Unknown => Err(ApiError::Token(TokenError::Invalid)),
        SpendOutcome::NoActiveAccount => Err(ApiError::NoActiveAccountForToken),
    }
}

/// POST /api/token/verify/ {token} -> {} for a valid access or refresh token.
/// Access tokens are checked by signature alone; refresh tokens also against
/// the revocation table.
pub async fn verify(state: web::Data<AppState>, fields: Fields) -> Result<HttpResponse, ApiError> {
    let [token] = fields.char_fields(["token"])?;
    let verified = state
        .keys
        .verify(&token, None, unix_now())
        .map_err(ApiError::Token)?;
    if verified.token_type == TokenType::Refresh {
        let user_id = verified
            .user_id
            .ok_or(ApiError::Token(TokenError::Invalid))?;
        let jti = verified.jti;
        let status = state
            .db
            .run(move |conn| refresh_tokens::status(conn, &jti, user_id))
            .await?;
        match status {
            TokenStatus::Live => {}
            TokenStatus::Revoked => return Err(ApiError::Token(TokenError::Blacklisted)),
            TokenStatus::Unknown => return Err(ApiError::Token(TokenError::Invalid)),
        }
    }
    Ok(HttpResponse::Ok().json(json!({})))
}

/// POST /api/token/blacklist/ {refresh} -> {}: the refresh token can no
/// longer be used.
pub async fn blacklist(
    state: web::Data<AppState>,
    fields: Fields,
) -> Result<HttpResponse, ApiError> {
    let now = unix_now();
    let (presented, user_id) = verified_refresh(&state, &fields, now)?;
    let outcome = state
        .db
        .run(move |conn| refresh_tokens::revoke(conn, &presented.jti, user_id, now))
        .await?;
    match outcome {
        // Unknown here means nothing live to revoke (e.g. the user was
        // deleted): the token is unusable either way, as simplejwt answers.
        RevokeOutcome::Revoked | RevokeOutcome::Unknown => Ok(HttpResponse::Ok().json(json!({}))),
        RevokeOutcome::AlreadyRevoked => Err(ApiError::Token(TokenError::Blacklisted)),
    }
}

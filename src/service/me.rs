//! The current user of a Bearer access token.

use super::policy::{session_problem, TokenUse};
use super::{bearer, cached, Services};
use crate::error::ApiError;
use crate::storage::cache::UserSummary;

/// The user `token` (a Bearer access token) names, for read-only answers:
/// user and session state may come from the per-process cache (see
/// `storage::cache`).
pub async fn current_user(svc: &Services, token: &str) -> Result<UserSummary, ApiError> {
    let (verified, user_id, now) = bearer::access(svc, token, TokenUse::Identify)?;
    // simplejwt's order: the user first, then (ours) the session.
    let user = cached::user(svc, user_id)
        .await?
        .ok_or(ApiError::UserNotFound)?;
    if !user.is_active {
        return Err(ApiError::UserInactive);
    }
    if let Some(problem) = session_problem(svc, &verified, TokenUse::Identify, now).await? {
        return Err(ApiError::BearerToken(problem));
    }
    Ok(user)
}

/// dj-rest-auth's user details of the token's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDetails {
    pub pk: i64,
    pub username: String,
    /// "" when none, as Django's.
    pub email: String,
    pub first_name: String,
    pub last_name: String,
}

pub async fn details(svc: &Services, token: &str) -> Result<UserDetails, ApiError> {
    let user = current_user(svc, token).await?;
    let id = user.id;
    let (username, email, first_name, last_name) = svc
        .db
        .run(move |conn| crate::storage::users::details(conn, id))
        .await?
        .ok_or(ApiError::UserNotFound)?;
    Ok(UserDetails {
        pk: id,
        username,
        email: email.unwrap_or_default(),
        first_name,
        last_name,
    })
}

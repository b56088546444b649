//! Who a Bearer access token names, checked as simplejwt's
//! `JWTAuthentication` does (the header itself is parsed by the caller).

use super::policy::{session_check, session_error, SessionCheck, TokenUse};
use super::Services;
use crate::auth::jwt::{TokenError, TokenType, VerifiedToken};
use crate::error::ApiError;
use crate::storage::sessions;
use crate::storage::users::{self, UserRecord};

/// The access token checked, with its user id and the instant it was
/// checked at. A token the session policy refuses outright (see
/// `session_check`) is refused here, before any lookup.
pub(super) fn access(
    svc: &Services,
    token: &str,
    purpose: TokenUse,
) -> Result<(VerifiedToken, i64, i64), ApiError> {
    let now = svc.now();
    let verified = svc
        .keys
        .verify(token, Some(TokenType::Access), now)
        .map_err(ApiError::BearerToken)?;
    let user_id = verified.user_id.ok_or(ApiError::NoUserIdentification)?;
    if session_check(svc, &verified, purpose, now) == SessionCheck::Refused {
        return Err(ApiError::BearerToken(TokenError::Invalid));
    }
    Ok((verified, user_id, now))
}

/// The user and the verified access token of a request that acts on its
/// session: the token must name a live one. Read from the database, never
/// the cache.
pub(super) async fn authenticated(
    svc: &Services,
    token: &str,
) -> Result<(UserRecord, VerifiedToken), ApiError> {
    let (verified, user_id, now) = access(svc, token, TokenUse::Session)?;
    let SessionCheck::Live(sid) = session_check(svc, &verified, TokenUse::Session, now) else {
        return Err(ApiError::BearerToken(TokenError::Invalid));
    };
    let sid = sid.to_owned();
    // One trip to the blocking pool for both lookups.
    let (user, session) = svc
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
    if let Some(problem) = session_error(session) {
        return Err(ApiError::BearerToken(problem));
    }
    Ok((user, verified))
}

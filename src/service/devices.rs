//! "Your devices": a user's live sessions (where and when each was started,
//! when it was last used), and ending them one by one or all but the
//! caller's. Every call acts on sessions, so the caller's own session must
//! be live (read from the database, never the cache).

use super::audit::EventKind;
use std::time::Instant;

use super::origin::Origin;
use super::{bearer, Services};
use crate::error::ApiError;
use crate::storage::sessions::{self, RevokeReason, SessionSummary};

/// A live session of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    pub session: SessionSummary,
    /// The session of the token the caller presented.
    pub current: bool,
}

/// The caller's user and session id, from their Bearer access token.
async fn caller(svc: &Services, token: &str) -> Result<(i64, String), ApiError> {
    let (user, verified) = bearer::authenticated(svc, token).await?;
    // `authenticated` accepts tokens with a live session only.
    let sid = verified
        .sid
        .ok_or(ApiError::BearerToken(crate::auth::jwt::TokenError::Invalid))?;
    Ok((user.id, sid))
}

/// The caller's live sessions, newest first.
pub async fn list(
    svc: &Services,
    _origin: &Origin,
    token: &str,
) -> Result<Vec<UserSession>, ApiError> {
    let (user_id, current) = caller(svc, token).await?;
    let now = svc.now();
    let live = svc
        .db
        .run(move |conn| sessions::live_for_user(conn, user_id, now))
        .await?;
    Ok(live
        .into_iter()
        .map(|session| UserSession {
            current: session.id == current,
            session,
        })
        .collect())
}

/// Ends session `id` of the caller (their current one too, if they ask):
/// its refresh and access tokens are refused from now on. Another user's
/// session, an unknown one or one no longer live is not found.
pub async fn revoke(
    svc: &Services,
    origin: &Origin,
    token: &str,
    id: &str,
) -> Result<(), ApiError> {
    let (user_id, _) = caller(svc, token).await?;
    let now = svc.now();
    let sid = id.to_owned();
    let revoked = svc
        .db
        .write(move |conn| {
            sessions::revoke_live_session(conn, &sid, user_id, RevokeReason::User, now)
        })
        .await?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    svc.cache.session_revoked(id, user_id, Instant::now());
    svc.audit.record(
        svc.audit_event(EventKind::SessionRevoked)
            .origin(origin)
            .user(user_id)
            .session(id)
            .reason("user"),
    );
    tracing::info!(
        security_event = "session_revoked_by_user",
        user_id,
        client_ip = %origin.ip,
        "a session was ended from the user's list of sessions"
    );
    Ok(())
}

/// Ends every live session of the caller but the current one; answers how
/// many were ended.
pub async fn revoke_others(
    svc: &Services,
    origin: &Origin,
    token: &str,
) -> Result<usize, ApiError> {
    let (user_id, current) = caller(svc, token).await?;
    let now = svc.now();
    let revoked = svc
        .db
        .write(move |conn| {
            sessions::revoke_other_live_sessions(conn, user_id, &current, RevokeReason::User, now)
        })
        .await?;
    let at = Instant::now();
    for sid in &revoked {
        svc.cache.session_revoked(sid, user_id, at);
        svc.audit.record(
            svc.audit_event(EventKind::SessionRevoked)
                .origin(origin)
                .user(user_id)
                .session(sid)
                .reason("user_revoked_others"),
        );
    }
    tracing::info!(
        security_event = "other_sessions_revoked_by_user",
        user_id,
        client_ip = %origin.ip,
        revoked = revoked.len(),
        "the user ended their other sessions"
    );
    Ok(revoked.len())
}

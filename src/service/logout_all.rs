//! Logout everywhere: every session of the user is revoked, the calling one
//! included; all their tokens stop working.

use super::audit::EventKind;
use super::origin::Origin;
use super::{bearer, Services};
use crate::error::ApiError;
use crate::storage::sessions::{self, RevokeReason};

/// `token` is the caller's Bearer access token; answers how many sessions
/// were revoked.
pub async fn logout_all(svc: &Services, origin: &Origin, token: &str) -> Result<usize, ApiError> {
    let (user, token) = bearer::authenticated(svc, token).await?;
    let now = svc.now();
    let user_id = user.id;
    let revoked = svc
        .db
        .write(move |conn| {
            sessions::revoke_all_for_user(conn, user_id, None, RevokeReason::LogoutEverywhere, now)
        })
        .await?;
    svc.cache.forget_user(user_id);
    let mut event = svc
        .audit_event(EventKind::LogoutAll)
        .origin(origin)
        .user(user_id)
        .username(&user.username)
        .detail(serde_json::json!({ "sessions_revoked": revoked }));
    if let Some(sid) = &token.sid {
        event = event.session(sid);
    }
    svc.audit.record(event);
    tracing::info!(
        security_event = "logout_everywhere",
        user_id,
        revoked,
        "sessions revoked"
    );
    Ok(revoked)
}

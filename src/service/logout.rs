//! Logout (simplejwt's blacklist): the refresh token and its session (with
//! the session's access tokens) can no longer be used.

use std::time::Instant;

use super::audit::{self, EventKind};
use super::origin::Origin;
use super::policy::presented_refresh;
use super::Services;
use crate::auth::jwt::TokenError;
use crate::error::ApiError;
use crate::storage::refresh_tokens::{self, RevokeOutcome};

pub async fn logout(svc: &Services, origin: &Origin, refresh: &str) -> Result<(), ApiError> {
    let now = svc.now();
    let presented = presented_refresh(svc, refresh, now)?;
    let (jti, sid, user_id, exp) = presented.row_key();
    let outcome = svc
        .db
        .write(move |conn| refresh_tokens::revoke(conn, &jti, &sid, user_id, exp, now))
        .await?;
    match outcome {
        RevokeOutcome::Revoked => {
            svc.cache
                .session_revoked(&presented.session_id, user_id, Instant::now());
            svc.audit.record(audit::refresh_event(
                EventKind::Logout,
                now,
                origin,
                &presented,
            ));
            Ok(())
        }
        // Unknown here means nothing live to revoke (e.g. the user was
        // deleted): the token is unusable either way, as simplejwt answers.
        RevokeOutcome::Unknown => Ok(()),
        RevokeOutcome::AlreadyRevoked => Err(ApiError::Token(TokenError::Blacklisted)),
    }
}

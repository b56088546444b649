//! Refresh: the presented refresh token is spent (exactly once, however many
//! requests race) and a new pair of the same session is issued.
//! Re-presenting it within the grace window replays the same new pair;
//! later, or an older token of the session, revokes the session.

use std::net::IpAddr;
use std::time::Instant;

use super::policy::presented_refresh;
use super::Services;
use crate::auth::jwt::TokenError;
use crate::auth::sessions::{PairSpec, SignedPair};
use crate::error::ApiError;
use crate::metrics::RefreshOutcome;
use crate::storage::refresh_tokens::{self, SpendOutcome};

/// `client` is for the security log only.
pub async fn rotate(svc: &Services, client: IpAddr, refresh: &str) -> Result<SignedPair, ApiError> {
    let now = svc.now();
    let presented = presented_refresh(svc, refresh, now)?;
    // Cut to the session's end inside the rotation.
    let successor = PairSpec::new(
        presented.user_id,
        &presented.session_id,
        now,
        svc.keys.lifetimes(),
        i64::MAX,
    );
    let grace = svc.reuse_grace_secs;
    let (jti, sid, exp) = (
        presented.token.jti,
        presented.session_id.clone(),
        presented.token.exp,
    );
    let outcome = svc
        .db
        .write(move |conn| refresh_tokens::rotate(conn, &jti, &sid, exp, successor, grace))
        .await?;
    let refused = || svc.metrics.refresh(RefreshOutcome::Refused);
    let pair = match outcome {
        SpendOutcome::Rotated(pair) => {
            svc.metrics.refresh(RefreshOutcome::Rotated);
            pair
        }
        SpendOutcome::Replayed(pair) => {
            svc.metrics.refresh(RefreshOutcome::Replayed);
            // Usually a second tab or a retry; also what a thief racing the
            // owner inside the grace window looks like, hence on record.
            tracing::warn!(
                security_event = "refresh_token_replay",
                user_id = presented.user_id,
                client_ip = %client,
                "a just-rotated refresh token was presented again inside the grace window: \
                 the same successor pair is returned"
            );
            pair
        }
        SpendOutcome::ReuseDetected => {
            refused();
            svc.metrics.reuse_detected();
            svc.cache
                .session_revoked(&presented.session_id, presented.user_id, Instant::now());
            tracing::warn!(
                security_event = "refresh_token_reuse",
                user_id = presented.user_id,
                client_ip = %client,
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
    Ok(pair.sign(&svc.keys)?)
}

//! Refresh: the presented refresh token is spent (exactly once, however many
//! requests race) and a new pair of the same session is issued.
//! Re-presenting it within the grace window replays the same new pair;
//! later, or an older token of the session, revokes the session.
//! With rotation off (`jwt.rotate_refresh_tokens`), a refresh issues a new
//! access token of the session and the refresh token stays usable.

use std::time::Instant;

use super::audit::{self, EventKind};
use super::claims::access_claims;
use super::origin::Origin;
use super::policy::presented_refresh;
use super::Services;
use crate::auth::claims::ClaimsEvent;
use crate::auth::jwt::TokenError;
use crate::auth::sessions::{PairSpec, SignedPair};
use crate::error::ApiError;
use crate::metrics::RefreshOutcome;
use crate::storage::refresh_tokens::{self, RenewOutcome, SpendOutcome};

/// What a successful refresh hands out.
#[derive(Debug)]
pub enum Refreshed {
    /// Rotation: a new pair, the presented refresh token is spent.
    Pair(SignedPair),
    /// Without rotation: a new access token only.
    Access(String),
}

pub async fn refresh(
    svc: &Services,
    origin: &Origin,
    refresh: &str,
) -> Result<Refreshed, ApiError> {
    if svc.rotate_refresh_tokens {
        rotate(svc, origin, refresh).await.map(Refreshed::Pair)
    } else {
        renew(svc, refresh).await.map(Refreshed::Access)
    }
}

/// simplejwt without ROTATE_REFRESH_TOKENS: a fresh access token of the
/// presented token's session, which must be live, as must its user.
async fn renew(svc: &Services, refresh: &str) -> Result<String, ApiError> {
    let now = svc.now();
    let presented = presented_refresh(svc, refresh, now)?;
    let (jti, sid, user_id, exp) = presented.row_key();
    let outcome = svc
        .db
        .write(move |conn| refresh_tokens::renewal(conn, &jti, &sid, user_id, exp, now))
        .await?;
    let session_end = match outcome {
        RenewOutcome::Live { session_expires_at } => session_expires_at,
        refusal => {
            svc.metrics.refresh(RefreshOutcome::Refused);
            return Err(match refusal {
                RenewOutcome::SessionExpired => ApiError::Token(TokenError::Expired),
                RenewOutcome::Unknown => ApiError::Token(TokenError::Invalid),
                RenewOutcome::NoActiveAccount => ApiError::NoActiveAccountForToken,
                _ => ApiError::Token(TokenError::Blacklisted),
            });
        }
    };
    let claims = access_claims(svc, presented.user_id, ClaimsEvent::Refresh).await?;
    svc.metrics.refresh(RefreshOutcome::Renewed);
    let spec = PairSpec::new(
        presented.user_id,
        &presented.session_id,
        now,
        svc.keys.lifetimes(),
        session_end,
    )
    .with_access_claims(claims);
    Ok(spec.sign_access(&svc.keys)?)
}

async fn rotate(svc: &Services, origin: &Origin, refresh: &str) -> Result<SignedPair, ApiError> {
    let client = origin.ip;
    let now = svc.now();
    let presented = presented_refresh(svc, refresh, now)?;
    // Computed before the rotation's transaction (never wait on the claims
    // hook holding the session's lock); a replay serves the claims stored
    // with the successor instead.
    let claims = access_claims(svc, presented.user_id, ClaimsEvent::Refresh).await?;
    // Cut to the session's end inside the rotation.
    let successor = PairSpec::new(
        presented.user_id,
        &presented.session_id,
        now,
        svc.keys.lifetimes(),
        i64::MAX,
    )
    .with_access_claims(claims);
    let grace = svc.reuse_grace_secs;
    let (jti, sid, _, exp) = presented.row_key();
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
            svc.audit.record(audit::refresh_event(
                EventKind::GraceReplayServed,
                now,
                origin,
                &presented,
            ));
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
            svc.audit.record(audit::refresh_event(
                EventKind::RefreshReuseDetected,
                now,
                origin,
                &presented,
            ));
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

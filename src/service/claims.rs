//! The extra claims of an access token: the user fields `jwt.extra_claims`
//! selects, then what the claims hook adds, computed afresh at every login
//! and refresh.

use std::time::Instant;

use super::Services;
use crate::auth::claims::{profile_claims, ClaimMap, ClaimsEvent, MAX_CLAIMS_BYTES};
use crate::config::HookFailure;
use crate::error::ApiError;
use crate::storage::users;

/// The extra claims for a new access token of user `user_id`. Nothing is
/// read when none are configured and there is no hook (simplejwt's exact
/// claims). A user that is gone or inactive gets none, and the hook is not
/// asked: the issuing transaction refuses them.
pub async fn access_claims(
    svc: &Services,
    user_id: i64,
    event: ClaimsEvent,
) -> Result<ClaimMap, ApiError> {
    if svc.extra_claims.is_empty() && svc.claims_hook.is_none() {
        return Ok(ClaimMap::new());
    }
    let profile = svc
        .db
        .run(move |conn| users::profile(conn, user_id))
        .await?;
    let Some(profile) = profile.filter(|p| p.is_active) else {
        return Ok(ClaimMap::new());
    };
    let computed = profile_claims(&profile, &svc.extra_claims);
    // Tokens travel in headers: rather no token than one proxies refuse
    // (or one silently missing groups). Only many groups get here.
    let size = serde_json::to_string(&computed).map_or(usize::MAX, |s| s.len());
    if size > MAX_CLAIMS_BYTES {
        return Err(ApiError::Internal(
            format!(
                "user {user_id}: the extra claims take {size} bytes, more than {MAX_CLAIMS_BYTES} \
                 ({} groups); remove groups or `groups` from jwt.extra_claims",
                profile.groups.len()
            )
            .into(),
        ));
    }
    let Some(hook) = &svc.claims_hook else {
        return Ok(computed);
    };
    let started = Instant::now();
    let answer = hook
        .call(event, &profile, &computed, svc.keys.user_id_claim())
        .await;
    let failure = match answer {
        Ok(claims) => {
            svc.metrics
                .claims_hook_call(started.elapsed().as_secs_f64());
            return Ok(claims);
        }
        Err(failure) => failure,
    };
    // A call refused for want of a permit never reached the hook.
    if !matches!(failure, crate::claims_hook::HookError::Busy) {
        svc.metrics
            .claims_hook_call(started.elapsed().as_secs_f64());
    }
    let policy = hook.failure();
    svc.metrics
        .claims_hook_failure(policy.as_str(), failure.reason());
    // The reason and the claim name, never a token or the answer's body.
    tracing::warn!(
        event = event.as_str(),
        user_id,
        reason = failure.reason(),
        failure = policy.as_str(),
        error = %failure,
        "claims hook failed"
    );
    match policy {
        HookFailure::Closed => Err(ApiError::ClaimsHookUnavailable),
        HookFailure::Open => Ok(computed),
    }
}

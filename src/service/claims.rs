//! The extra claims of an access token: the user fields `jwt.extra_claims`
//! selects, computed afresh at every login and refresh.

use super::Services;
use crate::auth::claims::{profile_claims, ClaimMap, ClaimsEvent};
use crate::error::ApiError;
use crate::storage::users;

/// The extra claims for a new access token of user `user_id`. Nothing is
/// read when none are configured (simplejwt's exact claims). A user that
/// is gone or inactive gets none: the issuing transaction refuses them.
pub async fn access_claims(
    svc: &Services,
    user_id: i64,
    _event: ClaimsEvent,
) -> Result<ClaimMap, ApiError> {
    if svc.extra_claims.is_empty() {
        return Ok(ClaimMap::new());
    }
    let profile = svc
        .db
        .run(move |conn| users::profile(conn, user_id))
        .await?;
    let Some(profile) = profile.filter(|p| p.is_active) else {
        return Ok(ClaimMap::new());
    };
    Ok(profile_claims(&profile, &svc.extra_claims))
}

//! Groups and staff flags: what `tokend groups …`, `tokend users
//! add-group|remove-group|set-staff|set-superuser` (and later the admin API)
//! share. Changes reach access tokens at their next refresh (claims are
//! recomputed there); tokens already issued keep theirs until they expire.

use super::accounts::Accounts;
use crate::auth::credentials::GroupName;
use crate::error::ApiError;
use crate::storage::groups::{self, CreateGroup, Membership};
use crate::storage::users::{self, Flag};

pub async fn create(acc: &Accounts<'_>, name: &GroupName) -> Result<CreateGroup, ApiError> {
    let name = name.as_str().to_owned();
    Ok(acc
        .db
        .write(move |conn| groups::create(conn, &name))
        .await?)
}

/// Deletes the group and its memberships; false when there is none.
pub async fn delete(acc: &Accounts<'_>, name: &str) -> Result<bool, ApiError> {
    let name = name.to_owned();
    Ok(acc
        .db
        .write(move |conn| groups::delete(conn, &name))
        .await?)
}

/// Every group with its member count, by name.
pub async fn list(acc: &Accounts<'_>) -> Result<Vec<(String, i64)>, ApiError> {
    Ok(acc.db.run(groups::list).await?)
}

pub async fn add_member(
    acc: &Accounts<'_>,
    user_id: i64,
    group: &str,
) -> Result<Membership, ApiError> {
    let group = group.to_owned();
    Ok(acc
        .db
        .write(move |conn| groups::add_member(conn, user_id, &group))
        .await?)
}

pub async fn remove_member(
    acc: &Accounts<'_>,
    user_id: i64,
    group: &str,
) -> Result<Membership, ApiError> {
    let group = group.to_owned();
    Ok(acc
        .db
        .write(move |conn| groups::remove_member(conn, user_id, &group))
        .await?)
}

/// Sets `is_staff` or `is_superuser`; false when the user is gone.
pub async fn set_flag(
    acc: &Accounts<'_>,
    user_id: i64,
    flag: Flag,
    value: bool,
) -> Result<bool, ApiError> {
    Ok(acc
        .db
        .write(move |conn| users::set_flag(conn, user_id, flag, value))
        .await?)
}

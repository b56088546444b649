//! Groups and staff flags: what `tokend groups …`, `tokend users
//! add-group|remove-group|set-staff|set-superuser` and the admin API share.
//! Every change is audited (`admin_action`) in its transaction. Changes
//! reach access tokens at their next refresh (claims are recomputed there);
//! tokens already issued keep theirs until they expire.

use diesel::Connection;
use serde_json::json;

use super::accounts::Accounts;
use super::actor::{Acting, Subject};
use crate::auth::credentials::GroupName;
use crate::error::ApiError;
use crate::storage::audit;
use crate::storage::groups::{self, CreateGroup, Membership};
use crate::storage::users::{self, Flag};

pub async fn create(
    acc: &Accounts<'_>,
    by: &Acting,
    name: &GroupName,
) -> Result<CreateGroup, ApiError> {
    let webhooks = acc.db.webhooks();
    let (name, by) = (name.as_str().to_owned(), by.clone());
    let now = crate::clock::unix_now();
    Ok(acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let created = groups::create(conn, &name)?;
                if created == CreateGroup::Created {
                    let row =
                        by.action(now, "group_created", Subject::None, json!({"group": name}));
                    audit::insert_batch(conn, &webhooks, &[row])?;
                }
                Ok(created)
            })
        })
        .await?)
}

/// Deletes the group and its memberships; false when there is none.
pub async fn delete(acc: &Accounts<'_>, by: &Acting, name: &str) -> Result<bool, ApiError> {
    let webhooks = acc.db.webhooks();
    let (name, by) = (name.to_owned(), by.clone());
    let now = crate::clock::unix_now();
    Ok(acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let deleted = groups::delete(conn, &name)?;
                if deleted {
                    let row =
                        by.action(now, "group_deleted", Subject::None, json!({"group": name}));
                    audit::insert_batch(conn, &webhooks, &[row])?;
                }
                Ok(deleted)
            })
        })
        .await?)
}

/// Every group with its member count, by name.
pub async fn list(acc: &Accounts<'_>) -> Result<Vec<(String, i64)>, ApiError> {
    Ok(acc.db.run(groups::list).await?)
}

/// Adds (`add`) or removes user `user_id` to or from `group`.
pub async fn set_member(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    group: &str,
    add: bool,
) -> Result<Membership, ApiError> {
    let webhooks = acc.db.webhooks();
    let (group, by) = (group.to_owned(), by.clone());
    let now = crate::clock::unix_now();
    Ok(acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let (outcome, action) = if add {
                    (groups::add_member(conn, user_id, &group)?, "group_added")
                } else {
                    (
                        groups::remove_member(conn, user_id, &group)?,
                        "group_removed",
                    )
                };
                if outcome == Membership::Changed {
                    let row =
                        by.action(now, action, Subject::User(user_id), json!({"group": group}));
                    audit::insert_batch(conn, &webhooks, &[row])?;
                }
                Ok(outcome)
            })
        })
        .await?)
}

/// Sets `is_staff` or `is_superuser`; false when the user is gone.
pub async fn set_flag(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    flag: Flag,
    value: bool,
) -> Result<bool, ApiError> {
    let webhooks = acc.db.webhooks();
    let by = by.clone();
    let now = crate::clock::unix_now();
    let name = match flag {
        Flag::Staff => "is_staff",
        Flag::Superuser => "is_superuser",
    };
    let found = acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let found = users::set_flag(conn, user_id, flag, value)?;
                if found {
                    let row = by.action(
                        now,
                        "flag_set",
                        Subject::User(user_id),
                        json!({ name: value }),
                    );
                    audit::insert_batch(conn, &webhooks, &[row])?;
                }
                Ok(found)
            })
        })
        .await?;
    acc.forget(user_id);
    Ok(found)
}

//! Account administration: what registration, password changes and the
//! command line (`tokend users …`) share.

use std::net::{IpAddr, Ipv4Addr};

use crate::auth::credentials::{NewPassword, NewUsername};
use crate::auth::email::Email;
use crate::auth::hashing::HashingPool;
use crate::error::ApiError;
use crate::storage::account_tokens::MailedToken;
use crate::storage::cache::StateCache;
use crate::storage::sessions::{self, RevokeReason};
use crate::storage::users::{self, CreateUser, Flag, PasswordChange, UserRecord};
use crate::storage::{audit, Database, DbConnection, StorageError};
use diesel::Connection;
use serde_json::Value;

use super::actor::{Acting, Subject};
use super::audit::{Event, EventKind};

/// What account administration needs: the command line has no signing keys
/// and no cache of its own.
pub struct Accounts<'a> {
    pub db: &'a Database,
    pub hashing: &'a HashingPool,
    /// This process's token-check cache, told about bulk revocations.
    pub cache: Option<&'a StateCache>,
}

/// The hashing pool's client for work not done for a network client (its
/// per-address share is then the command line's alone).
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl Accounts<'_> {
    /// Drops what this process's cache holds of the user.
    pub(crate) fn forget(&self, user_id: i64) {
        if let Some(cache) = self.cache {
            cache.forget_user(user_id);
        }
    }
}

/// The user named `username`, if any.
pub async fn find(acc: &Accounts<'_>, username: &str) -> Result<Option<UserRecord>, ApiError> {
    let name = username.to_owned();
    Ok(acc
        .db
        .run(move |conn| users::find_by_username(conn, &name))
        .await?)
}

/// Every user, by id.
pub async fn list(acc: &Accounts<'_>) -> Result<Vec<UserRecord>, ApiError> {
    Ok(acc.db.run(users::list).await?)
}

/// A new active user with tokend's hash of `password` (and `email`, with
/// `mailed`: its verification token and mail, in the same transaction);
/// `client` is whose share of the hashing pool pays for it. Created by an
/// administrator (`by`): an `admin_action` row (`user_created`) in the same
/// transaction, and the flags `staff` (is_staff, is_superuser).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    acc: &Accounts<'_>,
    by: Option<&Acting>,
    username: &NewUsername,
    password: &NewPassword,
    email: Option<Email>,
    mailed: Option<MailedToken>,
    staff: (bool, bool),
    client: IpAddr,
    now: i64,
) -> Result<CreateUser, ApiError> {
    let webhooks = acc.db.webhooks();
    let hash = acc
        .hashing
        .hash(client, password.expose().to_owned())
        .await?;
    let name = username.as_str().to_owned();
    let by = by.cloned();
    Ok(acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let created =
                    users::create(conn, &name, &hash, email.as_ref(), mailed.as_ref(), now)?;
                if let CreateUser::Created { id } = created {
                    if staff.0 {
                        users::set_flag(conn, id, Flag::Staff, true)?;
                    }
                    if staff.1 {
                        users::set_flag(conn, id, Flag::Superuser, true)?;
                    }
                    if let Some(by) = &by {
                        let detail = serde_json::json!({
                            "username": name, "is_staff": staff.0, "is_superuser": staff.1,
                        });
                        let row = by.action(now, "user_created", Subject::User(id), detail);
                        audit::insert_batch(conn, &webhooks, &[row])?;
                    }
                }
                Ok(created)
            })
        })
        .await?)
}

/// An administrator (`by`) replaces the password of `user_id` and revokes
/// every session of the user; answers how many were revoked. Audited
/// (`admin_action`, `password_set`) in the same transaction.
pub async fn set_password(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    password: &NewPassword,
    client: IpAddr,
    now: i64,
) -> Result<usize, ApiError> {
    let webhooks = acc.db.webhooks();
    let hash = acc
        .hashing
        .hash(client, password.expose().to_owned())
        .await?;
    let by = by.clone();
    let revoked = acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                let revoked = match users::change_password(conn, user_id, &hash, None, None, now)? {
                    PasswordChange::Changed { revoked } => revoked,
                    // Unconditional: neither happens.
                    PasswordChange::Superseded | PasswordChange::SessionRevoked => 0,
                };
                let detail = serde_json::json!({ "sessions_revoked": revoked });
                let row = by.action(now, "password_set", Subject::User(user_id), detail);
                audit::insert_batch(conn, &webhooks, &[row])?;
                Ok(revoked)
            })
        })
        .await?;
    acc.forget(user_id);
    Ok(revoked)
}

/// Sets the password, only if the stored hash is still `replaces` (the one the
/// old password was checked against) and `keep` still live.
pub async fn change_password(
    acc: &Accounts<'_>,
    user_id: i64,
    password: &NewPassword,
    keep: Option<String>,
    replaces: Option<String>,
    client: IpAddr,
    now: i64,
) -> Result<PasswordChange, ApiError> {
    let hash = acc
        .hashing
        .hash(client, password.expose().to_owned())
        .await?;
    let outcome = acc
        .db
        .write(move |conn| {
            users::change_password(
                conn,
                user_id,
                &hash,
                keep.as_deref(),
                replaces.as_deref(),
                now,
            )
        })
        .await?;
    acc.forget(user_id);
    Ok(outcome)
}

/// Deactivates the user and revokes all their sessions: every token fails.
/// Answers how many sessions were revoked; `None` when there is no such
/// user.
pub async fn disable(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    now: i64,
) -> Result<Option<usize>, ApiError> {
    let webhooks = acc.db.webhooks();
    let by = by.clone();
    let revoked = acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                if !users::set_active(conn, user_id, false)? {
                    return Ok(None);
                }
                let revoked = sessions::revoke_all_for_user(
                    conn,
                    user_id,
                    None,
                    RevokeReason::AccountDisabled,
                    now,
                )?;
                let event = Event::new(EventKind::UserDisabled, now).user(user_id);
                let detail = serde_json::json!({ "sessions_revoked": revoked });
                audit::insert_batch(conn, &webhooks, &[by.row(event, detail)])?;
                Ok(Some(revoked))
            })
        })
        .await?;
    acc.forget(user_id);
    Ok(revoked)
}

/// Reactivates the user; their old sessions stay revoked. False when there
/// is no such user.
pub async fn enable(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    now: i64,
) -> Result<bool, ApiError> {
    let row = by.action(now, "user_enabled", Subject::User(user_id), Value::Null);
    audited(acc, user_id, row, move |conn| {
        users::set_active(conn, user_id, true)
    })
    .await
}

/// Deletes the user with all their sessions and tokens. False when there
/// is no such user.
pub async fn delete(
    acc: &Accounts<'_>,
    by: &Acting,
    user_id: i64,
    now: i64,
) -> Result<bool, ApiError> {
    let row = by.row(
        Event::new(EventKind::UserDeleted, now).user(user_id),
        Value::Null,
    );
    audited(acc, user_id, row, move |conn| users::delete(conn, user_id)).await
}

/// Applies `change` to user `user_id` and, when it found the user, inserts
/// `row` in the same transaction; then this process forgets what it cached
/// of the user. False when there is no such user.
async fn audited(
    acc: &Accounts<'_>,
    user_id: i64,
    row: audit::NewAuditEvent,
    change: impl FnOnce(&mut DbConnection) -> Result<bool, StorageError> + Send + 'static,
) -> Result<bool, ApiError> {
    let webhooks = acc.db.webhooks();
    let found = acc
        .db
        .write(move |conn| {
            conn.transaction(|conn| {
                if !change(conn)? {
                    return Ok(false);
                }
                audit::insert_batch(conn, &webhooks, &[row])?;
                Ok(true)
            })
        })
        .await?;
    acc.forget(user_id);
    Ok(found)
}

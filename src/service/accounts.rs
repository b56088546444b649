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
use crate::storage::users::{self, CreateUser, PasswordChange, UserRecord};
use crate::storage::{audit, Database};

use super::audit::{Event, EventKind};

/// An `admin_action` row about `user_id`: `{"action": action}`.
fn admin_action(user_id: i64, action: &'static str) -> audit::NewAuditEvent {
    Event::new(EventKind::AdminAction, crate::clock::unix_now())
        .user(user_id)
        .detail(serde_json::json!({ "action": action }))
        .into_row()
}

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
    fn forget(&self, user_id: i64) {
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
/// `client` is whose share of the hashing pool pays for it.
pub async fn create(
    acc: &Accounts<'_>,
    username: &NewUsername,
    password: &NewPassword,
    email: Option<Email>,
    mailed: Option<MailedToken>,
    client: IpAddr,
    now: i64,
) -> Result<CreateUser, ApiError> {
    let hash = acc
        .hashing
        .hash(client, password.expose().to_owned())
        .await?;
    let name = username.as_str().to_owned();
    Ok(acc
        .db
        .write(move |conn| users::create(conn, &name, &hash, email.as_ref(), mailed.as_ref(), now))
        .await?)
}

/// Replaces the password of `user_id` and revokes every session of the user
/// except `keep`; answers how many were revoked.
pub async fn set_password(
    acc: &Accounts<'_>,
    user_id: i64,
    password: &NewPassword,
    keep: Option<String>,
    client: IpAddr,
    now: i64,
) -> Result<usize, ApiError> {
    match change_password(acc, user_id, password, keep, None, client, now).await? {
        PasswordChange::Changed { revoked } => Ok(revoked),
        // Unconditional: neither happens.
        PasswordChange::Superseded | PasswordChange::SessionRevoked => Ok(0),
    }
}

/// `set_password`, only if the stored hash is still `replaces` (the one the
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
/// Answers how many sessions were revoked.
pub async fn disable(acc: &Accounts<'_>, user_id: i64, now: i64) -> Result<usize, ApiError> {
    let event = Event::new(EventKind::UserDisabled, now).user(user_id);
    let webhooks = acc.db.webhooks();
    let revoked = acc
        .db
        .write(move |conn| {
            users::set_active(conn, user_id, false)?;
            let revoked = sessions::revoke_all_for_user(
                conn,
                user_id,
                None,
                RevokeReason::AccountDisabled,
                now,
            )?;
            let event = event.detail(serde_json::json!({ "sessions_revoked": revoked }));
            audit::insert_batch(conn, &webhooks, &[event.into_row()])?;
            Ok(revoked)
        })
        .await?;
    acc.forget(user_id);
    Ok(revoked)
}

/// Reactivates the user; their old sessions stay revoked.
pub async fn enable(acc: &Accounts<'_>, user_id: i64) -> Result<(), ApiError> {
    let event = admin_action(user_id, "user_enabled");
    let webhooks = acc.db.webhooks();
    acc.db
        .write(move |conn| {
            users::set_active(conn, user_id, true)?;
            audit::insert_batch(conn, &webhooks, &[event])
        })
        .await?;
    acc.forget(user_id);
    Ok(())
}

/// Deletes the user with all their sessions and tokens.
pub async fn delete(acc: &Accounts<'_>, user_id: i64) -> Result<(), ApiError> {
    let event = Event::new(EventKind::UserDeleted, crate::clock::unix_now())
        .user(user_id)
        .into_row();
    let webhooks = acc.db.webhooks();
    acc.db
        .write(move |conn| {
            users::delete(conn, user_id)?;
            audit::insert_batch(conn, &webhooks, &[event])
        })
        .await?;
    acc.forget(user_id);
    Ok(())
}

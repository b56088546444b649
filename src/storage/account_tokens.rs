//! One-time account tokens by digest: password reset (single use, voided by
//! any password change) and address verification. At most a few live ones
//! per user and purpose; expired and used ones are purged.

use diesel::prelude::*;

use super::schema::{account_tokens, users};
use super::sessions::{self, RevokeReason};
use super::{DbConnection, StorageError};
use crate::mail::Mail;

pub const RESET: &str = "reset";
pub const VERIFY: &str = "verify";

/// Live tokens kept per user and purpose: a new one beyond this voids the
/// oldest (the latest mail always works; the table stays bounded).
const LIVE_PER_USER: i64 = 3;

/// Records a token (its digest) of `purpose` for `user_id`, valid until
/// `expires_at`; `email` is the address a verification confirms.
pub fn issue(
    conn: &mut DbConnection,
    user_id: i64,
    purpose: &str,
    email: Option<&str>,
    digest: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), diesel::result::Error> {
    let of_user = account_tokens::table
        .filter(account_tokens::user_id.eq(user_id))
        .filter(account_tokens::purpose.eq(purpose));
    diesel::delete(
        of_user.filter(
            account_tokens::used_at
                .is_not_null()
                .or(account_tokens::expires_at.le(now)),
        ),
    )
    .execute(conn)?;
    let live: Vec<String> = of_user
        .order(account_tokens::created_at.desc())
        .select(account_tokens::digest)
        .load(conn)?;
    let surplus: Vec<&String> = live.iter().skip((LIVE_PER_USER - 1) as usize).collect();
    if !surplus.is_empty() {
        diesel::delete(account_tokens::table.filter(account_tokens::digest.eq_any(surplus)))
            .execute(conn)?;
    }
    diesel::insert_into(account_tokens::table)
        .values((
            account_tokens::digest.eq(digest),
            account_tokens::user_id.eq(user_id),
            account_tokens::purpose.eq(purpose),
            account_tokens::email.eq(email),
            account_tokens::created_at.eq(now),
            account_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

/// A token to record together with the mail that hands it out.
#[derive(Debug, Clone)]
pub struct MailedToken {
    pub purpose: &'static str,
    /// The address a verification confirms.
    pub email: Option<String>,
    pub digest: String,
    pub expires_at: i64,
    pub mail: Mail,
}

/// Records `token` for `user_id` and queues its mail, in the caller's
/// transaction: neither exists without the other.
pub fn issue_mailed(
    conn: &mut DbConnection,
    user_id: i64,
    token: &MailedToken,
    now: i64,
) -> Result<(), diesel::result::Error> {
    // A transaction of its own (a savepoint inside the caller's).
    conn.transaction(|conn| {
        issue(
            conn,
            user_id,
            token.purpose,
            token.email.as_deref(),
            &token.digest,
            now,
            token.expires_at,
        )?;
        super::outbox::enqueue_mail(conn, &token.mail, now)
    })
}

/// Spends a live token: exactly one of concurrent calls wins. Answers the
/// token's user and address.
fn spend(
    conn: &mut DbConnection,
    purpose: &str,
    digest: &str,
    user_id: Option<i64>,
    now: i64,
) -> Result<Option<(i64, Option<String>)>, diesel::result::Error> {
    let live = account_tokens::table
        .filter(account_tokens::digest.eq(digest))
        .filter(account_tokens::purpose.eq(purpose))
        .filter(account_tokens::used_at.is_null())
        .filter(account_tokens::expires_at.gt(now));
    let spent = match user_id {
        Some(id) => diesel::update(live.filter(account_tokens::user_id.eq(id)))
            .set(account_tokens::used_at.eq(now))
            .execute(conn)?,
        None => diesel::update(live)
            .set(account_tokens::used_at.eq(now))
            .execute(conn)?,
    };
    if spent != 1 {
        return Ok(None);
    }
    account_tokens::table
        .filter(account_tokens::digest.eq(digest))
        .select((account_tokens::user_id, account_tokens::email))
        .first(conn)
        .optional()
}

/// Whether `digest` is a live token of `purpose` of `user_id` (a check
/// that spends nothing).
pub fn is_live(
    conn: &mut DbConnection,
    user_id: i64,
    purpose: &str,
    digest: &str,
    now: i64,
) -> Result<bool, diesel::result::Error> {
    diesel::select(diesel::dsl::exists(
        account_tokens::table
            .filter(account_tokens::digest.eq(digest))
            .filter(account_tokens::user_id.eq(user_id))
            .filter(account_tokens::purpose.eq(purpose))
            .filter(account_tokens::used_at.is_null())
            .filter(account_tokens::expires_at.gt(now)),
    ))
    .get_result(conn)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The password is replaced; this many sessions were revoked.
    Reset { revoked: usize },
    /// Unknown, expired, used, voided, or not this user's: nothing changed.
    Invalid,
}

/// Resets the password of `user_id` with reset token `digest`, all or
/// nothing: the token is spent, the password replaced, every session and
/// every other reset token of the user revoked.
pub fn reset_password(
    conn: &mut DbConnection,
    user_id: i64,
    digest: &str,
    new_hash: &str,
    now: i64,
) -> Result<ResetOutcome, StorageError> {
    conn.transaction::<_, StorageError, _>(|conn| {
        // The user's row first, as a password change takes it (then the
        // tokens): the same lock order, no deadlock between the two.
        diesel::update(users::table.filter(users::id.eq(user_id)))
            .set(users::is_active.eq(users::is_active))
            .execute(conn)?;
        // A deactivated account stays locked: its link does nothing.
        let active: bool = users::table
            .filter(users::id.eq(user_id))
            .select(users::is_active)
            .first(conn)
            .optional()?
            .unwrap_or(false);
        if !active || spend(conn, RESET, digest, Some(user_id), now)?.is_none() {
            return Ok(ResetOutcome::Invalid);
        }
        diesel::update(users::table.filter(users::id.eq(user_id)))
            .set(users::password_hash.eq(new_hash))
            .execute(conn)?;
        void_resets(conn, user_id)?;
        let revoked =
            sessions::revoke_all_for_user(conn, user_id, None, RevokeReason::PasswordReset, now)?;
        Ok(ResetOutcome::Reset { revoked })
    })
}

/// Voids every reset token of the user (any password change does).
pub fn void_resets(conn: &mut DbConnection, user_id: i64) -> Result<(), diesel::result::Error> {
    diesel::delete(
        account_tokens::table
            .filter(account_tokens::user_id.eq(user_id))
            .filter(account_tokens::purpose.eq(RESET)),
    )
    .execute(conn)?;
    Ok(())
}

/// Confirms an address with verification token `digest`: true when the
/// token was live and the user still has that address (now verified).
pub fn verify_email(
    conn: &mut DbConnection,
    digest: &str,
    now: i64,
) -> Result<Option<i64>, StorageError> {
    Ok(conn.transaction(|conn| {
        let Some((user_id, Some(email))) = spend(conn, VERIFY, digest, None, now)? else {
            return Ok::<_, diesel::result::Error>(None);
        };
        let key = crate::auth::email::key_of(&email);
        let verified = diesel::update(
            users::table
                .filter(users::id.eq(user_id))
                .filter(users::email_key.eq(key)),
        )
        .set(users::email_verified.eq(true))
        .execute(conn)?;
        Ok((verified == 1).then_some(user_id))
    })?)
}

/// Deletes up to `limit` tokens expired or used before `before`.
pub fn purge_batch(
    conn: &mut DbConnection,
    before: i64,
    limit: i64,
) -> Result<usize, StorageError> {
    let doomed: Vec<String> = account_tokens::table
        .filter(
            account_tokens::expires_at
                .le(before)
                .or(account_tokens::used_at.le(before)),
        )
        .select(account_tokens::digest)
        .limit(limit)
        .load(conn)?;
    if doomed.is_empty() {
        return Ok(0);
    }
    Ok(
        diesel::delete(account_tokens::table.filter(account_tokens::digest.eq_any(doomed)))
            .execute(conn)?,
    )
}

//! Refresh tokens by jti: issue, spend (rotation), revoke (blacklist).
//!
//! Spending is one conditional UPDATE whose affected-row count decides who
//! wins; nothing is read first. On SQLite that UPDATE is the first statement
//! of its transaction, so the write lock is taken (waiting up to the busy
//! timeout) before any snapshot exists and no stale read can slip in.

use diesel::prelude::*;

use super::schema::{refresh_tokens, users};
use super::{is_foreign_key_violation, DbConnection, StorageError};

/// A refresh token to record: its id and lifetime, never the token itself.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub jti: String,
    pub user_id: i64,
    pub issued_at: i64,
    pub expires_at: i64,
}

fn insert(conn: &mut DbConnection, token: &NewRefreshToken) -> Result<(), diesel::result::Error> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::jti.eq(&token.jti),
            refresh_tokens::user_id.eq(token.user_id),
            refresh_tokens::issued_at.eq(token.issued_at),
            refresh_tokens::expires_at.eq(token.expires_at),
        ))
        .execute(conn)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueOutcome {
    Issued,
    /// The user was deleted meanwhile.
    NoSuchUser,
}

pub fn record_issued(
    conn: &mut DbConnection,
    token: &NewRefreshToken,
) -> Result<IssueOutcome, StorageError> {
    match insert(conn, token) {
        Ok(()) => Ok(IssueOutcome::Issued),
        Err(e) if is_foreign_key_violation(&e) => Ok(IssueOutcome::NoSuchUser),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendOutcome {
    /// This call spent the token and recorded its successor.
    Rotated,
    /// Spent or revoked before: rejected.
    AlreadySpent,
    /// Never issued here (or purged after expiry).
    Unknown,
    /// The owner is gone or inactive; nothing changed.
    NoActiveAccount,
}

enum Abort {
    Outcome(SpendOutcome),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Abort::Db(e)
    }
}

/// Spends refresh token `jti` of `user_id` and records `successor`, all or
/// nothing: of any number of concurrent calls for one jti, exactly one
/// returns `Rotated`.
pub fn rotate(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
    successor: &NewRefreshToken,
    now: i64,
) -> Result<SpendOutcome, StorageError> {
    let result = conn.transaction::<SpendOutcome, Abort, _>(|conn| {
        let spent = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::jti.eq(jti))
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set((
            refresh_tokens::revoked_at.eq(now),
            refresh_tokens::replaced_by.eq(&successor.jti),
        ))
        .execute(conn)?;
        if spent == 0 {
            let outcome = match lookup(conn, jti, user_id)? {
                Some(_) => SpendOutcome::AlreadySpent,
                None if !user_is_active(conn, user_id)? => SpendOutcome::NoActiveAccount,
                None => SpendOutcome::Unknown,
            };
            return Err(Abort::Outcome(outcome));
        }
        if !user_is_active(conn, user_id)? {
            return Err(Abort::Outcome(SpendOutcome::NoActiveAccount));
        }
        match insert(conn, successor) {
            Ok(()) => Ok(SpendOutcome::Rotated),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(Abort::Outcome(SpendOutcome::NoActiveAccount))
            }
            Err(e) => Err(Abort::Db(e)),
        }
    });
    match result {
        Ok(outcome) | Err(Abort::Outcome(outcome)) => Ok(outcome),
        Err(Abort::Db(e)) => Err(e.into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    Unknown,
}

/// Revokes (blacklists) refresh token `jti`; exactly one concurrent call wins.
pub fn revoke(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
    now: i64,
) -> Result<RevokeOutcome, StorageError> {
    let revoked = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::jti.eq(jti))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)?;
    if revoked == 1 {
        return Ok(RevokeOutcome::Revoked);
    }
    Ok(match lookup(conn, jti, user_id)? {
        Some(_) => RevokeOutcome::AlreadyRevoked,
        None => RevokeOutcome::Unknown,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Live,
    Revoked,
    Unknown,
}

pub fn status(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
) -> Result<TokenStatus, StorageError> {
    Ok(match lookup(conn, jti, user_id)? {
        Some(None) => TokenStatus::Live,
        Some(Some(_)) => TokenStatus::Revoked,
        None => TokenStatus::Unknown,
    })
}

/// `Some(revoked_at)` when the token is recorded for this user.
fn lookup(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
) -> Result<Option<Option<i64>>, diesel::result::Error> {
    refresh_tokens::table
        .filter(refresh_tokens::jti.eq(jti))
        .filter(refresh_tokens::user_id.eq(user_id))
        .select(refresh_tokens::revoked_at)
        .first(conn)
        .optional()
}

fn user_is_active(conn: &mut DbConnection, user_id: i64) -> Result<bool, diesel::result::Error> {
    Ok(users::table
        .filter(users::id.eq(user_id))
        .select(users::is_active)
        .first::<bool>(conn)
        .optional()?
        .unwrap_or(false))
}

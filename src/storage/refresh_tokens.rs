//! Refresh tokens by jti: issue (with a new session), spend (rotation, with
//! reuse detection), revoke (blacklist).
//!
//! Spending is one conditional UPDATE whose affected-row count decides who
//! wins. On SQLite that UPDATE is the first statement
//! of its transaction, so the write lock is taken (waiting up to the busy
//! timeout) before any snapshot exists and no stale read can slip in; on
//! PostgreSQL every transaction that changes a session's tokens first locks
//! the session's row (`sessions::lock_in_tx`): they take turns, and the
//! loser's spend matches nothing.
//!
//! A session keeps at most two rows, whatever its rotation rate: its current
//! token and the one just spent (replayable inside the grace window). Each
//! rotation deletes the older spent ancestors; their reuse is still
//! recognised without a row (see `ancestor_session`).

use diesel::prelude::*;

use super::schema::{self, refresh_tokens, users};
use super::sessions::{self, RevokeReason, SessionState};
use super::{is_foreign_key_violation, DbConnection, StorageError};
use crate::auth::claims::ClaimMap;
use crate::auth::sessions::{judge_reuse, PairSpec, Reuse};

fn insert(conn: &mut DbConnection, pair: &PairSpec) -> Result<(), diesel::result::Error> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::jti.eq(&pair.refresh_jti),
            refresh_tokens::user_id.eq(pair.user_id),
            refresh_tokens::issued_at.eq(pair.issued_at),
            refresh_tokens::expires_at.eq(pair.refresh_expires_at),
            refresh_tokens::session_id.eq(&pair.session_id),
            refresh_tokens::access_jti.eq(&pair.access_jti),
            refresh_tokens::access_expires_at.eq(pair.access_expires_at),
            refresh_tokens::access_claims.eq(claims_json(&pair.access_claims)),
        ))
        .execute(conn)?;
    Ok(())
}

/// NULL for no extra claims (every row before they existed reads so too).
fn claims_json(claims: &ClaimMap) -> Option<String> {
    if claims.is_empty() {
        None
    } else {
        serde_json::to_string(claims).ok()
    }
}

fn parse_claims(stored: Option<&str>) -> Result<ClaimMap, diesel::result::Error> {
    match stored {
        None => Ok(ClaimMap::new()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| diesel::result::Error::DeserializationError(Box::new(e))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueOutcome {
    Issued,
    /// The user was deleted meanwhile.
    NoSuchUser,
}

/// Starts session `pair.session_id` (ending at `session_expires_at`) with
/// its first pair.
pub fn start_session(
    conn: &mut DbConnection,
    pair: &PairSpec,
    session_expires_at: i64,
    checked_hashes: &[&str],
    record_last_login: bool,
    device: &sessions::Device,
) -> Result<IssueOutcome, StorageError> {
    let result = conn.transaction::<(), diesel::result::Error, _>(|conn| {
        // The password was checked against one of these hashes (the stored
        // one, or its upgrade) while no lock was held: a password change or
        // a deactivation in the meantime wins over this login.
        let current: Option<(String, bool)> = users::table
            .filter(users::id.eq(pair.user_id))
            .select((users::password_hash, users::is_active))
            .first(conn)
            .optional()?;
        match current {
            Some((hash, true)) if checked_hashes.contains(&hash.as_str()) => {}
            _ => return Err(diesel::result::Error::RollbackTransaction),
        }
        if record_last_login {
            // In the same transaction: last_login names a login that
            // happened, never one a concurrent password change refused.
            diesel::update(users::table.filter(users::id.eq(pair.user_id)))
                .set(users::last_login.eq(Some(pair.issued_at)))
                .execute(conn)?;
        }
        sessions::insert(
            conn,
            &pair.session_id,
            pair.user_id,
            pair.issued_at,
            session_expires_at,
            device,
        )?;
        insert(conn, pair)
    });
    match result {
        Ok(()) => Ok(IssueOutcome::Issued),
        Err(diesel::result::Error::RollbackTransaction) => Ok(IssueOutcome::NoSuchUser),
        Err(e) if is_foreign_key_violation(&e) => Ok(IssueOutcome::NoSuchUser),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    /// This call spent the token; here is the successor pair, as recorded
    /// (cut to the session's end).
    Rotated(Box<PairSpec>),
    /// The token was rotated moments ago (inside the grace window) and its
    /// successor is still current: the same successor pair again.
    Replayed(Box<PairSpec>),
    /// Spent outside the grace window, or an older ancestor: the session was
    /// revoked by this call.
    ReuseDetected,
    /// Revoked or spent before, in a session that is already revoked or by a
    /// logout: rejected, nothing changed.
    AlreadySpent,
    /// The session reached its absolute end.
    SessionExpired,
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

type StoredRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// (issued_at, expires_at, revoked_at, replaced_by, session_id, access_jti,
/// access_expires_at, access_claims) of a recorded token of `user_id`.
fn lookup(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
) -> Result<Option<StoredRow>, diesel::result::Error> {
    refresh_tokens::table
        .filter(refresh_tokens::jti.eq(jti))
        .filter(refresh_tokens::user_id.eq(user_id))
        .select((
            refresh_tokens::issued_at,
            refresh_tokens::expires_at,
            refresh_tokens::revoked_at,
            refresh_tokens::replaced_by,
            refresh_tokens::session_id,
            refresh_tokens::access_jti,
            refresh_tokens::access_expires_at,
            refresh_tokens::access_claims,
        ))
        .first(conn)
        .optional()
}

/// The pair a recorded, still live refresh token was issued in.
fn live_pair(
    conn: &mut DbConnection,
    jti: &str,
    user_id: i64,
) -> Result<Option<PairSpec>, diesel::result::Error> {
    Ok(match lookup(conn, jti, user_id)? {
        Some((
            issued_at,
            expires_at,
            None,
            _,
            Some(session_id),
            Some(access_jti),
            Some(access_expires_at),
            access_claims,
        )) => Some(PairSpec {
            user_id,
            session_id,
            issued_at,
            refresh_jti: jti.to_owned(),
            refresh_expires_at: expires_at,
            access_jti,
            access_expires_at,
            access_claims: parse_claims(access_claims.as_deref())?,
        }),
        _ => None,
    })
}

/// The state of the session a token without a row (`jti` unknown) was
/// issued in, when that token can be a spent ancestor whose row a later
/// rotation deleted; `None` when it is unknown here.
///
/// Only tokend signs tokens, and it records every token it hands out, so a
/// token naming a session of its user was issued in that session. Its row
/// is gone either because a rotation deleted it (an ancestor: spent) or
/// because the purge took it after its expiry: a token that has not expired
/// (`token_exp`, its signed `exp`) cannot have been purged. An expired one
/// (accepted within the clock-skew leeway) stays unknown, as before.
///
/// A purge on a replica whose clock runs ahead, or a restored backup, can
/// also lose a row; so the session must hold a later token too (one expiring
/// no earlier: lifetimes only move forward within a session, and only a
/// rotation adds a token to one). Otherwise the token stays unknown rather
/// than costing its owner the session.
fn ancestor_session(
    conn: &mut DbConnection,
    session_id: &str,
    user_id: i64,
    token_exp: i64,
    now: i64,
) -> Result<Option<SessionState>, diesel::result::Error> {
    if token_exp <= now {
        return Ok(None);
    }
    let superseded: bool = diesel::select(diesel::dsl::exists(
        refresh_tokens::table
            .filter(refresh_tokens::session_id.eq(session_id))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::expires_at.ge(token_exp)),
    ))
    .get_result(conn)?;
    if !superseded {
        return Ok(None);
    }
    Ok(match sessions::state_of(conn, session_id, user_id, now)? {
        SessionState::Missing => None,
        state => Some(state),
    })
}

/// Spends refresh token `jti` of session `session_id` (`token_exp`: its
/// signed expiry) and records `successor`, all or nothing: of any number of
/// concurrent calls for one jti, exactly one returns `Rotated`; the others
/// replay it (inside the grace window) or find it spent.
pub fn rotate(
    conn: &mut DbConnection,
    jti: &str,
    session_id: &str,
    token_exp: i64,
    successor: PairSpec,
    grace_secs: i64,
) -> Result<SpendOutcome, StorageError> {
    let (user_id, now) = (successor.user_id, successor.issued_at);
    let result = conn.transaction::<SpendOutcome, Abort, _>(|conn| {
        sessions::lock_in_tx(conn, session_id, user_id)?;
        let spent = diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::jti.eq(jti))
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::session_id.eq(session_id))
                .filter(refresh_tokens::revoked_at.is_null()),
        )
        .set((
            refresh_tokens::revoked_at.eq(now),
            refresh_tokens::replaced_by.eq(&successor.refresh_jti),
        ))
        .execute(conn)?;
        if spent == 0 {
            return already_spent(conn, jti, session_id, user_id, token_exp, now, grace_secs);
        }
        // The session and its user checked, and the session's last use
        // recorded, in one round trip; only a refusal looks closer (rolled
        // back, so its last use stays as it was).
        let Some(session_end) = sessions::touch_live_in_tx(conn, session_id, user_id, now)? else {
            let (session, _) = session_and_user(conn, session_id, user_id, now)?;
            return Err(Abort::Outcome(match session {
                SessionState::Revoked => SpendOutcome::AlreadySpent,
                SessionState::Expired => SpendOutcome::SessionExpired,
                // Live: its user is not active.
                SessionState::Live { .. } | SessionState::Missing => SpendOutcome::NoActiveAccount,
            }));
        };
        // The older spent ancestors can never be replayed again (their
        // successors are spent); the token just spent can, inside the grace
        // window, and its row names the successor to replay. Reuse of a
        // deleted ancestor still revokes the session (`ancestor_session`).
        diesel::delete(
            refresh_tokens::table
                .filter(refresh_tokens::session_id.eq(session_id))
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::revoked_at.is_not_null())
                .filter(refresh_tokens::jti.ne(jti)),
        )
        .execute(conn)?;
        let successor = successor.clone().capped(session_end);
        match insert(conn, &successor) {
            Ok(()) => Ok(SpendOutcome::Rotated(Box::new(successor))),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(Abort::Outcome(SpendOutcome::NoActiveAccount))
            }
            Err(e) => Err(Abort::Db(e)),
        }
    });
    match result {
        // `Err(Outcome)` rolled the spend back; `Ok` committed.
        Ok(outcome) | Err(Abort::Outcome(outcome)) => Ok(outcome),
        Err(Abort::Db(e)) => Err(e.into()),
    }
}

/// The presented token was not live: decide between replay, theft and a
/// plain refusal. Runs inside the rotation's transaction, after its write.
fn already_spent(
    conn: &mut DbConnection,
    jti: &str,
    session_id: &str,
    user_id: i64,
    token_exp: i64,
    now: i64,
    grace_secs: i64,
) -> Result<SpendOutcome, Abort> {
    let Some((_, _, revoked_at, replaced_by, stored_session, _, _, _)) =
        lookup(conn, jti, user_id)?
    else {
        // An older ancestor, as if its row were still there: theft in a live
        // session, a plain refusal in a dead one.
        return Ok(
            match ancestor_session(conn, session_id, user_id, token_exp, now)? {
                Some(SessionState::Live { .. }) => {
                    sessions::revoke_in_tx(conn, session_id, user_id, RevokeReason::Reuse, now)?;
                    SpendOutcome::ReuseDetected
                }
                Some(SessionState::Expired) => SpendOutcome::SessionExpired,
                Some(SessionState::Revoked | SessionState::Missing) => SpendOutcome::AlreadySpent,
                None if user_is_active(conn, user_id)? => SpendOutcome::Unknown,
                None => SpendOutcome::NoActiveAccount,
            },
        );
    };
    if stored_session.as_deref() != Some(session_id) {
        return Ok(SpendOutcome::Unknown);
    }
    match sessions::state_of(conn, session_id, user_id, now)? {
        SessionState::Live { .. } => {}
        SessionState::Expired => return Ok(SpendOutcome::SessionExpired),
        SessionState::Revoked | SessionState::Missing => return Ok(SpendOutcome::AlreadySpent),
    }
    // Blacklisted without a successor: a logout (its session is revoked too,
    // so this is reached only for tokens revoked one by one).
    let Some(successor_jti) = replaced_by else {
        return Ok(SpendOutcome::AlreadySpent);
    };
    let successor = live_pair(conn, &successor_jti, user_id)?;
    let spent_at = revoked_at.unwrap_or(now);
    match (
        judge_reuse(now, spent_at, grace_secs, successor.is_some()),
        successor,
    ) {
        (Reuse::Replay, Some(_)) if !user_is_active(conn, user_id)? => {
            Ok(SpendOutcome::NoActiveAccount)
        }
        (Reuse::Replay, Some(pair)) => Ok(SpendOutcome::Replayed(Box::new(pair))),
        _ => {
            sessions::revoke_in_tx(conn, session_id, user_id, RevokeReason::Reuse, now)?;
            Ok(SpendOutcome::ReuseDetected)
        }
    }
}

/// What a refresh without rotation finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The token, its session and its user are live; the session ends then.
    Live { session_expires_at: i64 },
    /// Blacklisted, spent by an earlier rotation, or its session revoked.
    Revoked,
    /// The session reached its absolute end.
    SessionExpired,
    /// Never issued here (or purged after expiry).
    Unknown,
    /// The owner is gone or inactive.
    NoActiveAccount,
}

/// Refresh without rotation: whether refresh token `jti` of session
/// `session_id` (`token_exp`: its signed expiry) may still issue access
/// tokens. Reads only: nothing is spent, so there is no reuse to detect; a
/// token spent while rotation was on stays refused (without revoking its
/// session). Read on the writer, like rotation, so a revocation that just
/// committed is seen.
pub fn renewal(
    conn: &mut DbConnection,
    jti: &str,
    session_id: &str,
    user_id: i64,
    token_exp: i64,
    now: i64,
) -> Result<RenewOutcome, StorageError> {
    let Some((_, _, revoked_at, _, stored_session, _, _, _)) = lookup(conn, jti, user_id)? else {
        return Ok(
            match ancestor_session(conn, session_id, user_id, token_exp, now)? {
                Some(SessionState::Expired) => RenewOutcome::SessionExpired,
                Some(_) => RenewOutcome::Revoked,
                None if user_is_active(conn, user_id)? => RenewOutcome::Unknown,
                None => RenewOutcome::NoActiveAccount,
            },
        );
    };
    if stored_session.as_deref() != Some(session_id) {
        return Ok(RenewOutcome::Unknown);
    }
    // Rotation's order: the session first, then the user.
    Ok(match session_and_user(conn, session_id, user_id, now)? {
        (SessionState::Live { .. }, _) if revoked_at.is_some() => RenewOutcome::Revoked,
        (SessionState::Live { expires_at }, true) => RenewOutcome::Live {
            session_expires_at: expires_at,
        },
        (SessionState::Live { .. } | SessionState::Missing, _) => RenewOutcome::NoActiveAccount,
        (SessionState::Revoked, _) => RenewOutcome::Revoked,
        (SessionState::Expired, _) => RenewOutcome::SessionExpired,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    Unknown,
}

/// Logout: revokes refresh token `jti` (`token_exp`: its signed expiry) and
/// its whole session (the session's access tokens stop working too).
/// Exactly one concurrent call wins.
pub fn revoke(
    conn: &mut DbConnection,
    jti: &str,
    session_id: &str,
    user_id: i64,
    token_exp: i64,
    now: i64,
) -> Result<RevokeOutcome, StorageError> {
    Ok(
        conn.transaction::<RevokeOutcome, diesel::result::Error, _>(|conn| {
            sessions::lock_in_tx(conn, session_id, user_id)?;
            let revoked = diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::jti.eq(jti))
                    .filter(refresh_tokens::user_id.eq(user_id))
                    .filter(refresh_tokens::session_id.eq(session_id))
                    .filter(refresh_tokens::revoked_at.is_null()),
            )
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(conn)?;
            if revoked == 1 {
                sessions::revoke_in_tx(conn, session_id, user_id, RevokeReason::Logout, now)?;
                return Ok(RevokeOutcome::Revoked);
            }
            if lookup(conn, jti, user_id)?.is_some()
                || ancestor_session(conn, session_id, user_id, token_exp, now)?.is_some()
            {
                return Ok(RevokeOutcome::AlreadyRevoked);
            }
            Ok(RevokeOutcome::Unknown)
        })?,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Live,
    Revoked,
    Expired,
    Unknown,
}

/// Whether a refresh token (`token_exp`: its signed expiry) and its session
/// can still be used.
pub fn status(
    conn: &mut DbConnection,
    jti: &str,
    session_id: &str,
    user_id: i64,
    token_exp: i64,
    now: i64,
) -> Result<TokenStatus, StorageError> {
    let Some((_, _, revoked_at, _, stored_session, _, _, _)) = lookup(conn, jti, user_id)? else {
        // A deleted ancestor reads as spent, as its row did.
        return Ok(
            match ancestor_session(conn, session_id, user_id, token_exp, now)? {
                Some(_) => TokenStatus::Revoked,
                None => TokenStatus::Unknown,
            },
        );
    };
    if stored_session.as_deref() != Some(session_id) {
        return Ok(TokenStatus::Unknown);
    }
    if revoked_at.is_some() {
        return Ok(TokenStatus::Revoked);
    }
    Ok(match sessions::state_of(conn, session_id, user_id, now)? {
        SessionState::Live { .. } => TokenStatus::Live,
        SessionState::Expired => TokenStatus::Expired,
        SessionState::Revoked | SessionState::Missing => TokenStatus::Revoked,
    })
}

/// Session `id` of `user_id` and whether that user is active, in one query
/// (a missing session or user reads as `Missing`, inactive).
fn session_and_user(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<(SessionState, bool), diesel::result::Error> {
    let row: Option<(Option<i64>, i64, bool)> = schema::sessions::table
        .inner_join(users::table)
        .filter(schema::sessions::id.eq(id))
        .filter(schema::sessions::user_id.eq(user_id))
        .select((
            schema::sessions::revoked_at,
            schema::sessions::expires_at,
            users::is_active,
        ))
        .first(conn)
        .optional()?;
    Ok(match row {
        None => (SessionState::Missing, false),
        Some((Some(_), _, active)) => (SessionState::Revoked, active),
        Some((None, expires_at, active)) if expires_at <= now => (SessionState::Expired, active),
        Some((None, expires_at, active)) => (SessionState::Live { expires_at }, active),
    })
}

fn user_is_active(conn: &mut DbConnection, user_id: i64) -> Result<bool, diesel::result::Error> {
    Ok(users::table
        .filter(users::id.eq(user_id))
        .select(users::is_active)
        .first::<bool>(conn)
        .optional()?
        .unwrap_or(false))
}

//! Sessions: start, look up, revoke.

use diesel::prelude::*;

use super::schema::{refresh_tokens, sessions, users};
use super::{DbConnection, StorageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// A spent refresh token was presented again outside the grace window.
    Reuse,
    /// The session's refresh token was blacklisted (logout).
    Logout,
    LogoutEverywhere,
    PasswordChange,
    /// The password was reset through a mailed link.
    PasswordReset,
    AccountDisabled,
    /// Too many wrong old passwords in a password change: the access token
    /// is likely stolen.
    PasswordGuessing,
    /// Ended by its user from the list of their sessions ("Your devices").
    User,
    /// Ended by an administrator (the admin API).
    Admin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Reuse => "reuse",
            RevokeReason::Logout => "logout",
            RevokeReason::LogoutEverywhere => "logout_everywhere",
            RevokeReason::PasswordChange => "password_change",
            RevokeReason::PasswordReset => "password_reset",
            RevokeReason::AccountDisabled => "account_disabled",
            RevokeReason::PasswordGuessing => "password_guessing",
            RevokeReason::User => "user",
            RevokeReason::Admin => "admin",
        }
    }
}

/// Whether tokens of a session are still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live {
        expires_at: i64,
    },
    Revoked,
    Expired,
    /// No such session for this user (deleted with the user, or never).
    Missing,
}

impl SessionState {
    /// The state at `now`: a live session past its end has expired.
    pub fn at(self, now: i64) -> SessionState {
        match self {
            SessionState::Live { expires_at } if expires_at <= now => SessionState::Expired,
            other => other,
        }
    }
}

/// Where a session was started from, as recorded at login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A live session, as its user sees it in their list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    pub created_at: i64,
    /// `None` for sessions started before it was recorded.
    pub last_used_at: Option<i64>,
    pub expires_at: i64,
    pub device: Device,
}

pub(crate) fn insert(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
    expires_at: i64,
    device: &Device,
) -> Result<(), diesel::result::Error> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(id),
            sessions::user_id.eq(user_id),
            sessions::created_at.eq(now),
            sessions::expires_at.eq(expires_at),
            sessions::user_agent.eq(device.user_agent.as_deref()),
            sessions::ip.eq(device.ip.as_deref()),
            sessions::last_used_at.eq(Some(now)),
        ))
        .execute(conn)?;
    Ok(())
}

/// The live sessions (neither revoked nor ended) of `user_id`, newest
/// first; sessions started in the same second by id, so the order is stable.
pub fn live_for_user(
    conn: &mut DbConnection,
    user_id: i64,
    now: i64,
) -> Result<Vec<SessionSummary>, StorageError> {
    type Row = (
        String,
        i64,
        Option<i64>,
        i64,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .order((sessions::created_at.desc(), sessions::id.asc()))
        .select((
            sessions::id,
            sessions::created_at,
            sessions::last_used_at,
            sessions::expires_at,
            sessions::user_agent,
            sessions::ip,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, created_at, last_used_at, expires_at, user_agent, ip)| SessionSummary {
                id,
                created_at,
                last_used_at,
                expires_at,
                device: Device { user_agent, ip },
            },
        )
        .collect())
}

/// Records a use of live session `id` of `user_id` (a rotation) at `now`,
/// inside the caller's transaction, if its user is active too; answers the
/// session's end. `None`: the session is not live or its user not active
/// (nothing changed; `state_of` tells which). One statement: it stands in
/// for the read of the session and its user that rotation needs anyway.
pub(crate) fn touch_live_in_tx(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<Option<i64>, diesel::result::Error> {
    let active_user = diesel::dsl::exists(
        users::table
            .filter(users::id.eq(user_id))
            .filter(users::is_active.eq(true)),
    );
    diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null())
            .filter(sessions::expires_at.gt(now))
            .filter(active_user),
    )
    .set(sessions::last_used_at.eq(Some(now)))
    .returning(sessions::expires_at)
    .get_result::<i64>(conn)
    .optional()
}

pub(crate) fn state_of(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<SessionState, diesel::result::Error> {
    let row: Option<(Option<i64>, i64)> = sessions::table
        .filter(sessions::id.eq(id))
        .filter(sessions::user_id.eq(user_id))
        .select((sessions::revoked_at, sessions::expires_at))
        .first(conn)
        .optional()?;
    Ok(match row {
        None => SessionState::Missing,
        Some((Some(_), _)) => SessionState::Revoked,
        Some((None, expires_at)) if expires_at <= now => SessionState::Expired,
        Some((None, expires_at)) => SessionState::Live { expires_at },
    })
}

pub fn state(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<SessionState, StorageError> {
    Ok(state_of(conn, id, user_id, now)?)
}

/// The user (username, active) of session `id` when it is live, in one
/// statement; `None` when it is revoked, ended or missing.
pub fn live_session_user(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    now: i64,
) -> Result<Option<(String, bool)>, StorageError> {
    use super::schema::users;
    Ok(sessions::table
        .inner_join(users::table)
        .filter(sessions::id.eq(id))
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::expires_at.gt(now))
        .select((users::username, users::is_active))
        .first(conn)
        .optional()?)
}

/// PostgreSQL: locks session `id`'s row until the end of the caller's
/// transaction, before any of its tokens. Every change to a session's
/// tokens locks in that order (session row, then token rows), so concurrent
/// rotations, logouts and revocations take turns without deadlocking, and a
/// revocation that waited for a rotation then sees (and revokes) the
/// successor it inserted: no live token is left in a revoked session.
/// SQLite needs nothing: its write transactions already take turns.
pub(crate) fn lock_in_tx(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
) -> Result<(), diesel::result::Error> {
    if let DbConnection::Postgresql(pg) = conn {
        // FOR NO KEY UPDATE: the foreign-key checks of inserted tokens
        // (FOR KEY SHARE) do not wait for it.
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::user_id.eq(user_id))
            .select(sessions::id)
            .for_no_key_update()
            .load::<String>(pg)?;
    }
    Ok(())
}

/// Revokes session `id` of `user_id` and every refresh token in it, inside
/// the caller's transaction. True when this call revoked the session.
pub(crate) fn revoke_in_tx(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    reason: RevokeReason,
    now: i64,
) -> Result<bool, diesel::result::Error> {
    let revoked = diesel::update(
        sessions::table
            .filter(sessions::id.eq(id))
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::revoked_at.eq(now),
        sessions::revoke_reason.eq(reason.as_str()),
    ))
    .execute(conn)?;
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::session_id.eq(id))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)?;
    if revoked == 1 {
        super::invalidate::session(conn, id, user_id)?;
    }
    Ok(revoked == 1)
}

/// Whether the access token `jti`, expiring at `expires_at`, is one tokend
/// issued in session `sid` of `user_id` with a pair still on record (the
/// session keeps its last two).
pub fn access_token_issued(
    conn: &mut DbConnection,
    sid: &str,
    user_id: i64,
    jti: &str,
    expires_at: i64,
) -> Result<bool, StorageError> {
    Ok(diesel::select(diesel::dsl::exists(
        refresh_tokens::table
            .filter(refresh_tokens::session_id.eq(sid))
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::access_jti.eq(jti))
            .filter(refresh_tokens::access_expires_at.eq(expires_at)),
    ))
    .get_result(conn)?)
}

/// Revokes session `id` of `user_id` (RFC 7009 revocation). True when this
/// call revoked it.
pub fn revoke_session(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    reason: RevokeReason,
    now: i64,
) -> Result<bool, StorageError> {
    Ok(conn.transaction(|conn| revoke_in_tx(conn, id, user_id, reason, now))?)
}

/// Revokes session `id` of `user_id` if it is live (not revoked, not
/// ended): what its user asks from their list of sessions. True when this
/// call revoked it; false for a session that is not live, or not theirs.
pub fn revoke_live_session(
    conn: &mut DbConnection,
    id: &str,
    user_id: i64,
    reason: RevokeReason,
    now: i64,
) -> Result<bool, StorageError> {
    Ok(conn.transaction(|conn| {
        lock_in_tx(conn, id, user_id)?;
        match state_of(conn, id, user_id, now)? {
            SessionState::Live { .. } => revoke_in_tx(conn, id, user_id, reason, now),
            _ => Ok(false),
        }
    })?)
}

/// Revokes every live session (not revoked, not ended) of a user but
/// `keep`; answers their ids, for the cache.
pub fn revoke_other_live_sessions(
    conn: &mut DbConnection,
    user_id: i64,
    keep: &str,
    reason: RevokeReason,
    now: i64,
) -> Result<Vec<String>, StorageError> {
    Ok(conn.transaction::<_, diesel::result::Error, _>(|conn| {
        // Sessions first, then their tokens: the order every session change
        // locks in (see `lock_in_tx`).
        let revoked: Vec<String> = diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::expires_at.gt(now))
                .filter(sessions::id.ne(keep)),
        )
        .set((
            sessions::revoked_at.eq(now),
            sessions::revoke_reason.eq(reason.as_str()),
        ))
        .returning(sessions::id)
        .get_results(conn)?;
        if !revoked.is_empty() {
            diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::user_id.eq(user_id))
                    .filter(refresh_tokens::revoked_at.is_null())
                    .filter(refresh_tokens::session_id.eq_any(&revoked)),
            )
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(conn)?;
            super::invalidate::user(conn, user_id)?;
        }
        Ok(revoked)
    })?)
}

/// Revokes every live session of a user, except `keep` (the caller's own
/// session on a password change). Returns how many were revoked.
pub fn revoke_all_for_user(
    conn: &mut DbConnection,
    user_id: i64,
    keep: Option<&str>,
    reason: RevokeReason,
    now: i64,
) -> Result<usize, StorageError> {
    let keep = keep.unwrap_or("").to_owned();
    Ok(conn.transaction::<usize, diesel::result::Error, _>(|conn| {
        let revoked = diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::revoked_at.is_null())
                .filter(sessions::id.ne(&keep)),
        )
        .set((
            sessions::revoked_at.eq(now),
            sessions::revoke_reason.eq(reason.as_str()),
        ))
        .execute(conn)?;
        diesel::update(
            refresh_tokens::table
                .filter(refresh_tokens::user_id.eq(user_id))
                .filter(refresh_tokens::revoked_at.is_null())
                .filter(refresh_tokens::session_id.ne(&keep)),
        )
        .set(refresh_tokens::revoked_at.eq(now))
        .execute(conn)?;
        if revoked > 0 {
            super::invalidate::user(conn, user_id)?;
        }
        Ok(revoked)
    })?)
}

/// Rows removed by one purge batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub refresh_tokens: usize,
    pub sessions: usize,
    /// Outbox messages sent or given up long enough ago.
    pub outbox: usize,
    /// One-time account tokens used or expired.
    pub account_tokens: usize,
    /// Revocations of service tokens that have expired anyway.
    pub client_tokens: usize,
    /// Audit events older than `audit.retention_days`.
    pub audit_events: usize,
}

impl Purged {
    pub fn total(&self) -> usize {
        self.refresh_tokens
            + self.sessions
            + self.outbox
            + self.account_tokens
            + self.client_tokens
            + self.audit_events
    }

    pub fn add(&mut self, other: &Purged) {
        self.refresh_tokens += other.refresh_tokens;
        self.sessions += other.sessions;
        self.outbox += other.outbox;
        self.account_tokens += other.account_tokens;
        self.client_tokens += other.client_tokens;
        self.audit_events += other.audit_events;
    }
}

/// The counts as `tokend purge` prints them: `N what(s)`, comma-separated,
/// in a fixed order (new kinds of rows go at the end).
impl std::fmt::Display for Purged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refresh token(s), {} session(s), {} outbox message(s), {} account token(s), \
             {} service token revocation(s), {} audit event(s)",
            self.refresh_tokens,
            self.sessions,
            self.outbox,
            self.account_tokens,
            self.client_tokens,
            self.audit_events
        )
    }
}

/// Deletes at most `batch` expired refresh tokens and at most `batch` dead
/// sessions (past their end, or revoked before `revoked_before`), in a few
/// short statements (the caller's transaction keeps it short). Call until it returns
/// zero. Purging never revives anything: a token whose rows are gone is
/// refused as unknown.
pub fn purge_batch(
    conn: &mut DbConnection,
    now: i64,
    revoked_before: i64,
    batch: i64,
) -> Result<Purged, StorageError> {
    // Bounded by a LIMIT on the ids (DELETE … LIMIT is not portable). Each
    // SELECT is ordered by the column its index holds, so the index is read
    // from its start whatever the planner's statistics say (unordered, a
    // stale estimate made PostgreSQL scan the whole table for each batch).
    // Deleted sessions are re-checked: the caller need not hold a
    // transaction.
    // The tokens in one statement, a write: inside a SQLite transaction a
    // read first could not wait for the write lock.
    let expired = diesel::alias!(refresh_tokens as expired);
    let mut refresh_tokens_deleted = diesel::delete(
        refresh_tokens::table.filter(
            refresh_tokens::jti.eq_any(
                expired
                    .select(expired.field(refresh_tokens::jti))
                    .filter(expired.field(refresh_tokens::expires_at).le(now))
                    .order(expired.field(refresh_tokens::expires_at))
                    .limit(batch),
            ),
        ),
    )
    .execute(conn)?;
    // Ended and revoked sessions, one index each (an OR of both would read
    // the table).
    let mut dead_sessions: Vec<String> = sessions::table
        .select(sessions::id)
        .filter(sessions::expires_at.le(now))
        .order(sessions::expires_at)
        .limit(batch)
        .load(conn)?;
    if dead_sessions.len() < usize::try_from(batch).unwrap_or(usize::MAX) {
        let room = batch - i64::try_from(dead_sessions.len()).unwrap_or(batch);
        dead_sessions.extend(
            sessions::table
                .select(sessions::id)
                .filter(sessions::revoked_at.le(revoked_before))
                .filter(sessions::expires_at.gt(now))
                .order(sessions::revoked_at)
                .limit(room)
                .load::<String>(conn)?,
        );
    }
    let is_dead = sessions::expires_at
        .le(now)
        .or(sessions::revoked_at.le(revoked_before));
    let sessions_deleted = if dead_sessions.is_empty() {
        0
    } else {
        // Their tokens first, counted (the foreign key would delete them
        // too, uncounted).
        refresh_tokens_deleted += diesel::delete(
            refresh_tokens::table.filter(refresh_tokens::session_id.eq_any(&dead_sessions)),
        )
        .execute(conn)?;
        diesel::delete(
            sessions::table
                .filter(sessions::id.eq_any(&dead_sessions))
                .filter(is_dead),
        )
        .execute(conn)?
    };
    Ok(Purged {
        refresh_tokens: refresh_tokens_deleted,
        sessions: sessions_deleted,
        outbox: 0,
        account_tokens: 0,
        client_tokens: 0,
        audit_events: 0,
    })
}

#[cfg(test)]
mod tests {
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Step {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }

    /// SQLite without statistics must still read one session's tokens by
    /// the session, not by its user (who may hold many thousands).
    #[test]
    fn one_sessions_tokens_are_found_by_the_session_on_sqlite() {
        let dir = tempfile::tempdir().expect("dir");
        let db = super::super::test_database(dir.path());
        for statement in [
            "UPDATE refresh_tokens SET revoked_at = 1 \
             WHERE session_id = 's' AND user_id = 1 AND revoked_at IS NULL",
            "DELETE FROM refresh_tokens WHERE session_id = 's' AND user_id = 1 \
             AND revoked_at IS NOT NULL AND jti <> 'j'",
            "SELECT 1 FROM refresh_tokens WHERE session_id = 's' AND user_id = 1 \
             AND expires_at >= 5",
        ] {
            let plan = db
                .run_blocking(|conn| {
                    Ok(diesel::sql_query(format!("EXPLAIN QUERY PLAN {statement}"))
                        .load::<Step>(conn)?)
                })
                .expect("plan");
            let plan: Vec<String> = plan.into_iter().map(|s| s.detail).collect();
            assert!(
                plan.iter()
                    .any(|d| d.contains("INDEX refresh_tokens_session_user")),
                "{statement}: {plan:?}"
            );
        }
    }
}

//! Brute-force state shared by the replicas of one PostgreSQL database: the
//! per-address quotas (GCRA, one theoretical arrival time per key) and the
//! guess back-off (failures, guesses in flight, lock), each change one
//! statement, so the K-th failure counts the same whichever replica
//! receives it and simultaneous guesses on several replicas are counted in
//! flight together. The rules are those of `auth::throttle` (its unit tests
//! pin them); here they are written as single atomic statements. PostgreSQL
//! only: SQLite serves one process, which keeps this state in memory.
//!
//! Times are unix milliseconds of the database's clock (`now_ms: None`; a
//! time is given only by tests): replicas whose clocks disagree still count
//! against one clock. The tables are UNLOGGED: fast to write, and
//! emptied by a PostgreSQL crash, which forgives counts as a restart of a
//! single process would.

use diesel::sql_types::{BigInt, Binary, Integer, Nullable};
use diesel::RunQueryDsl;

use super::{DbConnection, StorageError};

/// A reserved guess is counted in flight for at most this long: a replica
/// that dies with guesses under way does not block their key for good.
pub const FLIGHT_LEASE_MS: i64 = 60_000;

/// `sql` with `@now` standing for "now": the time bound as parameter `$2`
/// if given, else the database's clock at the start of the statement (the
/// same value wherever it appears in it).
fn at_now(sql: &str) -> String {
    at_now_param(sql, 2)
}

fn at_now_param(sql: &str, param: usize) -> String {
    sql.replace(
        "@now",
        &format!("COALESCE(${param}, (EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT)"),
    )
}

#[derive(diesel::QueryableByName)]
struct Failures {
    #[diesel(sql_type = Integer)]
    failures: i32,
}

#[derive(diesel::QueryableByName)]
struct Millis {
    #[diesel(sql_type = BigInt)]
    ms: i64,
}

/// One request against a quota of `burst` requests replenished one per
/// `interval_ms`: `Err(wait_ms)` when it is used up.
pub fn take_quota(
    conn: &mut DbConnection,
    key: &[u8],
    now_ms: Option<i64>,
    interval_ms: i64,
    burst: i64,
) -> Result<Result<(), i64>, StorageError> {
    let tolerance = interval_ms.saturating_mul(burst.max(1) - 1);
    let allowed = diesel::sql_query(at_now(
        "INSERT INTO throttle_quotas AS q (key, tat) VALUES ($1, @now + $3) \
         ON CONFLICT (key) DO UPDATE SET tat = GREATEST(q.tat, @now) + $3 \
         WHERE GREATEST(q.tat, @now) - @now <= $4 \
         RETURNING tat AS ms",
    ))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .bind::<BigInt, _>(interval_ms)
    .bind::<BigInt, _>(tolerance)
    .get_results::<Millis>(conn)?;
    if !allowed.is_empty() {
        return Ok(Ok(()));
    }
    let wait = diesel::sql_query(at_now(
        "SELECT tat - @now - $3 AS ms FROM throttle_quotas WHERE key = $1",
    ))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .bind::<BigInt, _>(tolerance)
    .get_results::<Millis>(conn)?;
    Ok(Err(wait.first().map_or(interval_ms, |w| w.ms).max(1)))
}

/// Guesses in flight, not counting those whose lease ran out.
const IN_FLIGHT: &str = "(CASE WHEN g.flight_until <= @now THEN 0 ELSE g.in_flight END)";

/// Reserves one guess for `key`: refused (`Err(wait_ms)`) while the key is
/// locked, or while guesses under way would use up the `free` failures (then
/// one at a time). Failures are forgotten after `idle_ms` without guesses.
pub fn reserve_guess(
    conn: &mut DbConnection,
    key: &[u8],
    now_ms: Option<i64>,
    free: u32,
    idle_ms: i64,
) -> Result<Result<(), i64>, StorageError> {
    let quiet = format!("({IN_FLIGHT} = 0 AND @now - g.last_at >= $4)");
    let reserved = diesel::sql_query(at_now(&format!(
        "INSERT INTO throttle_guesses AS g \
             (key, failures, in_flight, flight_until, locked_until, last_at) \
         VALUES ($1, 0, 1, @now + $5, 0, @now) \
         ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN {quiet} THEN 0 ELSE g.failures END, \
             locked_until = CASE WHEN {quiet} THEN 0 ELSE g.locked_until END, \
             in_flight = {IN_FLIGHT} + 1, \
             flight_until = @now + $5, \
             last_at = @now \
         WHERE g.locked_until <= @now \
           AND NOT ({IN_FLIGHT} > 0 AND g.failures + {IN_FLIGHT} >= $3) \
         RETURNING failures"
    )))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .bind::<Integer, _>(i32::try_from(free).unwrap_or(i32::MAX))
    .bind::<BigInt, _>(idle_ms)
    .bind::<BigInt, _>(FLIGHT_LEASE_MS)
    .get_results::<Failures>(conn)?;
    if !reserved.is_empty() {
        return Ok(Ok(()));
    }
    let locked = diesel::sql_query(at_now(
        "SELECT locked_until - @now AS ms FROM throttle_guesses \
         WHERE key = $1 AND locked_until > @now",
    ))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .get_results::<Millis>(conn)?;
    // Not locked: the outcome of the guesses under way decides the next wait.
    Ok(Err(locked.first().map_or(1_000, |l| l.ms)))
}

/// `Some((wait_ms, failures))` when `key` has failures on record: the wait
/// is positive while it is locked. A read: concurrent checks of one key do
/// not take turns on its row.
pub fn recorded_failures(
    conn: &mut DbConnection,
    key: &[u8],
    now_ms: Option<i64>,
) -> Result<Option<(i64, u32)>, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Recorded {
        #[diesel(sql_type = BigInt)]
        ms: i64,
        #[diesel(sql_type = Integer)]
        failures: i32,
    }
    let found = diesel::sql_query(at_now(
        "SELECT locked_until - @now AS ms, failures FROM throttle_guesses \
         WHERE key = $1 AND failures > 0",
    ))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .get_results::<Recorded>(conn)?;
    Ok(found
        .first()
        .map(|r| (r.ms, u32::try_from(r.failures).unwrap_or(0))))
}

/// A reserved guess was wrong: one more failure; from the `free`-th on, the
/// key is locked for 1, 2, 4… seconds, at most `max_backoff_ms`. The
/// failures now counted.
pub fn guess_failed(
    conn: &mut DbConnection,
    key: &[u8],
    now_ms: Option<i64>,
    free: u32,
    max_backoff_ms: i64,
) -> Result<u32, StorageError> {
    // An upsert: a verdict whose row is gone (a crash of PostgreSQL emptied
    // the table) still counts.
    let rows = diesel::sql_query(at_now(
        "INSERT INTO throttle_guesses AS g \
             (key, failures, in_flight, flight_until, locked_until, last_at) \
         VALUES ($1, 1, 0, @now, \
             CASE WHEN 1 >= $3 THEN @now + LEAST(1000, $4) ELSE 0 END, @now) \
         ON CONFLICT (key) DO UPDATE SET \
             failures = g.failures + 1, \
             in_flight = GREATEST(g.in_flight - 1, 0), \
             last_at = @now, \
             locked_until = CASE WHEN g.failures + 1 >= $3 \
                 THEN @now + LEAST((1::BIGINT << LEAST(g.failures + 1 - $3, 30)) * 1000, $4) \
                 ELSE g.locked_until END \
         RETURNING failures",
    ))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .bind::<Integer, _>(i32::try_from(free).unwrap_or(i32::MAX))
    .bind::<BigInt, _>(max_backoff_ms.max(1_000))
    .get_results::<Failures>(conn)?;
    Ok(rows
        .first()
        .map_or(0, |r| u32::try_from(r.failures).unwrap_or(0)))
}

/// A reserved guess ends: `cleared` (a right guess) forgets the key's
/// failures and lock; otherwise (no verdict: the check could not run) it
/// only leaves flight. A key with nothing left to count is deleted.
pub fn guess_ended(
    conn: &mut DbConnection,
    key: &[u8],
    now_ms: Option<i64>,
    cleared: bool,
) -> Result<(), StorageError> {
    let nothing_left = if cleared {
        "TRUE"
    } else {
        "failures = 0 AND locked_until <= @now"
    };
    diesel::sql_query(at_now(&format!(
        "WITH gone AS ( \
             DELETE FROM throttle_guesses \
             WHERE key = $1 AND (in_flight <= 1 OR flight_until <= @now) AND {nothing_left} \
             RETURNING key) \
         UPDATE throttle_guesses SET \
             in_flight = GREATEST(in_flight - 1, 0), \
             failures = CASE WHEN $3 THEN 0 ELSE failures END, \
             locked_until = CASE WHEN $3 THEN 0 ELSE locked_until END \
         WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM gone)"
    )))
    .bind::<Binary, _>(key)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .bind::<diesel::sql_types::Bool, _>(cleared)
    .execute(conn)?;
    Ok(())
}

/// Deletes state that no longer counts: quotas back to full, keys idle for
/// `idle_ms` with no lock and no guess in flight. Keeps both tables bounded
/// by the keys active recently.
pub fn prune(
    conn: &mut DbConnection,
    now_ms: Option<i64>,
    idle_ms: i64,
) -> Result<usize, StorageError> {
    let quotas = diesel::sql_query(at_now_param(
        "DELETE FROM throttle_quotas WHERE tat <= @now",
        1,
    ))
    .bind::<Nullable<BigInt>, _>(now_ms)
    .execute(conn)?;
    let guesses = diesel::sql_query(at_now(
        "DELETE FROM throttle_guesses WHERE last_at <= @now - $1 AND locked_until <= @now \
         AND (in_flight = 0 OR flight_until <= @now)",
    ))
    .bind::<BigInt, _>(idle_ms)
    .bind::<Nullable<BigInt>, _>(now_ms)
    .execute(conn)?;
    Ok(quotas + guesses)
}

//! The only place that knows about diesel: connections, pool, migrations and
//! every query.
//!
//! One binary, two backends: the database URL picks SQLite or PostgreSQL
//! before anything connects; `DbConnection` (diesel's `MultiConnection`) lets
//! one set of queries serve both.

pub mod account_tokens;
pub mod audit;
pub mod cache;
pub mod clients;
pub mod django;
pub mod groups;
pub mod invalidate;
pub mod outbox;
pub mod refresh_tokens;
pub mod schema;
pub mod sessions;
pub mod throttle;
pub mod users;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tokio::sync::Semaphore;

use crate::config::{DatabaseSettings, DatabaseUrl};

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL advisory lock key migrations are applied under ("tokend"
/// in ASCII): one replica at a time.
const MIGRATION_LOCK: i64 = 0x746f_6b65_6e64;
/// Any error, kept whole (its `source()` chain) rather than flattened into
/// a string, so that the one place that logs it shows every cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Messages name what failed; the cause is the `source()`, never repeated in
/// the message (a chain printer would show it twice).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached, or no connection was free in time.
    #[error("database unavailable: {context}")]
    Unavailable {
        context: std::borrow::Cow<'static, str>,
        #[source]
        source: Option<BoxError>,
    },
    #[error("database error")]
    Query(#[source] diesel::result::Error),
    #[error("migrations failed")]
    Migration(#[source] BoxError),
}

impl StorageError {
    /// Unavailable because of `source`.
    pub fn unavailable(
        context: impl Into<std::borrow::Cow<'static, str>>,
        source: impl Into<BoxError>,
    ) -> Self {
        StorageError::Unavailable {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Unavailable with no underlying error (e.g. a timeout of our own).
    pub fn unavailable_because(context: &'static str) -> Self {
        StorageError::Unavailable {
            context: context.into(),
            source: None,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }
}

/// Errors that mean "the database is not there" (a dropped connection, a
/// locked, read-only or missing SQLite file) are `Unavailable` (503, and the
/// connection is discarded); the rest are query errors.
impl From<diesel::result::Error> for StorageError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        if let Error::RollbackErrorOnCommit { commit_error, .. } = e {
            // The commit failed (and the rollback's fate is secondary):
            // classify by why the commit failed.
            return StorageError::from(*commit_error);
        }
        let unavailable = match &e {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | Error::BrokenTransactionManager => true,
            Error::DatabaseError(_, info) => {
                let message = info.message();
                [
                    "database is locked",
                    "readonly database",
                    "unable to open database",
                    "disk I/O error",
                    "database or disk is full",
                    "terminating connection",
                    "server closed the connection",
                    "no connection to the server",
                ]
                .iter()
                .any(|m| message.contains(m))
            }
            _ => false,
        };
        if unavailable {
            StorageError::unavailable("the database went away", e)
        } else {
            StorageError::Query(e)
        }
    }
}

/// A pooled connection, marked broken when a call on it found the database
/// gone, so that the pool discards it instead of handing it out again.
pub struct PooledDb {
    conn: DbConnection,
    broken: bool,
}

/// Bytes the SQLite write-ahead log is cut back to each time it starts
/// over: without a limit it keeps the size of its largest burst (a purge of
/// millions of rows: gigabytes) for good.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How long one purge batch aims to hold the database: a live write (SQLite
/// has one writer at a time) waits at most about this long behind it.
const PURGE_BATCH_TIME: std::time::Duration = std::time::Duration::from_millis(3);

/// The next purge batch's size: halved after a batch that took longer than
/// `PURGE_BATCH_TIME` (never below a twentieth of `max`, so that a slow
/// disk cannot shrink the purge to a row at a time), doubled (up to `max`)
/// after one that took under half of it. Rows cost more as tables and
/// caches grow, so a fixed count would hold the database longer exactly
/// where the data is largest.
fn next_purge_batch(size: i64, max: i64, took: std::time::Duration) -> i64 {
    if took > PURGE_BATCH_TIME {
        (size / 2).max(max / 20).max(1)
    } else if took < PURGE_BATCH_TIME / 2 {
        size.saturating_mul(2).min(max)
    } else {
        size
    }
    .min(max)
}

/// Runs `f` in one transaction and says how long `f` took. On SQLite the
/// transaction takes the write lock first (`BEGIN IMMEDIATE`: a read
/// followed by a write could not wait for it) and the time runs from when
/// it holds it to its commit: what another writer waits, not what this one
/// waited for.
/// `f` must not open transactions of its own.
fn timed_write_transaction<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, StorageError>,
) -> Result<(T, std::time::Duration), StorageError> {
    if !matches!(conn, DbConnection::Sqlite(_)) {
        return conn.transaction(|conn| {
            let started = std::time::Instant::now();
            f(conn).map(|value| (value, started.elapsed()))
        });
    }
    conn.batch_execute("BEGIN IMMEDIATE")?;
    let started = std::time::Instant::now();
    let result = f(conn).and_then(|value| {
        conn.batch_execute("COMMIT")?;
        Ok((value, started.elapsed()))
    });
    match result {
        Err(e) => match conn.batch_execute("ROLLBACK") {
            Ok(()) => Err(e),
            // Still inside the transaction: an unavailable error makes the
            // caller drop this connection rather than write on in it.
            Err(rollback) => Err(StorageError::unavailable(
                format!("cannot roll back after: {e}"),
                rollback,
            )),
        },
        ok => ok,
    }
}

/// Opens connections of the backend the URL names (never guessing), and
/// applies the SQLite pragmas every connection needs.
struct Manager {
    url: DatabaseUrl,
    busy_timeout_ms: u64,
}

impl r2d2::ManageConnection for Manager {
    type Connection = PooledDb;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<PooledDb, Self::Error> {
        self.open().map(|conn| PooledDb {
            conn,
            broken: false,
        })
    }

    fn is_valid(&self, pooled: &mut PooledDb) -> Result<(), Self::Error> {
        pooled
            .conn
            .batch_execute("SELECT 1")
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
    }

    fn has_broken(&self, pooled: &mut PooledDb) -> bool {
        // A panic inside a call may have left a transaction open.
        pooled.broken || std::thread::panicking()
    }
}

impl Manager {
    fn open(&self) -> Result<DbConnection, diesel::ConnectionError> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                PgConnection::establish(url).map(DbConnection::Postgresql)
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)?;
                // busy_timeout first: the journal_mode switch itself may wait.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                     PRAGMA journal_size_limit = {};",
                    self.busy_timeout_ms, WAL_SIZE_LIMIT
                ))
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

/// Process-wide SQLite settings, applied once before the first connection
/// opens (they only take effect then).
///
/// - Query planner stability (`SQLITE_DBCONFIG_ENABLE_QPSG`, on every
///   connection through an auto-extension: diesel does not hand out the
///   raw handle). Without it SQLite (3.47 and later) reads the bound value
///   of `LIMIT ?` while planning and marks the statement stale whenever
///   that parameter is bound again, which diesel does on every execution
///   of a cached `.first()` query: every such query was parsed and planned
///   anew, about a third of the CPU of a one-query request. The plans do
///   not depend on bound values here (no `ANALYZE` statistics).
/// - No allocation statistics (`SQLITE_CONFIG_MEMSTATUS`): with them every
///   allocation of every connection takes one process-wide mutex, which
///   the pooled connections then contend for. Nothing here reads them.
fn sqlite_process_settings() {
    use libsqlite3_sys as ffi;
    use std::ffi::{c_char, c_int};

    unsafe extern "C" fn stable_plans(
        db: *mut ffi::sqlite3,
        _error: *mut *mut c_char,
        _api: *const ffi::sqlite3_api_routines,
    ) -> c_int {
        // SAFETY: `db` is the connection SQLite is opening; the option
        // takes an int and an optional int pointer for the result.
        unsafe {
            ffi::sqlite3_db_config(
                db,
                ffi::SQLITE_DBCONFIG_ENABLE_QPSG,
                1 as c_int,
                std::ptr::null_mut::<c_int>(),
            );
        }
        ffi::SQLITE_OK
    }

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: configuration calls with the argument types SQLite
        // documents. `sqlite3_config` must precede SQLite's initialisation
        // (`sqlite3_auto_extension` initialises it); if a connection was
        // opened before, it refuses (SQLITE_MISUSE) and nothing changes.
        unsafe {
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
            ffi::sqlite3_auto_extension(Some(stable_plans));
        }
    });
}

/// Creates the SQLite file, if missing, readable by its owner only: SQLite
/// would create it with the umask's mode (typically 0644), and its -wal and
/// -shm files take the main file's mode. An existing file is left as it is
/// (never truncated). `file:` URI databases are not paths here.
fn create_private_file(path: &str) -> Result<(), StorageError> {
    if path.starts_with("file:") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .map_err(|e| StorageError::unavailable(format!("cannot create {path}"), e))
}

/// The pool plus a semaphore of the same size: requests wait for a
/// connection asynchronously (bounded by the pool timeout) and only then take
/// a blocking thread, so a burst never parks hundreds of threads on the pool.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<Manager>,
    permits: Arc<Semaphore>,
    timeout: Duration,
    backend: Backend,
    /// When a call last found the database unavailable (ms since the Unix
    /// epoch; 0: it answered since).
    unavailable_at: Arc<std::sync::atomic::AtomicU64>,
    /// When a caller started checking whether the database is back (ms
    /// since the Unix epoch; 0: nobody). A claim older than twice the pool
    /// timeout is void (its caller went away).
    probing_since: Arc<std::sync::atomic::AtomicU64>,
    /// SQLite: this process's one writing connection, on a thread of its
    /// own (opened on first use, again after a failure; see `write`).
    writer: Option<Arc<writer::Writer>>,
    /// Where audit rows written through this handle are also sent as
    /// webhooks (`audit::insert_batch`); none by default.
    webhooks: Arc<crate::webhooks::Targets>,
}

impl Database {
    /// Builds the pool without connecting (connections open on first use, so
    /// the service starts even while the database is briefly away).
    pub fn new(settings: &DatabaseSettings) -> Result<Self, StorageError> {
        let url = DatabaseUrl::parse(settings.url.expose())
            .map_err(|e| StorageError::unavailable("bad database URL", e))?;
        let backend = match url {
            DatabaseUrl::Sqlite(ref path) => {
                if let Some(dir) = std::path::Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            StorageError::unavailable(format!("cannot create {}", dir.display()), e)
                        })?;
                    }
                }
                create_private_file(path)?;
                sqlite_process_settings();
                Backend::Sqlite
            }
            DatabaseUrl::Postgres(_) => Backend::Postgres,
        };
        let size = match (settings.pool_size, backend) {
            (0, Backend::Sqlite) => 8,
            (0, Backend::Postgres) => 16,
            (n, _) => n,
        };
        let timeout = Duration::from_millis(settings.pool_timeout_ms.max(1));
        let pool = r2d2::Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(Manager {
                url: url.clone(),
                busy_timeout_ms: settings.sqlite_busy_timeout_ms,
            });
        let writer = if backend == Backend::Sqlite {
            Some(Arc::new(writer::Writer::start(Manager {
                url,
                busy_timeout_ms: settings.sqlite_busy_timeout_ms,
            })?))
        } else {
            None
        };
        Ok(Database {
            pool,
            permits: Arc::new(Semaphore::new(size as usize)),
            timeout,
            backend,
            unavailable_at: Arc::default(),
            probing_since: Arc::default(),
            writer,
            webhooks: Arc::default(),
        })
    }

    /// This handle, queuing the webhooks of the audit rows it writes to
    /// `targets`: every process that writes audit rows (the server, the
    /// command line) builds its handle with the configured targets.
    pub fn with_webhooks(mut self, targets: crate::webhooks::Targets) -> Self {
        self.webhooks = Arc::new(targets);
        self
    }

    /// Where audit rows are sent as webhooks: pass it to
    /// `audit::insert_batch`.
    pub fn webhooks(&self) -> Arc<crate::webhooks::Targets> {
        self.webhooks.clone()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// (connections open, of which idle) in the pool, for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    fn connection(&self) -> Result<r2d2::PooledConnection<Manager>, StorageError> {
        self.pool
            .get()
            .map_err(|e| StorageError::unavailable("no connection from the pool", e))
    }

    /// Applies the embedded migrations of this backend (blocking).
    pub fn migrate_blocking(&self) -> Result<usize, StorageError> {
        let mut pooled = self.connection()?;
        let conn = &mut pooled.conn;
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        // Replicas starting together would race to apply the same migration
        // (one fails on the existing table): on PostgreSQL they take turns
        // under a session advisory lock, and the later ones find nothing
        // pending. SQLite serializes writers by itself.
        let locked = matches!(self.backend, Backend::Postgres);
        if locked {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
                .execute(conn)
                .map_err(|e| StorageError::unavailable("cannot take the migration lock", e))?;
        }
        let applied = conn
            .run_pending_migrations(migrations)
            .map(|applied| applied.len())
            .map_err(StorageError::Migration);
        if locked {
            // Released with the session anyway; unlocking keeps the pooled
            // connection clean.
            let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
                .execute(conn);
        }
        applied
    }

    /// Runs `f` with a connection, on the calling thread (command line
    /// tools; never from an async handler).
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let result = self.connection().and_then(|mut pooled| {
            let result = f(&mut pooled.conn);
            // Discarded by the pool, not handed out again.
            pooled.broken = matches!(&result, Err(e) if e.is_unavailable());
            result
        });
        self.note(&result);
        result
    }

    fn note<T>(&self, result: &Result<T, StorageError>) {
        use std::sync::atomic::Ordering;
        self.probing_since.store(0, Ordering::Relaxed);
        match result {
            Err(e) if e.is_unavailable() => {
                let now = crate::clock::unix_now_ms();
                self.unavailable_at.store(now.max(1), Ordering::Relaxed);
            }
            Ok(_) => self.unavailable_at.store(0, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// For callers that have a fallback: whether to ask the database now.
    /// No while it failed within `window` (answer from the fallback at once
    /// instead of waiting for a connection); after that, yes for one caller
    /// at a time (the probe), until a call succeeds.
    pub fn worth_trying(&self, window: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let at = self.unavailable_at.load(Ordering::Relaxed);
        if at == 0 {
            return true;
        }
        let now = crate::clock::unix_now_ms();
        if now.saturating_sub(at) < window.as_millis() as u64 {
            return false;
        }
        let claimed = self.probing_since.load(Ordering::Relaxed);
        let stale_claim =
            claimed != 0 && now.saturating_sub(claimed) > 2 * self.timeout.as_millis() as u64;
        if claimed != 0 && !stale_claim {
            return false;
        }
        self.probing_since
            .compare_exchange(claimed, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Deletes expired and long-revoked rows, outbox messages sent or
    /// given up before `outbox_before` and audit events older than
    /// `audit_before`, batch by batch until none is left;
    /// `progress` sees each batch. Each batch is one short transaction, so
    /// live traffic is never blocked for long.
    pub async fn purge(
        &self,
        now: i64,
        revoked_before: i64,
        outbox_before: i64,
        audit_before: i64,
        batch: i64,
        mut progress: impl FnMut(sessions::Purged),
    ) -> Result<sessions::Purged, StorageError> {
        let mut total = sessions::Purged::default();
        let mut size = batch;
        loop {
            let (purged, took) = self
                .write_alone(move |conn| {
                    timed_write_transaction(conn, |conn| {
                        let mut purged = sessions::purge_batch(conn, now, revoked_before, size)?;
                        purged.outbox = outbox::purge_batch(conn, outbox_before, size)?;
                        // Used or expired one-time tokens: nothing refers to them.
                        purged.account_tokens = account_tokens::purge_batch(conn, now, size)?;
                        purged.client_tokens = clients::purge_revoked_tokens(conn, now, size)?
                            + clients::purge_admin_tokens(conn, now, size)?;
                        purged.audit_events = audit::purge_batch(conn, audit_before, size)?;
                        Ok(purged)
                    })
                })
                .await?;
            if purged.total() == 0 {
                return Ok(total);
            }
            total.add(&purged);
            progress(purged);
            // SQLite has one writer: live writes get the database between
            // batches, the purge holds it a fifth of the time at most.
            // PostgreSQL locks rows, not the database, so its batches stay
            // full; but each still costs the server CPU and I/O that live
            // requests wait for (at a million users, back-to-back batches
            // took refresh p99 to 2.6 times its idle value): it gets a
            // third of the time.
            let pause = if self.backend == Backend::Sqlite {
                size = next_purge_batch(size, batch, took);
                4 * took
            } else {
                2 * took
            };
            tokio::time::sleep(pause.max(std::time::Duration::from_millis(1))).await;
        }
    }

    /// Runs `f` with a connection on the blocking pool, once a permit is
    /// free (in time).
    pub async fn run<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let permit =
            match tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(e)) => return Err(StorageError::unavailable("database closed", e)),
                Err(_) => {
                    let result = Err(StorageError::unavailable_because(
                        "no database connection free in time",
                    ));
                    self.note(&result);
                    return result;
                }
            };
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            db.run_blocking(f)
        })
        .await
        .map_err(|e| StorageError::unavailable("database task failed", e))?
    }

    /// Runs `f`, which writes. SQLite has one writer at a time: this
    /// process's writes queue for its one writing connection, and those
    /// waiting together commit together, `f` in a savepoint of its own (its
    /// error undoes only its own writes; its result comes back once the
    /// commit kept them), rather than spinning in SQLite's busy handler,
    /// whose sleeps grow to 100 ms; other processes on the same file still
    /// meet `busy_timeout`. PostgreSQL: the same as `run`.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        self.write_as(f, false).await
    }

    /// `write`, never grouped: `f` opens and ends its own transaction.
    async fn write_alone<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        self.write_as(f, true).await
    }

    async fn write_as<T, F>(&self, f: F, alone: bool) -> Result<T, StorageError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.writer {
            None => self.run(f).await,
            Some(writer) => {
                let result = writer.write(f, alone, self.timeout).await;
                self.note(&result);
                result
            }
        }
    }

    /// True when a trivial query succeeds.
    pub async fn ping(&self) -> bool {
        self.run(|conn| Ok(conn.batch_execute("SELECT 1")?))
            .await
            .is_ok()
    }
}

/// Unique-constraint violations are outcomes (a taken username), not faults.
pub(crate) fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

pub(crate) fn is_foreign_key_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _
        )
    )
}

/// A migrated SQLite database in `dir`, one connection, for unit tests.
#[cfg(test)]
pub(crate) fn test_database(dir: &std::path::Path) -> Database {
    let db = Database::new(&DatabaseSettings {
        url: crate::config::Secret::new(dir.join("t.db").display().to_string()),
        pool_size: 1,
        pool_timeout_ms: 5_000,
        sqlite_busy_timeout_ms: 5_000,
    })
    .expect("database");
    db.migrate_blocking().expect("migrations");
    db
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    #[test]
    fn purge_batches_shrink_when_slow_and_grow_back_to_the_limit() {
        let ms = std::time::Duration::from_millis;
        assert_eq!(next_purge_batch(1000, 1000, ms(40)), 500);
        assert_eq!(next_purge_batch(100, 1000, ms(40)), 50);
        assert_eq!(
            next_purge_batch(50, 1000, ms(40)),
            50,
            "a twentieth at least"
        );
        assert_eq!(next_purge_batch(1, 10, ms(40)), 1);
        assert_eq!(next_purge_batch(500, 1000, ms(2)), 500);
        assert_eq!(next_purge_batch(500, 1000, ms(1)), 1000);
        assert_eq!(next_purge_batch(800, 1000, ms(1)), 1000);
        assert_eq!(next_purge_batch(1000, 1000, ms(0)), 1000);
        // A smaller configured limit wins at once.
        assert_eq!(next_purge_batch(1000, 10, ms(2)), 10);
    }

    /// A statement with `LIMIT ?` (what diesel's `.first()` sends), bound
    /// and run again as the statement cache does, on a connection opened
    /// after a `Database`: it must not be compiled again each time.
    #[test]
    fn cached_statements_with_a_bound_limit_are_not_prepared_again() {
        use libsqlite3_sys as ffi;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.sqlite3", dir.path().display());
        Database::new(&DatabaseSettings {
            url: crate::config::Secret::new(&url),
            pool_size: 1,
            pool_timeout_ms: 1000,
            sqlite_busy_timeout_ms: 1000,
        })
        .unwrap();
        let path = std::ffi::CString::new(format!("{}/raw.sqlite3", dir.path().display())).unwrap();
        let sql = c"SELECT name FROM sqlite_schema WHERE name = ? LIMIT ?";
        // SAFETY: plain use of the C API; every handle is finalized/closed.
        unsafe {
            let mut db = std::ptr::null_mut();
            assert_eq!(ffi::sqlite3_open(path.as_ptr(), &mut db), ffi::SQLITE_OK);
            let mut stmt = std::ptr::null_mut();
            let rc = ffi::sqlite3_prepare_v3(
                db,
                sql.as_ptr(),
                -1,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            for _ in 0..3 {
                ffi::sqlite3_bind_text(stmt, 1, c"x".as_ptr(), -1, ffi::SQLITE_TRANSIENT());
                ffi::sqlite3_bind_int64(stmt, 2, 1);
                assert_eq!(ffi::sqlite3_step(stmt), ffi::SQLITE_DONE);
                ffi::sqlite3_reset(stmt);
            }
            let reprepared = ffi::sqlite3_stmt_status(stmt, ffi::SQLITE_STMTSTATUS_REPREPARE, 0);
            ffi::sqlite3_finalize(stmt);
            ffi::sqlite3_close(db);
            assert_eq!(reprepared, 0);
        }
    }

    fn db_error(kind: DatabaseErrorKind, message: &str) -> StorageError {
        Error::DatabaseError(kind, Box::new(message.to_owned())).into()
    }

    #[test]
    fn lost_databases_are_unavailable_not_query_errors() {
        for e in [
            db_error(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection",
            ),
            db_error(
                DatabaseErrorKind::UnableToSendCommand,
                "no connection to the server",
            ),
            db_error(
                DatabaseErrorKind::Unknown,
                "attempt to write a readonly database",
            ),
            db_error(DatabaseErrorKind::Unknown, "database is locked"),
            db_error(
                DatabaseErrorKind::Unknown,
                "terminating connection due to administrator command",
            ),
            Error::BrokenTransactionManager.into(),
            Error::RollbackErrorOnCommit {
                rollback_error: Box::new(Error::BrokenTransactionManager),
                commit_error: Box::new(Error::DatabaseError(
                    DatabaseErrorKind::ClosedConnection,
                    Box::new("server closed the connection".to_owned()),
                )),
            }
            .into(),
        ] {
            assert!(e.is_unavailable(), "{e:?}");
        }
        for e in [
            db_error(DatabaseErrorKind::UniqueViolation, "duplicate key"),
            Error::NotFound.into(),
        ] {
            assert!(matches!(e, StorageError::Query(_)), "{e:?}");
        }
    }

    #[test]
    fn the_cause_is_the_source_not_a_copy_in_the_message() {
        use std::error::Error as _;
        let e = db_error(
            DatabaseErrorKind::ClosedConnection,
            "server closed the connection",
        );
        assert_eq!(
            e.to_string(),
            "database unavailable: the database went away"
        );
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("server closed the connection")
        );
        let e = db_error(DatabaseErrorKind::Unknown, "syntax error");
        assert_eq!(e.to_string(), "database error");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("syntax error")
        );
    }
}

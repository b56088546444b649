//! The only place that knows about diesel: connections, pool, migrations and
//! every query.
//!
//! One binary, two backends: the database URL picks SQLite or PostgreSQL
//! before anything connects; `DbConnection` (diesel's `MultiConnection`) lets
//! one set of queries serve both.

pub mod cache;
pub mod django;
pub mod refresh_tokens;
pub mod schema;
pub mod sessions;
pub mod users;

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

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached, or no connection was free in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migrations failed: {0}")]
    Migration(String),
}

/// Opens connections of the backend the URL names (never guessing), and
/// applies the SQLite pragmas every connection needs.
struct Manager {
    url: DatabaseUrl,
    busy_timeout_ms: u64,
}

impl r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::ConnectionError;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match &self.url {
            DatabaseUrl::Postgres(url) => {
                PgConnection::establish(url).map(DbConnection::Postgresql)
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)?;
                // busy_timeout first: the journal_mode switch itself may wait.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                    self.busy_timeout_ms
                ))
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
    }

    fn has_broken(&self, _conn: &mut DbConnection) -> bool {
        false
    }
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
}

impl Database {
    /// Builds the pool without connecting (connections open on first use, so
    /// the service starts even while the database is briefly away).
    pub fn new(settings: &DatabaseSettings) -> Result<Self, StorageError> {
        let url = DatabaseUrl::parse(settings.url.expose())
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        let backend = match url {
            DatabaseUrl::Sqlite(ref path) => {
                if let Some(dir) = std::path::Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            StorageError::Unavailable(format!(
                                "cannot create {}: {e}",
                                dir.display()
                            ))
                        })?;
                    }
                }
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
                url,
                busy_timeout_ms: settings.sqlite_busy_timeout_ms,
            });
        Ok(Database {
            pool,
            permits: Arc::new(Semaphore::new(size as usize)),
            timeout,
            backend,
        })
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
            .map_err(|e| StorageError::Unavailable(e.to_string()))
    }

    /// Applies the embedded migrations of this backend (blocking).
    pub fn migrate_blocking(&self) -> Result<usize, StorageError> {
        let mut conn = self.connection()?;
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let applied = conn
            .run_pending_migrations(migrations)
            .map_err(|e| StorageError::Migration(e.to_string()))?;
        Ok(applied.len())
    }

    /// Runs `f` with a connection, on the calling thread (command line
    /// tools; never from an async handler).
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut conn = self.connection()?;
        f(&mut conn)
    }

    /// Deletes expired and long-revoked rows batch by batch until none is
    /// left; `progress` sees each batch. Each batch is its own short
    /// statement pair, so live traffic is never blocked for long.
    pub async fn purge(
        &self,
        now: i64,
        revoked_before: i64,
        batch: i64,
        mut progress: impl FnMut(sessions::Purged),
    ) -> Result<sessions::Purged, StorageError> {
        let mut total = sessions::Purged::default();
        loop {
            let purged = self
                .run(move |conn| sessions::purge_batch(conn, now, revoked_before, batch))
                .await?;
            if purged.total() == 0 {
                return Ok(total);
            }
            total.refresh_tokens += purged.refresh_tokens;
            total.sessions += purged.sessions;
            progress(purged);
        }
    }

    /// Runs `f` with a connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, StorageError> + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| StorageError::Unavailable("no database connection free in time".into()))?
            .map_err(|_| StorageError::Unavailable("database closed".into()))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = db.connection()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StorageError::Unavailable(format!("database task failed: {e}")))?
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

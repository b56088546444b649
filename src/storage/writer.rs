//! SQLite's one writing connection, on a thread of its own, committing the
//! writes queued at the same moment together (group commit).
//!
//! SQLite has one writer at a time. Every write of this process goes
//! through one connection, which keeps its page cache warm: a connection's
//! cache is dropped whenever another one has committed since its last
//! transaction, so writes spread over the pool would read every index page
//! from the file again, a cost that grows with the tables. The writes
//! waiting when the thread is free run in one `BEGIN IMMEDIATE`
//! transaction, each inside a savepoint of its own: a write that fails
//! rolls back only itself, and every caller hears its own outcome once the
//! group has committed (or, when the commit fails, that its write was not
//! kept). Callers no longer take turns on a lock from threads of the
//! blocking pool, and one commit serves many writes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::Connection;

use super::{DbConnection, Manager, StorageError};

/// Writes waiting at most; beyond it a write is refused at once (503).
const QUEUE: usize = 1024;

/// Writes committed together at most.
const MAX_GROUP: usize = 64;

/// KiB of pages the writing connection may cache: the index paths every
/// rotation walks, for millions of rows.
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// A queued write, its result kept until the group's commit decides it.
trait Pending: Send {
    /// Whether it runs in a transaction of its own, never grouped.
    fn alone(&self) -> bool;
    /// When it stops being worth running: its caller was told the database
    /// is unavailable by then anyway.
    fn deadline(&self) -> Instant;
    /// Runs the write (inside a savepoint when grouped); true when it found
    /// the connection unusable.
    fn run(&mut self, conn: &mut DbConnection, grouped: bool) -> bool;
    /// Answers the caller: the write's own result if its group committed
    /// (or it failed anyway), else `failure`.
    fn finish(self: Box<Self>, failure: Option<&str>);
}

type Outcome<T> = Result<T, StorageError>;

struct Job<T, F> {
    f: Option<F>,
    alone: bool,
    deadline: Instant,
    result: Option<Outcome<T>>,
    reply: tokio::sync::oneshot::Sender<Outcome<T>>,
}

impl<T, F> Pending for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut DbConnection) -> Outcome<T> + Send,
{
    fn alone(&self) -> bool {
        self.alone
    }

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn run(&mut self, conn: &mut DbConnection, grouped: bool) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        // Nested in the group's transaction, diesel's `transaction` is a
        // savepoint: an error rolls back this write and no other.
        let result = if grouped {
            conn.transaction(f)
        } else {
            f(conn)
        };
        let unusable = matches!(&result, Err(e) if e.is_unavailable());
        self.result = Some(result);
        unusable
    }

    fn finish(self: Box<Self>, failure: Option<&str>) {
        let result = match (self.result, failure) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, failure) => Err(StorageError::unavailable(
                "the write was not committed",
                failure.unwrap_or("it did not run").to_owned(),
            )),
        };
        // The caller may have gone away meanwhile: nothing to tell.
        let _ = self.reply.send(result);
    }
}

/// The handle callers queue writes on; the thread stops when every handle
/// is gone.
pub(super) struct Writer {
    queue: SyncSender<Box<dyn Pending>>,
}

impl Writer {
    pub(super) fn start(opener: Manager) -> Result<Writer, StorageError> {
        let (queue, waiting) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(opener, waiting))
            .map_err(|e| StorageError::unavailable("cannot start the writer thread", e))?;
        Ok(Writer { queue })
    }

    /// Runs `f` on the writing connection, grouped with other writes
    /// unless `alone` (`f` then manages its own transaction); waits in the
    /// queue at most `timeout`.
    pub(super) async fn write<T, F>(&self, f: F, alone: bool, timeout: Duration) -> Outcome<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Outcome<T> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Job {
            f: Some(f),
            alone,
            deadline: Instant::now() + timeout,
            result: None,
            reply,
        });
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StorageError::unavailable_because(
                    "too many writes waiting for the database",
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StorageError::unavailable_because(
                    "the writer thread stopped",
                ))
            }
        }
        answer
            .await
            .unwrap_or_else(|e| Err(StorageError::unavailable("the write was lost", e)))
    }
}

fn serve(opener: Manager, waiting: Receiver<Box<dyn Pending>>) {
    let mut conn: Option<DbConnection> = None;
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match waiting.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let mut group: Vec<Box<dyn Pending>> = vec![first];
        if !group[0].alone() {
            while group.len() < MAX_GROUP {
                match waiting.try_recv() {
                    Ok(job) if job.alone() => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        // Writes whose callers gave up waiting are not run.
        let now = Instant::now();
        let (late, group): (Vec<_>, Vec<_>) = group.into_iter().partition(|j| j.deadline() < now);
        for job in late {
            job.finish(Some("no database connection free in time"));
        }
        if group.is_empty() {
            continue;
        }
        let db = match conn.as_mut() {
            Some(db) => db,
            None => match open(&opener) {
                Ok(db) => conn.insert(db),
                Err(e) => {
                    let failure = e.to_string();
                    group.into_iter().for_each(|job| job.finish(Some(&failure)));
                    continue;
                }
            },
        };
        // A write that panics leaves the transaction in an unknown state:
        // the connection is dropped with it (SQLite rolls back on close).
        let ran = catch_unwind(AssertUnwindSafe(|| run(db, group)));
        match ran {
            Ok(Ok((group, keep))) => {
                if !keep {
                    conn = None;
                }
                group.into_iter().for_each(|job| job.finish(None));
            }
            Ok(Err((group, failure))) => {
                conn = None;
                group.into_iter().for_each(|job| job.finish(Some(&failure)));
            }
            // The group's jobs went with the unwinding: their callers hear
            // that the write was lost.
            Err(_) => conn = None,
        }
    }
}

type Ran = Result<(Vec<Box<dyn Pending>>, bool), (Vec<Box<dyn Pending>>, String)>;

/// Runs `group`: `Ok` with whether the connection may be kept once it
/// committed, `Err` with why not.
fn run(db: &mut DbConnection, mut group: Vec<Box<dyn Pending>>) -> Ran {
    if group.len() == 1 && group[0].alone() {
        let unusable = group[0].run(db, false);
        return Ok((group, !unusable));
    }
    let DbConnection::Sqlite(sqlite) = db else {
        return Err((group, "the writer serves SQLite only".to_owned()));
    };
    // IMMEDIATE: the write lock first, so that a read followed by a write
    // cannot fail on another process's commit in between.
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
        return Err((group, e.to_string()));
    }
    let mut unusable = false;
    for job in group.iter_mut() {
        unusable |= job.run(db, true);
    }
    match <DbConnection as Connection>::TransactionManager::commit_transaction(db) {
        Ok(()) => Ok((group, !unusable)),
        Err(e) => {
            // Still open if the commit failed: the connection goes.
            let _ = <DbConnection as Connection>::TransactionManager::rollback_transaction(db);
            Err((group, e.to_string()))
        }
    }
}

fn open(opener: &Manager) -> Result<DbConnection, StorageError> {
    let mut conn = opener
        .open()
        .map_err(|e| StorageError::unavailable("cannot open the database", e))?;
    conn.batch_execute(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};"))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::super::{Database, DatabaseSettings};
    use super::*;
    use diesel::sql_types::{BigInt, Integer};
    use diesel::RunQueryDsl;

    fn database(dir: &tempfile::TempDir) -> Database {
        let url = format!("sqlite://{}/w.sqlite3", dir.path().display());
        Database::new(&DatabaseSettings {
            url: crate::config::Secret::new(&url),
            pool_size: 2,
            pool_timeout_ms: 2000,
            sqlite_busy_timeout_ms: 1000,
        })
        .unwrap()
    }

    fn insert(conn: &mut DbConnection, n: i32) -> Outcome<()> {
        diesel::sql_query("INSERT INTO t (n) VALUES (?)")
            .bind::<Integer, _>(n)
            .execute(conn)?;
        Ok(())
    }

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        c: i64,
    }

    async fn rows(db: &Database) -> Vec<i64> {
        let mut found = Vec::new();
        for n in 1..=4 {
            let count = db
                .run(move |conn| {
                    Ok(diesel::sql_query("SELECT count(*) AS c FROM t WHERE n = ?")
                        .bind::<Integer, _>(n)
                        .get_result::<Count>(conn)?
                        .c)
                })
                .await
                .unwrap();
            found.push(count);
        }
        found
    }

    /// Writes queued behind a slow one commit together; the one that fails
    /// undoes only its own insert, the one that panics loses its group's
    /// writes (each caller hears it) and the next write finds a working
    /// connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commits_each_write_with_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        db.write(|conn| Ok(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL)")?))
            .await
            .unwrap();
        let slow = db.write(|conn| {
            std::thread::sleep(Duration::from_millis(100));
            insert(conn, 1)
        });
        let failing = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            db.write(|conn| {
                insert(conn, 2)?;
                Err::<(), _>(StorageError::unavailable_because("this write fails"))
            })
            .await
        };
        let kept = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            db.write(|conn| insert(conn, 3)).await
        };
        let (slow, failing, kept) = tokio::join!(slow, failing, kept);
        assert!(slow.is_ok() && kept.is_ok());
        assert!(failing.is_err());
        assert_eq!(rows(&db).await, vec![1, 0, 1, 0]);

        let slow = db.write(|_conn| {
            std::thread::sleep(Duration::from_millis(100));
            Ok(())
        });
        let panicking = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            db.write(|_| -> Outcome<()> { panic!("a write that panics") })
                .await
        };
        let beside = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            db.write(|conn| insert(conn, 4)).await
        };
        let (slow, panicking, beside) = tokio::join!(slow, panicking, beside);
        assert!(slow.is_ok());
        assert!(panicking.is_err() && beside.is_err());
        assert_eq!(
            rows(&db).await,
            vec![1, 0, 1, 0],
            "the panicking group kept nothing"
        );
        db.write(|conn| insert(conn, 4)).await.unwrap();
        assert_eq!(rows(&db).await, vec![1, 0, 1, 1]);
    }
}

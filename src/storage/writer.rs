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
    /// Whether its caller went away (a closed request): not worth running,
    /// and what the caller would have done after it will not happen.
    fn abandoned(&self) -> bool;
    /// Runs the write.
    fn run(&mut self, conn: &mut DbConnection) -> Ran;
    /// Answers the caller: the write's own error if it failed, else its
    /// result if its group committed, else `failure`.
    fn finish(self: Box<Self>, failure: Option<&str>);
}

/// How a write ended.
#[derive(PartialEq)]
enum Ran {
    Ok,
    Failed,
    /// Failed finding the database unavailable: the connection goes.
    Unavailable,
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

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(&mut self, conn: &mut DbConnection) -> Ran {
        let Some(f) = self.f.take() else {
            return Ran::Failed;
        };
        let result = f(conn);
        let ran = match &result {
            Ok(_) => Ran::Ok,
            Err(e) if e.is_unavailable() => Ran::Unavailable,
            Err(_) => Ran::Failed,
        };
        self.result = Some(result);
        ran
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
        // Writes whose callers gave up waiting, or went away, are not run.
        let now = Instant::now();
        let (late, group): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|j| j.deadline() < now || j.abandoned());
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
        match catch_unwind(AssertUnwindSafe(|| run(db, group))) {
            Ok(Group {
                jobs,
                failure,
                keep,
            }) => {
                if !keep {
                    discard(&mut conn);
                }
                jobs.into_iter()
                    .for_each(|job| job.finish(failure.as_deref()));
            }
            // The group's jobs went with the unwinding: their callers hear
            // that the write was lost.
            Err(_) => discard(&mut conn),
        }
    }
}

/// Closes the connection (rolling back whatever it had open); a close
/// that fails must not end the thread every write depends on.
fn discard(conn: &mut Option<DbConnection>) {
    if let Some(db) = conn.take() {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(db)));
    }
}

/// A group after running: `failure` when it did not commit (then no write
/// of it was kept), `keep` whether the connection is fit for more.
struct Group {
    jobs: Vec<Box<dyn Pending>>,
    failure: Option<String>,
    keep: bool,
}

fn run(db: &mut DbConnection, mut jobs: Vec<Box<dyn Pending>>) -> Group {
    let done = |jobs, failure: Option<String>, keep| Group {
        jobs,
        failure,
        keep,
    };
    if jobs.len() == 1 && jobs[0].alone() {
        let ran = jobs[0].run(db);
        return done(jobs, None, ran != Ran::Unavailable);
    }
    let DbConnection::Sqlite(sqlite) = db else {
        return done(jobs, Some("the writer serves SQLite only".into()), false);
    };
    // IMMEDIATE: the write lock first, so that a read followed by a write
    // cannot fail on another process's commit in between. Failing to get
    // it leaves the connection as it was.
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE") {
        let keep = at_depth(db, None);
        return done(jobs, Some(e.to_string()), keep);
    }
    for job in jobs.iter_mut() {
        if let Err(failure) = run_in_savepoint(db, job.as_mut()) {
            // Whatever the group wrote is undone with the connection.
            return done(jobs, Some(failure), false);
        }
    }
    match <DbConnection as Connection>::TransactionManager::commit_transaction(db) {
        Ok(()) => done(jobs, None, true),
        Err(e) => done(jobs, Some(e.to_string()), false),
    }
}

/// Runs `job` inside a savepoint of the group's transaction, so that its
/// failure undoes its own writes only. `Err` when the group cannot go on:
/// the savepoint could not be set or ended, the job found the database
/// unavailable, or the transaction is no longer the group's (SQLite rolls
/// a whole transaction back on some errors, an I/O error or a full disk:
/// the writes after it would then commit one by one, and those before it
/// be lost, whatever their callers were told).
fn run_in_savepoint(db: &mut DbConnection, job: &mut dyn Pending) -> Result<(), String> {
    db.batch_execute("SAVEPOINT write")
        .map_err(|e| e.to_string())?;
    let ran = job.run(db);
    if ran == Ran::Unavailable {
        return Err("a write found the database unavailable".into());
    }
    let end = if ran == Ran::Ok {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    db.batch_execute(end).map_err(|e| e.to_string())?;
    if !at_depth(db, Some(1)) {
        return Err("the group's transaction ended under it".into());
    }
    Ok(())
}

/// Whether diesel's view of the connection is `depth` transactions deep
/// (and not broken).
fn at_depth(db: &mut DbConnection, depth: Option<u32>) -> bool {
    <DbConnection as Connection>::TransactionManager::transaction_manager_status_mut(db)
        .transaction_depth()
        .is_ok_and(|d| d.map(|d| d.get()) == depth)
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

    /// Runs `writes` queued behind a write that holds the writer until they
    /// are all queued (their first poll queues them): they make one group.
    /// The holding write inserts `n`, if any.
    async fn behind<F: std::future::Future>(
        db: &Database,
        n: Option<i32>,
        writes: F,
    ) -> (Outcome<()>, F::Output) {
        let (started, on_start) = tokio::sync::oneshot::channel();
        let (release, on_release) = std::sync::mpsc::channel::<()>();
        let first = db.write(move |conn| {
            let _ = started.send(());
            let _ = on_release.recv();
            n.map_or(Ok(()), |n| insert(conn, n))
        });
        let rest = async {
            on_start.await.unwrap();
            let (out, ()) = tokio::join!(writes, async {
                tokio::task::yield_now().await;
                release.send(()).unwrap();
            });
            out
        };
        tokio::join!(first, rest)
    }

    /// Writes queued behind another commit together; the one that fails
    /// undoes only its own insert, the one that panics loses its group's
    /// writes (each caller hears it), one that ends the group's transaction
    /// under it (as SQLite does itself on an I/O error) loses the group's
    /// writes before it and stops those after it, and the next write finds
    /// a working connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_commits_each_write_with_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        db.write(|conn| Ok(conn.batch_execute("CREATE TABLE t (n INTEGER NOT NULL)")?))
            .await
            .unwrap();

        let failing = db.write(|conn| {
            insert(conn, 2)?;
            Err::<(), _>(StorageError::Query(diesel::result::Error::NotFound))
        });
        let kept = db.write(|conn| insert(conn, 3));
        let (first, (failing, kept)) =
            behind(&db, Some(1), async { tokio::join!(failing, kept) }).await;
        assert!(first.is_ok() && kept.is_ok());
        assert!(matches!(failing, Err(StorageError::Query(_))));
        assert_eq!(rows(&db).await, vec![1, 0, 1, 0]);

        let panicking = db.write(|_| -> Outcome<()> { panic!("a write that panics") });
        let beside = db.write(|conn| insert(conn, 4));
        let (first, (panicking, beside)) =
            behind(&db, None, async { tokio::join!(panicking, beside) }).await;
        assert!(first.is_ok());
        assert!(panicking.is_err() && beside.is_err());
        assert_eq!(
            rows(&db).await,
            vec![1, 0, 1, 0],
            "the panicking group kept nothing"
        );
        db.write(|conn| insert(conn, 4)).await.unwrap();
        assert_eq!(rows(&db).await, vec![1, 0, 1, 1]);

        let before = db.write(|conn| insert(conn, 2));
        let ending = db.write(|conn| Ok(conn.batch_execute("ROLLBACK")?));
        let after = db.write(|conn| insert(conn, 2));
        let (first, (before, ending, after)) =
            behind(&db, None, async { tokio::join!(before, ending, after) }).await;
        assert!(first.is_ok());
        assert!(before.is_err() && ending.is_err() && after.is_err());
        assert_eq!(
            rows(&db).await,
            vec![1, 0, 1, 1],
            "nothing of that group was kept"
        );
        db.write(|conn| insert(conn, 2)).await.unwrap();
        assert_eq!(rows(&db).await, vec![1, 1, 1, 1]);
    }
}

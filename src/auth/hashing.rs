//! The password hashing pool: bcrypt (and imported Django hashes) on
//! dedicated threads, so a login storm queues here instead of taking the
//! async workers or the database's blocking pool.
//!
//! Three defences live here because only the pool sees every check:
//! - a bounded queue (503 beyond it) and, per client address, a bounded
//!   share of it (429 beyond it), so one address cannot starve the others;
//! - a job whose caller has gone (client disconnected) is skipped;
//! - every check takes at least as long as the costliest kind of stored hash
//!   seen (`TimingFloor`), so login time does not tell unknown, native,
//!   imported or older-cost accounts apart (Django's `harden_runtime` idea,
//!   with an idle wait instead of extra CPU). Kinds are timed in thread CPU
//!   time, so a load on the machine (which an attacker can cause) does not
//!   raise every login's wait.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::password::{
    dummy_hash, hash_kind, hash_password, max_accepted_bcrypt_cost, needs_rehash, verify_password,
    HashKind,
};
use super::throttle::client_key;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How the hashing threads are set up.
#[derive(Debug, Clone, Copy)]
pub struct HashingPolicy {
    pub cost: u32,
    pub threads: usize,
    /// Niceness of the hashing threads (0 = as the rest; 19 = lowest).
    pub nice: i32,
    /// Jobs allowed to wait for a thread.
    pub queue: usize,
    /// Jobs one client address may have queued or running at once; `None`:
    /// no per-address share (rate limits off).
    pub per_client: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("too many password checks are waiting")]
    Busy,
    #[error("too many password checks from this address are waiting")]
    ClientBusy,
    #[error("the password hashing pool failed")]
    Failed,
}

/// Per kind of stored hash, moving averages of how long checking it took,
/// in thread CPU time and in wall time; the floor is the costliest kind's
/// wall time, but never more than twice its CPU time. Wall time is what a
/// client sees (a real check of the costliest kind includes its share of
/// scheduling); the CPU bound keeps a load on the machine, which an attacker
/// can cause, from raising every login's wait without limit. Kinds are few
/// (bcrypt costs 4-31, PBKDF2 iteration counts of the imported hashes), so
/// the map stays small.
#[derive(Default)]
pub struct TimingFloor {
    kinds: Mutex<HashMap<HashKind, Averages>>,
}

#[derive(Debug, Clone, Copy)]
struct Averages {
    cpu: Duration,
    wall: Duration,
}

impl TimingFloor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HashKind, Averages>> {
        self.kinds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one measured check (exponential moving averages, 1/8 weight).
    pub fn record(&self, kind: HashKind, cpu: Duration, wall: Duration) {
        if kind == HashKind::Other {
            return;
        }
        let mut kinds = self.lock();
        let average = kinds.entry(kind).or_insert(Averages { cpu, wall });
        average.cpu = (average.cpu * 7 + cpu) / 8;
        average.wall = (average.wall * 7 + wall) / 8;
    }

    /// How long every check should take at least.
    pub fn floor(&self) -> Duration {
        self.lock()
            .values()
            .map(|a| a.wall.min(a.cpu * 2))
            .max()
            .unwrap_or_default()
    }
}

/// Jobs queued or running per client address; an entry leaves the map with
/// its last job.
type Holdings = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One job's place in its client's share; given back when dropped (run,
/// skipped or refused by a full queue).
struct Place {
    holdings: Holdings,
    client: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut map = self.holdings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// The threads run at a lower OS priority (`nice`, Linux): with nothing else
/// to do they hash at full speed, and when token checks want the CPU, the
/// checks win. At most `queue` jobs wait; past that, callers get
/// `PoolError::Busy` at once (503) instead of a growing wait.
pub struct HashingPool {
    cost: u32,
    jobs: std::sync::mpsc::SyncSender<Job>,
    dummy: Arc<OnceLock<String>>,
    per_client: Option<usize>,
    holdings: Holdings,
    timing: Arc<TimingFloor>,
}

/// The outcome of a password check.
pub struct Checked {
    pub matches: bool,
    /// tokend's own hash of the password, when it matched a hash that
    /// `needs_rehash` (an imported or cheaper one).
    pub upgraded: Option<String>,
}

impl HashingPool {
    pub fn new(policy: HashingPolicy) -> Self {
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(policy.queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..policy.threads.max(1) {
            let receiver = receiver.clone();
            let nice = policy.nice;
            let spawned = std::thread::Builder::new()
                .name(format!("tokend-bcrypt-{i}"))
                .spawn(move || {
                    lower_priority(nice);
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        let cost = policy.cost;
        let dummy = Arc::new(OnceLock::new());
        let timing = Arc::new(TimingFloor::default());
        // Prepared in the background so that neither start-up nor the first
        // unknown-user login pays for it; hashing costs what verifying does,
        // so it also seeds the floor.
        let (preparing, seeding) = (dummy.clone(), timing.clone());
        std::thread::spawn(move || {
            let (started, cpu_started) = (Instant::now(), thread_cpu_time());
            let hash = dummy_hash(cost).unwrap_or_default();
            seeding.record(
                HashKind::Bcrypt(cost),
                thread_cpu_time().saturating_sub(cpu_started),
                started.elapsed(),
            );
            let _ = preparing.set(hash);
        });
        HashingPool {
            cost,
            jobs,
            dummy,
            per_client: policy.per_client,
            holdings: Arc::default(),
            timing,
        }
    }

    /// Takes a place in `client`'s share of the queue.
    fn place(&self, client: IpAddr) -> Result<Option<Place>, PoolError> {
        let Some(share) = self.per_client else {
            return Ok(None);
        };
        let client = client_key(client);
        let mut map = self.holdings.lock().unwrap_or_else(|e| e.into_inner());
        let held = map.entry(client).or_insert(0);
        if *held >= share.max(1) {
            return Err(PoolError::ClientBusy);
        }
        *held += 1;
        drop(map);
        Ok(Some(Place {
            holdings: self.holdings.clone(),
            client,
        }))
    }

    async fn run<T: Send + 'static>(
        &self,
        client: IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let place = self.place(client)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _place = place;
            // The caller went away while this waited (its request was
            // dropped): nobody would read the answer.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(PoolError::Busy),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(PoolError::Failed),
        }
        rx.await.map_err(|_| PoolError::Failed)
    }

    /// tokend's hash of a new password.
    pub async fn hash(&self, client: IpAddr, password: String) -> Result<String, PoolError> {
        let cost = self.cost;
        self.run(client, move || hash_password(&password, cost))
            .await?
            .map_err(|_| PoolError::Failed)
    }

    /// Checks `password` against `stored`, or against a dummy hash of the
    /// configured cost when there is no user. Answers no sooner than the
    /// timing floor, whatever the stored hash. With `upgrade`, a match with
    /// a hash that `needs_rehash` also brings tokend's hash of the password
    /// (same job, after the measured check).
    pub async fn check(
        &self,
        client: IpAddr,
        password: String,
        stored: Option<String>,
        upgrade: bool,
    ) -> Result<Checked, PoolError> {
        let cost = self.cost;
        let max_cost = max_accepted_bcrypt_cost(cost);
        let (dummy, timing) = (self.dummy.clone(), self.timing.clone());
        let (checked, took) = self
            .run(client, move || {
                let started = Instant::now();
                let cpu_started = thread_cpu_time();
                let (kind, matches) = match &stored {
                    Some(hash) => (hash_kind(hash), verify_password(&password, hash, max_cost)),
                    None => {
                        let hash = dummy.get_or_init(|| dummy_hash(cost).unwrap_or_default());
                        verify_password(&password, hash, max_cost);
                        (HashKind::Bcrypt(cost), false)
                    }
                };
                let took = started.elapsed();
                // Hashes tokend would not check at full cost do not set the
                // floor (a bcrypt above the cap was refused unchecked).
                if !matches!(kind, HashKind::Bcrypt(c) if c > max_cost) {
                    timing.record(kind, thread_cpu_time().saturating_sub(cpu_started), took);
                }
                let upgraded = match stored {
                    Some(hash) if matches && upgrade && needs_rehash(&hash, cost) => {
                        hash_password(&password, cost).ok()
                    }
                    _ => None,
                };
                (Checked { matches, upgraded }, took)
            })
            .await?;
        let floor = self.timing.floor();
        if took < floor {
            tokio::time::sleep(floor - took).await;
        }
        Ok(checked)
    }

    /// The time every password check currently takes at least.
    pub fn timing_floor(&self) -> Duration {
        self.timing.floor()
    }
}

/// CPU time the calling thread has used: what a hash costs, whatever else
/// the machine is doing (wall time where the clock is not available).
fn thread_cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec owned by this frame.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
        }
    }
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per
/// thread). Best effort: a failure leaves the thread as it was.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain system calls on the calling thread, no memory shared.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice.min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn pool(threads: usize, queue: usize, per_client: Option<usize>) -> HashingPool {
        HashingPool::new(HashingPolicy {
            cost: 4,
            threads,
            nice: 0,
            queue,
            per_client,
        })
    }

    async fn verify(p: &HashingPool, client: IpAddr, pw: &str, stored: Option<&str>) -> bool {
        p.check(client, pw.into(), stored.map(str::to_owned), false)
            .await
            .unwrap()
            .matches
    }

    #[tokio::test]
    async fn hashes_and_verifies_off_the_async_workers() {
        let p = pool(2, 8, None);
        let hash = p.hash(A, "pw".into()).await.unwrap();
        assert!(verify(&p, A, "pw", Some(&hash)).await);
        assert!(!verify(&p, A, "px", Some(&hash)).await);
        assert!(!verify(&p, A, "pw", None).await);
    }

    #[tokio::test]
    async fn upgrades_cheaper_hashes_on_a_match_only() {
        let p = pool(1, 8, None);
        let cheap = hash_password("pw", 4).unwrap();
        let plain = format!("bcrypt${}", bcrypt::hash("pw", 4).unwrap());
        let checked = p.check(A, "pw".into(), Some(plain.clone()), true).await;
        let upgraded = checked.unwrap().upgraded.expect("plain bcrypt is upgraded");
        assert!(upgraded.starts_with("bcrypt_sha256$$2b$04$"));
        let wrong = p.check(A, "px".into(), Some(plain), true).await.unwrap();
        assert!(!wrong.matches && wrong.upgraded.is_none());
        let own = p.check(A, "pw".into(), Some(cheap), true).await.unwrap();
        assert!(own.matches && own.upgraded.is_none());
    }

    /// Polled together: every job is offered before any finishes.
    async fn burst(
        p: &HashingPool,
        clients: &[IpAddr],
        hash: &str,
    ) -> Vec<Result<bool, PoolError>> {
        futures::future::join_all(clients.iter().map(|c| async move {
            p.check(*c, "pw".into(), Some(hash.to_owned()), false)
                .await
                .map(|c| c.matches)
        }))
        .await
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let p = HashingPool::new(HashingPolicy {
            cost: 10,
            threads: 1,
            nice: 0,
            queue: 1,
            per_client: None,
        });
        let hash = hash_password("pw", 10).unwrap();
        let results = burst(&p, &[A; 10], &hash).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(PoolError::Busy)))
            .count();
        let done = results.iter().filter(|r| matches!(r, Ok(true))).count();
        assert!(busy >= 8 && done >= 1, "busy {busy}, done {done}");
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let p = HashingPool::new(HashingPolicy {
            cost: 10,
            threads: 1,
            nice: 0,
            queue: 64,
            per_client: Some(3),
        });
        let hash = hash_password("pw", 10).unwrap();
        let mut clients = vec![A; 20];
        clients.push(B);
        let results = burst(&p, &clients, &hash).await;
        let from_a = &results[..20];
        let client_busy = from_a
            .iter()
            .filter(|r| matches!(r, Err(PoolError::ClientBusy)))
            .count();
        // Three of A's checks hold places; a place given back while the
        // burst is still being offered (a busy machine) may let one more in.
        assert!(
            (14..=17).contains(&client_busy),
            "{client_busy} of A's 20 checks refused"
        );
        assert!(matches!(results[20], Ok(true)), "B still gets a place");
        assert!(p.holdings.lock().unwrap().is_empty(), "places given back");
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped() {
        let p = HashingPool::new(HashingPolicy {
            cost: 12,
            threads: 1,
            nice: 0,
            queue: 8,
            per_client: Some(8),
        });
        let hash = hash_password("pw", 12).unwrap();
        // Occupies the only thread; its cost-12 check takes a while.
        let mut first = Box::pin(p.check(A, "pw".into(), Some(hash.clone()), false));
        assert!(futures::poll!(first.as_mut()).is_pending());
        let queued: Vec<_> = (0..5)
            .map(|_| Box::pin(p.check(A, "pw".into(), Some(hash.clone()), false)))
            .collect();
        let started = Instant::now();
        // Poll the queued ones once, so their jobs are submitted, then drop them.
        for mut q in queued {
            let polled = futures::poll!(q.as_mut());
            assert!(polled.is_pending());
        }
        assert!(first.await.unwrap().matches);
        let one = started.elapsed();
        // The five abandoned checks must not run: the next one runs right away.
        let next = Instant::now();
        assert!(verify(&p, B, "pw", Some(&hash)).await);
        assert!(
            next.elapsed() < one * 3,
            "abandoned jobs ran: {:?} vs one check {:?}",
            next.elapsed(),
            one
        );
    }

    #[tokio::test]
    async fn cheaper_checks_wait_for_the_floor() {
        let p = pool(1, 8, None);
        // As if a costlier kind (an imported PBKDF2 hash) had been seen.
        p.timing.record(
            HashKind::Pbkdf2(1_000_000),
            Duration::from_millis(150),
            Duration::from_millis(150),
        );
        let started = Instant::now();
        assert!(!verify(&p, A, "pw", Some("!unusable")).await);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(p.timing_floor() >= Duration::from_millis(100));
    }

    #[test]
    fn a_loaded_machine_cannot_raise_the_floor_without_limit() {
        let floor = TimingFloor::default();
        let ms = Duration::from_millis;
        floor.record(HashKind::Bcrypt(12), ms(250), ms(260));
        assert_eq!(floor.floor(), ms(260), "the wall time a client sees");
        // Checks slowed down tenfold by a flood of other requests.
        for _ in 0..50 {
            floor.record(HashKind::Pbkdf2(1_000_000), ms(100), ms(1000));
        }
        assert!(floor.floor() <= ms(260), "{:?}", floor.floor());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_niced() {
        let p = HashingPool::new(HashingPolicy {
            cost: 4,
            threads: 1,
            nice: 7,
            queue: 4,
            per_client: None,
        });
        // The thread exists once it ran a job.
        p.hash(A, "pw".into()).await.unwrap();
        let mut nices = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "tokend-bcrypt-0" {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap();
                let fields: Vec<&str> = stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .collect();
                // Fields after the comm: state is [0], nice is field 19 of
                // stat, i.e. index 16 here.
                nices.push(fields[16].parse::<i32>().unwrap());
            }
        }
        assert!(nices.contains(&7), "{nices:?}");
    }
}

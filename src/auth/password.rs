//! Password hashing: bcrypt over a SHA-256 pre-hash.
//!
//! bcrypt reads only the first 72 bytes of its input, and a 128-character
//! password can be 512 bytes of UTF-8. Rather than truncate silently or refuse
//! long passwords, every password is pre-hashed: bcrypt(hex(sha256(password))),
//! 64 ASCII bytes, so every character counts. The stored form is exactly
//! Django's `BCryptSHA256PasswordHasher` format (`bcrypt_sha256$$2b$12$…`),
//! so hashes move between tokend and Django unchanged.
//!
//! These functions are CPU-bound (~200-280 ms at cost 12): call them through
//! `HashingPool`, never on an async worker.

use sha2::{Digest, Sha256};

const PREFIX: &str = "bcrypt_sha256$";

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(#[from] bcrypt::BcryptError);

fn prehash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

pub fn hash_password(password: &str, cost: u32) -> Result<String, HashError> {
    let inner = bcrypt::hash(prehash(password), cost)?;
    Ok(format!("{PREFIX}{inner}"))
}

/// The most PBKDF2 iterations tokend will run for one check (Django 5.2
/// uses 1,000,000); a stored hash asking for more never matches, so a
/// tampered row cannot pin a thread.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// True when `password` matches `stored`: tokend's (and Django's)
/// `bcrypt_sha256$…`, or, for users imported from Django, `pbkdf2_sha256$…`
/// and `bcrypt$…`. An unknown or malformed stored hash never matches
/// (Django's unusable passwords, `!…`, included).
pub fn verify_password(password: &str, stored: &str) -> bool {
    if let Some(inner) = stored.strip_prefix(PREFIX) {
        return bcrypt::verify(prehash(password), inner).unwrap_or(false);
    }
    if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
        return verify_pbkdf2_sha256(password, rest);
    }
    if let Some(inner) = stored.strip_prefix("bcrypt$") {
        // Django's BCryptPasswordHasher: bcrypt of the raw password.
        return bcrypt::verify(password, inner).unwrap_or(false);
    }
    false
}

/// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`.
fn verify_pbkdf2_sha256(password: &str, rest: &str) -> bool {
    use base64::Engine;
    use subtle::ConstantTimeEq;
    let mut parts = rest.splitn(3, '$');
    let (Some(iterations), Some(salt), Some(expected)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(iterations) = iterations.parse::<u32>() else {
        return false;
    };
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
        return false;
    }
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(expected) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    let mut derived = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(
        password.as_bytes(),
        salt.as_bytes(),
        iterations,
        &mut derived,
    );
    derived.ct_eq(&expected).into()
}

/// Whether `verify_password` can ever match this stored hash.
pub fn is_checkable_hash(stored: &str) -> bool {
    ["bcrypt_sha256$", "pbkdf2_sha256$", "bcrypt$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

/// Whether a hash that just matched should be replaced by tokend's own
/// (`bcrypt_sha256` at the configured cost): imported Django formats, and
/// bcrypt cheaper than configured.
pub fn needs_rehash(stored: &str, cost: u32) -> bool {
    match stored.strip_prefix(PREFIX) {
        // "$2b$12$…": the cost is the third field.
        Some(inner) => inner
            .split('$')
            .nth(2)
            .and_then(|c| c.parse::<u32>().ok())
            .is_none_or(|stored_cost| stored_cost < cost),
        None => true,
    }
}

/// A hash to verify against when the user does not exist, so that an unknown
/// username costs the same time as a wrong password.
pub fn dummy_hash(cost: u32) -> Result<String, HashError> {
    hash_password("tokend dummy password for unknown users", cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password("correct horse", 4).unwrap();
        assert!(h.starts_with("bcrypt_sha256$$2b$04$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
    }

    #[test]
    fn no_silent_truncation_past_72_bytes() {
        let base = "x".repeat(100);
        let h = hash_password(&format!("{base}a"), 4).unwrap();
        assert!(verify_password(&format!("{base}a"), &h));
        assert!(!verify_password(&format!("{base}b"), &h));
        let long = "é".repeat(128);
        let h = hash_password(&long, 4).unwrap();
        assert!(verify_password(&long, &h));
        assert!(!verify_password(&"é".repeat(127), &h));
    }

    #[test]
    fn verifies_django_bcrypt_sha256_hashes() {
        // Made the way Django 5.2 BCryptSHA256PasswordHasher does (python bcrypt 5, rounds=4) for "pw12345".
        let django = "bcrypt_sha256$$2b$04$1CCZOZ8ZvSlmYr.4/YDzxuBOlJAalKqa0DZOwqGsmwyvKVOJsHjGC";
        assert!(verify_password("pw12345", django));
        assert!(!verify_password("pw1234", django));
    }

    #[test]
    fn verifies_imported_django_hashes() {
        // Django 5.2 PBKDF2PasswordHasher, iterations lowered for the test:
        // make_password("pw12345", salt="saltsaltsalt", hasher) with 1000
        // iterations, computed with Python's hashlib.pbkdf2_hmac.
        let pbkdf2 = "pbkdf2_sha256$1000$saltsaltsalt$jFZmTjBke/LAa4mrcNNstA5/E3KdhUzArvjnnpK/f6c=";
        assert!(verify_password("pw12345", pbkdf2), "pbkdf2");
        assert!(!verify_password("pw1234", pbkdf2));
        assert!(needs_rehash(pbkdf2, 12));
        // Abuse: absurd iteration counts and malformed fields never match.
        for bad in [
            "pbkdf2_sha256$4000000000$salt$jFZmTjBke/LAa4mrcNNstA5/E3KdhUzArvjnnpK/f6c=",
            "pbkdf2_sha256$0$salt$x",
            "pbkdf2_sha256$1000$salt",
            "pbkdf2_sha256$1000$salt$not base64",
            "!unusable",
        ] {
            assert!(!verify_password("pw12345", bad), "{bad}");
        }
        // Django's plain BCryptPasswordHasher.
        let plain = format!("bcrypt${}", bcrypt::hash("pw12345", 4).unwrap());
        assert!(verify_password("pw12345", &plain));
        assert!(needs_rehash(&plain, 4));
        // tokend's own: only when cheaper than configured.
        let own = hash_password("pw12345", 5).unwrap();
        assert!(!needs_rehash(&own, 5));
        assert!(!needs_rehash(&own, 4));
        assert!(needs_rehash(&own, 6));
    }

    #[test]
    fn malformed_hashes_never_match() {
        assert!(!verify_password("x", ""));
        assert!(!verify_password("x", "bcrypt_sha256$garbage"));
        assert!(!verify_password("x", "pbkdf2_sha256$1$salt$hash"));
    }
}

/// Runs bcrypt on its own threads (`threads` of them), so a login storm
/// queues here instead of taking the async workers or the database's
/// blocking pool. The threads run at a lower OS priority (`nice`, Linux):
/// with nothing else to do they hash at full speed, and when token checks
/// want the CPU, the checks win. At most `queue` jobs wait; past that,
/// callers get `PoolError::Busy` at once (503) instead of a growing wait.
pub struct HashingPool {
    cost: u32,
    jobs: std::sync::mpsc::SyncSender<Job>,
    dummy: std::sync::Arc<std::sync::OnceLock<String>>,
}

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
}

impl HashingPool {
    pub fn new(policy: HashingPolicy) -> Self {
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(policy.queue.max(1));
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
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
        let dummy = std::sync::Arc::new(std::sync::OnceLock::new());
        // Prepared in the background so that neither start-up nor the first
        // unknown-user login pays for it.
        let preparing = dummy.clone();
        std::thread::spawn(move || {
            preparing.get_or_init(|| dummy_hash(cost).unwrap_or_default());
        });
        HashingPool { cost, jobs, dummy }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(PoolError::Busy),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(PoolError::Failed),
        }
        rx.await.map_err(|_| PoolError::Failed)
    }

    pub async fn hash(&self, password: String) -> Result<String, PoolError> {
        let cost = self.cost;
        self.run(move || hash_password(&password, cost))
            .await?
            .map_err(|_| PoolError::Failed)
    }

    /// Verifies as `verify`; on a match with a hash that `needs_rehash`,
    /// also returns tokend's hash of the password (same job, same thread).
    pub async fn verify_upgrading(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<(bool, Option<String>), PoolError> {
        let cost = self.cost;
        let dummy = self.dummy.clone();
        self.run(move || match stored {
            Some(hash) => {
                if !verify_password(&password, &hash) {
                    return (false, None);
                }
                let upgraded = needs_rehash(&hash, cost)
                    .then(|| hash_password(&password, cost).ok())
                    .flatten();
                (true, upgraded)
            }
            None => {
                let hash = dummy.get_or_init(|| dummy_hash(cost).unwrap_or_default());
                verify_password(&password, hash);
                (false, None)
            }
        })
        .await
    }

    /// Verifies against `stored`, or against a dummy hash of the same cost
    /// when there is no user, so both cases take the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PoolError> {
        let cost = self.cost;
        let dummy = self.dummy.clone();
        self.run(move || match stored {
            Some(hash) => verify_password(&password, &hash),
            None => {
                let hash = dummy.get_or_init(|| dummy_hash(cost).unwrap_or_default());
                verify_password(&password, hash);
                false
            }
        })
        .await
    }
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

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("too many password checks are waiting")]
    Busy,
    #[error("the password hashing pool failed")]
    Failed,
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    fn pool(threads: usize, queue: usize, nice: i32) -> HashingPool {
        HashingPool::new(HashingPolicy {
            cost: 4,
            threads,
            nice,
            queue,
        })
    }

    #[tokio::test]
    async fn hashes_and_verifies_off_the_async_workers() {
        let p = pool(2, 8, 0);
        let hash = p.hash("pw".into()).await.unwrap();
        assert!(p.verify("pw".into(), Some(hash.clone())).await.unwrap());
        assert!(!p.verify("px".into(), Some(hash)).await.unwrap());
        assert!(!p.verify("pw".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once() {
        let p = HashingPool::new(HashingPolicy {
            cost: 10,
            threads: 1,
            nice: 0,
            queue: 1,
        });
        let hash = hash_password("pw", 10).unwrap();
        let results = futures_like_join(&p, &hash, 10).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(PoolError::Busy)))
            .count();
        let done = results.iter().filter(|r| matches!(r, Ok(true))).count();
        assert!(busy >= 8 && done >= 1, "busy {busy}, done {done}");
    }

    async fn futures_like_join(
        p: &HashingPool,
        hash: &str,
        n: usize,
    ) -> Vec<Result<bool, PoolError>> {
        // Polled together: every job is offered before any finishes.
        futures::future::join_all((0..n).map(|_| p.verify("pw".into(), Some(hash.to_owned()))))
            .await
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_niced() {
        let p = pool(1, 4, 7);
        // The thread exists once it ran a job.
        p.hash("pw".into()).await.unwrap();
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

//! Brute-force limits: attempts per client IP (governor's GCRA limiters) and
//! an exponential back-off per (username, client IP) after repeated failed
//! logins.
//!
//! The back-off is keyed by username *and* IP so that an attacker cannot
//! lock a real user out: the user's own address is not slowed by failures
//! elsewhere, and no lock lasts longer than `max_backoff_secs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub login_per_ip_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    /// Failed logins (per username and IP) before the back-off starts.
    pub free_failures: u32,
    pub max_backoff_secs: u64,
}

/// `Err(retry_after)` when the caller must wait.
pub type Verdict = Result<(), Duration>;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Entries beyond this many are pruned of idle ones (bounded memory under a
/// spray of usernames).
const PRUNE_ABOVE: usize = 50_000;

pub struct Throttle {
    settings: ThrottleSettings,
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    failures: Mutex<HashMap<(String, IpAddr), Failures>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Self {
        Throttle {
            settings,
            login: DefaultKeyedRateLimiter::keyed(per_minute(settings.login_per_ip_per_minute)),
            register: DefaultKeyedRateLimiter::keyed(per_minute(
                settings.register_per_ip_per_minute,
            )),
            clock: DefaultClock::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Verdict {
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// One login attempt from `ip`.
    pub fn login_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.login, ip)
    }

    /// One registration attempt from `ip`.
    pub fn register_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.register, ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Failures>> {
        // A poisoned map only holds counters: keep using it.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `username` may try a password from `ip` now.
    pub fn may_try(&self, username: &str, ip: IpAddr, now: Instant) -> Verdict {
        match self
            .lock()
            .get(&(username.to_owned(), ip))
            .and_then(|f| f.locked_until)
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// A failed login: after `free_failures` of them, each further failure
    /// locks this (username, IP) for 1, 2, 4… seconds, at most
    /// `max_backoff_secs`.
    pub fn failed(&self, username: &str, ip: IpAddr, now: Instant) {
        let mut map = self.lock();
        if map.len() > PRUNE_ABOVE {
            let idle = Duration::from_secs(self.settings.max_backoff_secs.max(60));
            map.retain(|_, f| now.saturating_duration_since(f.last) < idle);
        }
        let entry = map.entry((username.to_owned(), ip)).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= self.settings.free_failures {
            let exponent = (entry.count - self.settings.free_failures).min(30);
            let secs = (1u64 << exponent).min(self.settings.max_backoff_secs.max(1));
            entry.locked_until = Some(now + Duration::from_secs(secs));
        }
    }

    /// A successful login clears the back-off of this (username, IP).
    pub fn succeeded(&self, username: &str, ip: IpAddr) {
        self.lock().remove(&(username.to_owned(), ip));
    }
}

/// Whole seconds to announce in `Retry-After` (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(free: u32, max: u64) -> Throttle {
        Throttle::new(ThrottleSettings {
            login_per_ip_per_minute: 3,
            register_per_ip_per_minute: 1,
            free_failures: free,
            max_backoff_secs: max,
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn per_ip_quotas() {
        let t = throttle(5, 900);
        assert!((0..3).all(|_| t.login_attempt(A).is_ok()));
        let wait = t.login_attempt(A).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            t.login_attempt(B).is_ok(),
            "other addresses are not affected"
        );
        assert!(t.register_attempt(A).is_ok());
        assert!(t.register_attempt(A).is_err());
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        let t = throttle(2, 4);
        let now = Instant::now();
        t.failed("alice", A, now);
        assert!(t.may_try("alice", A, now).is_ok(), "free failures");
        t.failed("alice", A, now);
        assert_eq!(t.may_try("alice", A, now), Err(Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert!(t.may_try("alice", A, later).is_ok(), "not a permanent lock");
        t.failed("alice", A, later);
        assert_eq!(t.may_try("alice", A, later), Err(Duration::from_secs(2)));
        let later = later + Duration::from_secs(2);
        t.failed("alice", A, later);
        t.failed("alice", A, later);
        assert_eq!(
            t.may_try("alice", A, later),
            Err(Duration::from_secs(4)),
            "capped"
        );
    }

    #[test]
    fn back_off_is_per_username_and_address_and_reset_by_success() {
        let t = throttle(1, 900);
        let now = Instant::now();
        t.failed("alice", A, now);
        assert!(t.may_try("alice", A, now).is_err());
        assert!(
            t.may_try("alice", B, now).is_ok(),
            "the real user elsewhere is not locked out"
        );
        assert!(t.may_try("bob", A, now).is_ok());
        t.succeeded("alice", A);
        assert!(t.may_try("alice", A, now).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}

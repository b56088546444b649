//! Brute-force limits: attempts per client address (governor's GCRA
//! limiters) and an exponential back-off per (subject, client address) after
//! repeated failed guesses (login and old-password checks share the
//! username's entries; introspection secrets have their own).
//!
//! The back-off is keyed by subject *and* address so that an attacker cannot
//! lock a real user out: the user's own address is not slowed by failures
//! elsewhere, and no lock lasts longer than `max_backoff_secs`. Guesses are
//! reserved before the password is checked (`begin_guess`), so a burst of
//! simultaneous guesses evaluates no more than the free ones.
//!
//! Addresses are keyed as clients are allocated them: IPv4 by address, IPv6
//! by /64 (one host usually holds a whole /64).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub login_per_ip_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    /// Failed guesses (per subject and address) before the back-off starts.
    pub free_failures: u32,
    pub max_backoff_secs: u64,
}

/// `Err(retry_after)` when the caller must wait.
pub type Verdict = Result<(), Duration>;

/// The address a limit is keyed by: IPv4 as is (IPv4-mapped IPv6 too),
/// IPv6 by its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The address that stands for "any address": per-subject entries that
/// count guesses from everywhere.
pub const ANY_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Guesses reserved and not yet judged.
    in_flight: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Entries beyond this many are pruned of idle ones (bounded memory under a
/// spray of usernames or addresses).
const PRUNE_ABOVE: usize = 50_000;
/// Rate-limiter state is pruned of addresses back at a full quota every
/// this many checks.
const LIMITER_PRUNE_EVERY: u64 = 4096;

type Key = (String, IpAddr);

pub struct Throttle {
    settings: ThrottleSettings,
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    checks: AtomicU64,
    failures: Mutex<HashMap<Key, Failures>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// A reserved guess: judge it with `failed` or `succeeded`; dropped without
/// a verdict (the check could not run: 503, a cancelled request), it only
/// frees its reservation.
#[must_use]
pub struct Guess<'a> {
    throttle: &'a Throttle,
    keys: Vec<Key>,
}

impl Guess<'_> {
    /// A wrong guess: after `free_failures` of them, each further failure
    /// locks every key of this guess for 1, 2, 4… seconds, at most
    /// `max_backoff_secs`.
    pub fn failed(mut self, now: Instant) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.judge(&keys, Some(now));
    }

    /// A right guess: clears the back-off of its keys.
    pub fn succeeded(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.judge(&keys, None);
    }
}

impl Drop for Guess<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut map = self.throttle.lock();
        for key in &self.keys {
            if let Some(entry) = map.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }
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
            checks: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Verdict {
        if self.checks.fetch_add(1, Ordering::Relaxed) % LIMITER_PRUNE_EVERY == 0 {
            self.prune_limiters();
        }
        limiter
            .check_key(&client_key(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets addresses whose quota is full again (their state is the same
    /// as never seen): keeps the limiters' memory bounded by the addresses
    /// active within a minute.
    fn prune_limiters(&self) {
        for limiter in [&self.login, &self.register] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Addresses the rate limiters hold state for.
    pub fn tracked_addresses(&self) -> usize {
        self.login.len() + self.register.len()
    }

    /// One login (or other password) attempt from `ip`.
    pub fn login_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.login, ip)
    }

    /// One registration attempt from `ip`.
    pub fn register_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.register, ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        // A poisoned map only holds counters: keep using it.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves one guess for `subject` from `ip` (the user's own address
    /// entry) and, with `per_subject`, also for `subject` from anywhere.
    /// Refused while any of these is backing off, or when the guesses
    /// already in flight would use up the free ones: beyond them, one guess
    /// at a time.
    pub fn begin_guess(
        &self,
        subject: &str,
        ip: IpAddr,
        per_subject: bool,
        now: Instant,
    ) -> Result<Guess<'_>, Duration> {
        let mut keys = vec![(subject.to_owned(), client_key(ip))];
        if per_subject {
            keys.push((subject.to_owned(), ANY_ADDRESS));
        }
        let mut map = self.lock();
        if map.len() > PRUNE_ABOVE {
            let idle = Duration::from_secs(self.settings.max_backoff_secs.max(60));
            map.retain(|_, f| f.in_flight > 0 || now.saturating_duration_since(f.last) < idle);
        }
        let free = self.settings.free_failures;
        for key in &keys {
            if let Some(f) = map.get(key) {
                if let Some(until) = f.locked_until.filter(|until| *until > now) {
                    return Err(until - now);
                }
                if f.in_flight > 0 && f.count.saturating_add(f.in_flight) >= free {
                    // The outcome of the guesses under way decides the next wait.
                    return Err(Duration::from_secs(1));
                }
            }
        }
        for key in &keys {
            let entry = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                in_flight: 0,
                locked_until: None,
                last: now,
            });
            entry.in_flight += 1;
            entry.last = now;
        }
        drop(map);
        Ok(Guess {
            throttle: self,
            keys,
        })
    }

    /// Records the verdict of a reserved guess: `Some(now)` a failure,
    /// `None` a success.
    fn judge(&self, keys: &[Key], failed_at: Option<Instant>) {
        let mut map = self.lock();
        for key in keys {
            let Some(entry) = map.get_mut(key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            match failed_at {
                Some(now) => {
                    entry.count = entry.count.saturating_add(1);
                    entry.last = now;
                    if entry.count >= self.settings.free_failures {
                        let exponent = (entry.count - self.settings.free_failures).min(30);
                        let secs = (1u64 << exponent).min(self.settings.max_backoff_secs.max(1));
                        entry.locked_until = Some(now + Duration::from_secs(secs));
                    }
                }
                None => {
                    entry.count = 0;
                    entry.locked_until = None;
                }
            }
            if entry.in_flight == 0 && entry.count == 0 {
                map.remove(key);
            }
        }
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

    fn fail(t: &Throttle, who: &str, ip: IpAddr, now: Instant) {
        t.begin_guess(who, ip, false, now)
            .expect("may guess")
            .failed(now);
    }

    fn may_try(t: &Throttle, who: &str, ip: IpAddr, now: Instant) -> Verdict {
        t.begin_guess(who, ip, false, now).map(drop)
    }

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
    fn ipv6_clients_are_keyed_by_their_64() {
        let t = throttle(5, 900);
        let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, last));
        assert!((1..=3).all(|i| t.login_attempt(host(i)).is_ok()));
        assert!(t.login_attempt(host(99)).is_err(), "same /64, same quota");
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert!(t.login_attempt(other).is_ok());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), A);
    }

    #[test]
    fn idle_limiter_state_is_pruned() {
        let t = Throttle::new(ThrottleSettings {
            login_per_ip_per_minute: 600,
            register_per_ip_per_minute: 600,
            free_failures: 5,
            max_backoff_secs: 900,
        });
        for i in 0..500u32 {
            let _ = t.login_attempt(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(t.tracked_addresses() >= 500);
        // One cell of a 600/minute quota comes back after 100 ms; governor
        // keeps a key until its state is a full interval older than that.
        std::thread::sleep(Duration::from_millis(300));
        t.prune_limiters();
        assert_eq!(t.tracked_addresses(), 0);
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        let t = throttle(2, 4);
        let now = Instant::now();
        fail(&t, "alice", A, now);
        assert!(may_try(&t, "alice", A, now).is_ok(), "free failures");
        fail(&t, "alice", A, now);
        assert_eq!(may_try(&t, "alice", A, now), Err(Duration::from_secs(1)));
        let later = now + Duration::from_secs(1);
        assert!(
            may_try(&t, "alice", A, later).is_ok(),
            "not a permanent lock"
        );
        fail(&t, "alice", A, later);
        assert_eq!(may_try(&t, "alice", A, later), Err(Duration::from_secs(2)));
        let later = later + Duration::from_secs(2);
        fail(&t, "alice", A, later);
        let later = later + Duration::from_secs(4);
        fail(&t, "alice", A, later);
        assert_eq!(
            may_try(&t, "alice", A, later),
            Err(Duration::from_secs(4)),
            "capped"
        );
    }

    #[test]
    fn back_off_is_per_username_and_address_and_reset_by_success() {
        let t = throttle(1, 900);
        let now = Instant::now();
        fail(&t, "alice", A, now);
        assert!(may_try(&t, "alice", A, now).is_err());
        assert!(
            may_try(&t, "alice", B, now).is_ok(),
            "the real user elsewhere is not locked out"
        );
        assert!(may_try(&t, "bob", A, now).is_ok());
        let later = now + Duration::from_secs(1);
        t.begin_guess("alice", A, false, later)
            .expect("lock over")
            .succeeded();
        assert!(may_try(&t, "alice", A, later).is_ok());
        fail(&t, "alice", A, later);
        assert!(may_try(&t, "alice", A, later).is_err(), "counting anew");
    }

    #[test]
    fn simultaneous_guesses_use_up_the_free_ones_in_flight() {
        let t = throttle(5, 900);
        let now = Instant::now();
        let reserved: Vec<Guess> = (0..30)
            .filter_map(|_| t.begin_guess("alice", A, false, now).ok())
            .collect();
        assert_eq!(reserved.len(), 5, "a burst gets the free guesses only");
        for guess in reserved {
            guess.failed(now);
        }
        assert!(may_try(&t, "alice", A, now).is_err(), "then the back-off");
        // Past the free ones, one guess at a time.
        let later = now + Duration::from_secs(1);
        let one = t.begin_guess("alice", A, false, later).expect("lock over");
        assert!(t.begin_guess("alice", A, false, later).is_err());
        drop(one);
        assert!(
            may_try(&t, "alice", A, later).is_ok(),
            "an unjudged guess only frees its place"
        );
    }

    #[test]
    fn per_subject_guesses_count_from_every_address() {
        let t = throttle(2, 900);
        let now = Instant::now();
        for ip in [A, B] {
            t.begin_guess("user:1", ip, true, now)
                .expect("free")
                .failed(now);
        }
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert!(
            t.begin_guess("user:1", c, true, now).is_err(),
            "a third address is slowed too"
        );
        assert!(
            t.begin_guess("user:1", c, false, now).is_ok(),
            "the per-address entry alone is clean"
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}

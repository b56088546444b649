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
//! by /64 (one host usually holds a whole /64, and a /64 is to IPv6 what one
//! NAT address is to IPv4: per-host keys would hand an IPv6 attacker 2^64
//! fresh back-offs).
//!
//! Memory stays bounded whatever the attacker sends: subjects are kept as
//! SHA-256 digests (a 64 kB username costs 32 bytes), entries leave the map
//! when their count is back to zero or they have been idle for
//! `max_backoff_secs`, and failures reach the map only as fast as passwords
//! can be checked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub login_per_ip_per_minute: u32,
    pub register_per_ip_per_minute: u32,
    /// Failed guesses (per subject and address) before the back-off starts.
    pub free_failures: u32,
    pub max_backoff_secs: u64,
    pub account_mail_per_ip_per_minute: u32,
    pub account_mail_per_address_per_hour: u32,
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

/// Entries beyond this many are pruned of idle ones, at most once a second
/// (bounded memory under a spray of usernames or addresses, without a full
/// scan on every guess).
const PRUNE_ABOVE: usize = 50_000;
/// Beyond this many even after pruning, only entries that hold something
/// (a guess under way, a lock) are kept.
const HARD_CAP: usize = 200_000;
/// Rate-limiter state is pruned of addresses back at a full quota every
/// this many checks.
const LIMITER_PRUNE_EVERY: u64 = 4096;

type Key = ([u8; 32], IpAddr);

fn key(subject: &str, ip: IpAddr) -> Key {
    (Sha256::digest(subject.as_bytes()).into(), ip)
}

/// The bytes a key is stored under in a shared store: the subject's
/// SHA-256, then the address (`ANY_ADDRESS` for per-subject counts) as 16
/// bytes, IPv4 mapped.
pub fn guess_key(subject: &str, ip: Option<IpAddr>) -> Vec<u8> {
    let (digest, ip) = key(subject, ip.map_or(ANY_ADDRESS, client_key));
    let mut bytes = digest.to_vec();
    bytes.extend_from_slice(&address_bytes(ip));
    bytes
}

/// Which per-address quota a shared key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Logins and other password checks, per address.
    Login,
    Register,
    AccountMail,
    /// Account mails per recipient (the address's uniqueness key).
    AccountMailTo,
}

impl QuotaKind {
    fn tag(self) -> u8 {
        match self {
            QuotaKind::Login => 1,
            QuotaKind::Register => 2,
            QuotaKind::AccountMail => 3,
            QuotaKind::AccountMailTo => 4,
        }
    }
}

/// The bytes a quota is stored under in a shared store: its kind, then the
/// client address key (or the recipient's digest).
pub fn quota_key(kind: QuotaKind, ip: IpAddr, recipient: Option<&str>) -> Vec<u8> {
    let mut bytes = vec![kind.tag()];
    match recipient {
        Some(to) => bytes.extend_from_slice(&Sha256::digest(to.as_bytes())),
        None => bytes.extend_from_slice(&address_bytes(client_key(ip))),
    }
    bytes
}

fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl ThrottleSettings {
    /// (replenish interval ms, burst) of a quota.
    pub fn quota(&self, kind: QuotaKind) -> (i64, i64) {
        let (per, n) = match kind {
            QuotaKind::Login => (60_000, self.login_per_ip_per_minute),
            QuotaKind::Register => (60_000, self.register_per_ip_per_minute),
            QuotaKind::AccountMail => (60_000, self.account_mail_per_ip_per_minute),
            QuotaKind::AccountMailTo => (3_600_000, self.account_mail_per_address_per_hour),
        };
        let n = i64::from(n.max(1));
        (per / n, n)
    }

    /// Failures are forgotten after this long without a guess.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs.max(60))
    }
}

pub struct Throttle {
    settings: ThrottleSettings,
    login: DefaultKeyedRateLimiter<IpAddr>,
    register: DefaultKeyedRateLimiter<IpAddr>,
    account_mail: DefaultKeyedRateLimiter<IpAddr>,
    /// Keyed by the SHA-256 of the address's uniqueness key.
    account_mail_to: DefaultKeyedRateLimiter<[u8; 32]>,
    clock: DefaultClock,
    checks: AtomicU64,
    failures: Mutex<Failed>,
}

#[derive(Default)]
struct Failed {
    entries: HashMap<Key, Failures>,
    pruned_at: Option<Instant>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// What a failed guess led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failure {
    /// The last key (the `also` subject, when given) has used up its free
    /// failures.
    pub exhausted: bool,
    /// A key has just used up its free failures: its back-off starts (the
    /// first lock since its failures were last cleared or forgotten).
    pub engaged: bool,
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
    /// `max_backoff_secs`. True when the `also` subject of `begin_guess`
    /// has used up its free failures with this one.
    pub fn failed(self, now: Instant) -> bool {
        self.failure(now).exhausted
    }

    /// `failed`, telling also whether this failure started a back-off.
    pub fn failure(mut self, now: Instant) -> Failure {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.judge(&keys, Some(now))
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
        let mut failed = self.throttle.lock();
        for key in &self.keys {
            if let Some(entry) = failed.entries.get_mut(key) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
                if entry.in_flight == 0 && entry.count == 0 {
                    failed.entries.remove(key);
                }
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
            account_mail: DefaultKeyedRateLimiter::keyed(per_minute(
                settings.account_mail_per_ip_per_minute,
            )),
            account_mail_to: DefaultKeyedRateLimiter::keyed(Quota::per_hour(
                NonZeroU32::new(settings.account_mail_per_address_per_hour.max(1))
                    .unwrap_or(NonZeroU32::MIN),
            )),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
            failures: Mutex::new(Failed::default()),
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
        for limiter in [&self.login, &self.register, &self.account_mail] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.account_mail_to.retain_recent();
        self.account_mail_to.shrink_to_fit();
    }

    pub fn settings(&self) -> &ThrottleSettings {
        &self.settings
    }

    /// Addresses the rate limiters hold state for.
    pub fn tracked_addresses(&self) -> usize {
        self.login.len() + self.register.len() + self.account_mail.len()
    }

    /// One request for a password-reset or verification mail from `ip` to
    /// the address whose uniqueness key is `email_key`: both quotas must
    /// allow it.
    pub fn account_mail_attempt(&self, ip: IpAddr, email_key: &str) -> Verdict {
        self.check(&self.account_mail, ip)?;
        let to: [u8; 32] = Sha256::digest(email_key.as_bytes()).into();
        self.account_mail_to
            .check_key(&to)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// One login (or other password) attempt from `ip`.
    pub fn login_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.login, ip)
    }

    /// One registration attempt from `ip`.
    pub fn register_attempt(&self, ip: IpAddr) -> Verdict {
        self.check(&self.register, ip)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failed> {
        // A poisoned map only holds counters: keep using it.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves one guess for `subject` from `ip` and, with `also`, one for
    /// that subject from any address (e.g. the session a password change is
    /// made in). Refused while any of these is backing off, or when the
    /// guesses already in flight would use up the free ones: beyond them, one
    /// guess at a time. Failures older than `max_backoff_secs` are forgotten.
    pub fn begin_guess(
        &self,
        subject: &str,
        ip: IpAddr,
        also: Option<&str>,
        now: Instant,
    ) -> Result<Guess<'_>, Duration> {
        let mut keys = vec![key(subject, client_key(ip))];
        keys.extend(also.map(|other| key(other, ANY_ADDRESS)));
        let idle = self.settings.idle();
        let mut failed = self.lock();
        failed.prune(now, idle);
        let free = self.settings.free_failures;
        for key in &keys {
            if let Some(f) = failed.entries.get_mut(key) {
                if let Some(until) = f.locked_until.filter(|until| *until > now) {
                    return Err(until - now);
                }
                if f.in_flight == 0 && now.saturating_duration_since(f.last) >= idle {
                    // A quiet spell as long as the longest lock: start afresh.
                    f.count = 0;
                    f.locked_until = None;
                }
                if f.in_flight > 0 && f.count.saturating_add(f.in_flight) >= free {
                    // The outcome of the guesses under way decides the next wait.
                    return Err(Duration::from_secs(1));
                }
            }
        }
        for key in &keys {
            let entry = failed.entries.entry(*key).or_insert(Failures {
                count: 0,
                in_flight: 0,
                locked_until: None,
                last: now,
            });
            entry.in_flight += 1;
            entry.last = now;
        }
        drop(failed);
        Ok(Guess {
            throttle: self,
            keys,
        })
    }

    /// Records the verdict of a reserved guess: `Some(now)` a failure,
    /// `None` a success. True when a failure brought the last key (the
    /// `also` subject, when given) to its free failures.
    fn judge(&self, keys: &[Key], failed_at: Option<Instant>) -> Failure {
        let mut failed = self.lock();
        let mut verdict = Failure::default();
        for key in keys {
            let Some(entry) = failed.entries.get_mut(key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            match failed_at {
                Some(now) => {
                    entry.count = entry.count.saturating_add(1);
                    entry.last = now;
                    let exhausted = entry.count >= self.settings.free_failures;
                    verdict.exhausted = exhausted;
                    verdict.engaged |= entry.count == self.settings.free_failures;
                    if exhausted {
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
                failed.entries.remove(key);
            }
        }
        verdict
    }

    /// Entries in the back-off map.
    pub fn tracked_guessers(&self) -> usize {
        self.lock().entries.len()
    }
}

impl Failed {
    fn prune(&mut self, now: Instant, idle: Duration) {
        if self.entries.len() <= PRUNE_ABOVE
            || self
                .pruned_at
                .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        self.pruned_at = Some(now);
        self.entries.retain(|_, f| {
            f.in_flight > 0
                || f.locked_until.is_some_and(|until| until > now)
                || now.saturating_duration_since(f.last) < idle
        });
        if self.entries.len() > HARD_CAP {
            self.entries
                .retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|until| until > now));
        }
        self.entries.shrink_to_fit();
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
            account_mail_per_ip_per_minute: 2,
            account_mail_per_address_per_hour: 1,
        })
    }

    #[test]
    fn account_mails_are_limited_per_address_and_per_recipient() {
        let t = throttle(5, 900);
        assert!(t.account_mail_attempt(A, "alice@example.com").is_ok());
        // The same recipient from elsewhere: its hourly quota is used.
        let wait = t.account_mail_attempt(B, "alice@example.com").unwrap_err();
        assert!(wait > Duration::from_secs(3000), "{wait:?}");
        assert!(t.account_mail_attempt(A, "bob@example.com").is_ok());
        // A's per-minute quota (2) is used, whoever the recipient.
        assert!(t.account_mail_attempt(A, "carol@example.com").is_err());
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn fail(t: &Throttle, who: &str, ip: IpAddr, now: Instant) {
        t.begin_guess(who, ip, None, now)
            .expect("may guess")
            .failed(now);
    }

    fn may_try(t: &Throttle, who: &str, ip: IpAddr, now: Instant) -> Verdict {
        t.begin_guess(who, ip, None, now).map(drop)
    }

    #[test]
    fn the_failure_that_starts_a_back_off_says_so_once() {
        let t = throttle(3, 900);
        let mut now = Instant::now();
        let mut verdicts = Vec::new();
        for _ in 0..5 {
            let guess = t.begin_guess("alice", A, None, now).expect("may guess");
            verdicts.push(guess.failure(now));
            now += Duration::from_secs(60);
        }
        let engaged: Vec<bool> = verdicts.iter().map(|v| v.engaged).collect();
        assert_eq!(engaged, [false, false, true, false, false]);
        let exhausted: Vec<bool> = verdicts.iter().map(|v| v.exhausted).collect();
        assert_eq!(exhausted, [false, false, true, true, true]);
        // A success clears it: the next run of failures engages again.
        t.begin_guess("alice", A, None, now).unwrap().succeeded();
        for i in 0..3 {
            let v = t.begin_guess("alice", A, None, now).unwrap().failure(now);
            assert_eq!(v.engaged, i == 2);
            now += Duration::from_secs(60);
        }
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
            account_mail_per_ip_per_minute: 600,
            account_mail_per_address_per_hour: 600,
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
        t.begin_guess("alice", A, None, later)
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
            .filter_map(|_| t.begin_guess("alice", A, None, now).ok())
            .collect();
        assert_eq!(reserved.len(), 5, "a burst gets the free guesses only");
        for guess in reserved {
            guess.failed(now);
        }
        assert!(may_try(&t, "alice", A, now).is_err(), "then the back-off");
        // Past the free ones, one guess at a time.
        let later = now + Duration::from_secs(1);
        let one = t.begin_guess("alice", A, None, later).expect("lock over");
        assert!(t.begin_guess("alice", A, None, later).is_err());
        drop(one);
        assert!(
            may_try(&t, "alice", A, later).is_ok(),
            "an unjudged guess only frees its place"
        );
    }

    #[test]
    fn also_subjects_count_from_every_address() {
        let t = throttle(2, 900);
        let now = Instant::now();
        let session = Some("session:s1");
        let first = t.begin_guess("alice", A, session, now).expect("free");
        assert!(!first.failed(now));
        let second = t.begin_guess("alice", B, session, now).expect("free");
        assert!(
            second.failed(now),
            "the session's free failures are used up"
        );
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert!(
            t.begin_guess("alice", c, session, now).is_err(),
            "a third address is slowed too"
        );
        assert!(
            t.begin_guess("alice", c, None, now).is_ok(),
            "the per-address entry alone is clean"
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_spell() {
        let t = throttle(2, 60);
        let now = Instant::now();
        fail(&t, "svc", A, now);
        fail(&t, "svc", A, now);
        let later = now + Duration::from_secs(61);
        fail(&t, "svc", A, later);
        assert!(
            may_try(&t, "svc", A, later).is_ok(),
            "one failure after a quiet minute is a first failure again"
        );
    }

    #[test]
    fn memory_does_not_depend_on_what_the_attacker_sends() {
        let t = throttle(5, 900);
        let now = Instant::now();
        let long = "x".repeat(60_000);
        fail(&t, &long, A, now);
        assert_eq!(t.tracked_guessers(), 1);
        // Keys are digests: the 60 kB name is not kept.
        assert_eq!(
            std::mem::size_of::<Key>(),
            32 + std::mem::size_of::<IpAddr>()
        );
        // A reservation dropped without a verdict leaves nothing behind.
        drop(
            t.begin_guess("bob", A, Some("session:x"), now)
                .expect("free"),
        );
        assert_eq!(t.tracked_guessers(), 1);
        // Past the pruning threshold, idle entries go.
        for i in 0..(PRUNE_ABOVE as u32 + 10) {
            fail(&t, &format!("u{i}"), A, now);
        }
        let later = now + Duration::from_secs(901);
        drop(t.begin_guess("trigger", A, None, later));
        assert!(t.tracked_guessers() <= 2, "{}", t.tracked_guessers());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }
}

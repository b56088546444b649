//! Brute-force limits as the use cases see them. On SQLite (one process)
//! the state is this process's (`auth::throttle`); on PostgreSQL, where
//! several replicas serve one database, the per-address quotas and the
//! guess back-off of logins, password changes and introspection live in the
//! database (`storage::throttle`), so that spreading guesses over replicas
//! buys nothing. The client credentials grant keeps its guesses per process:
//! its secrets are 256 random bits, and it is the hot path of services.

use std::net::IpAddr;
use std::time::Duration;

use super::Services;
use crate::auth::throttle::{self, Failure, QuotaKind, ThrottleSettings};
use crate::error::ApiError;
use crate::storage::{throttle as shared, Backend, Database};

/// The time of the shared state: the database's clock, one for every
/// replica (theirs may disagree).
const DB_CLOCK: Option<i64> = None;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn wait(ms: i64) -> ApiError {
    ApiError::Throttled(Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1)))
}

impl Services {
    /// Whether brute-force state is kept in the database.
    fn shares_limits(&self) -> bool {
        self.db.backend() == Backend::Postgres
    }

    /// One request of `kind` from `ip` against its per-address quota.
    pub(crate) async fn take_quota(&self, kind: QuotaKind, ip: IpAddr) -> Result<(), ApiError> {
        self.quota(kind, ip, None).await
    }

    /// One account-mail request from `ip` to the address whose uniqueness
    /// key is `email_key`: both its quotas must allow it.
    pub(crate) async fn take_account_mail_quota(
        &self,
        ip: IpAddr,
        email_key: &str,
    ) -> Result<(), ApiError> {
        self.quota(QuotaKind::AccountMail, ip, None).await?;
        self.quota(QuotaKind::AccountMailTo, ip, Some(email_key))
            .await
    }

    async fn quota(
        &self,
        kind: QuotaKind,
        ip: IpAddr,
        recipient: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(local) = &self.throttle else {
            return Ok(());
        };
        if !self.shares_limits() {
            return match kind {
                QuotaKind::Login => local.login_attempt(ip),
                QuotaKind::Register => local.register_attempt(ip),
                QuotaKind::AccountMail | QuotaKind::AccountMailTo => {
                    local.account_mail_attempt(ip, recipient.unwrap_or_default())
                }
            }
            .map_err(ApiError::Throttled);
        }
        let key = throttle::quota_key(kind, ip, recipient);
        let (interval, burst) = local.settings().quota(kind);
        self.db
            .run(move |conn| shared::take_quota(conn, &key, DB_CLOCK, interval, burst))
            .await?
            .map_err(wait)
    }

    /// Reserves a guess for `subject` from `ip` and, with `also`, for that
    /// subject from any address: `Err(Throttled)` while one of them backs
    /// off; `None` when the limits are off. Judge it with `Guess::failure`
    /// or `Guess::succeeded`.
    pub(crate) async fn begin_guess(
        &self,
        subject: &str,
        ip: IpAddr,
        also: Option<&str>,
    ) -> Result<Option<Guess<'_>>, ApiError> {
        let Some(local) = &self.throttle else {
            return Ok(None);
        };
        if !self.shares_limits() {
            return local
                .begin_guess(subject, ip, also, std::time::Instant::now())
                .map(|guess| Some(Guess::Local(guess)))
                .map_err(ApiError::Throttled);
        }
        let mut keys = vec![throttle::guess_key(subject, Some(ip))];
        keys.extend(also.map(|other| throttle::guess_key(other, None)));
        let settings = *local.settings();
        let mut guess = SharedGuess {
            db: self.db.clone(),
            keys: Vec::new(),
            settings,
        };
        for key in keys {
            let (free, idle) = (settings.free_failures, millis(settings.idle()));
            let reserved = key.clone();
            self.db
                .run(move |conn| shared::reserve_guess(conn, &reserved, DB_CLOCK, free, idle))
                .await?
                // Dropping `guess` releases the keys reserved so far.
                .map_err(wait)?;
            guess.keys.push(key);
        }
        Ok(Some(Guess::Shared(guess)))
    }

    /// `begin_guess` for a high-entropy secret checked in microseconds
    /// (introspection credentials): on PostgreSQL, guesses in flight are
    /// counted by this process only and the shared row is read, not
    /// written, unless the key has failures on record. A service's
    /// introspections then never take turns on one row; failures still
    /// count on every replica, and a lock holds on all of them.
    pub(crate) async fn begin_secret_guess(
        &self,
        subject: &str,
        ip: IpAddr,
    ) -> Result<Option<Guess<'_>>, ApiError> {
        let Some(local) = &self.throttle else {
            return Ok(None);
        };
        let guess = local
            .begin_guess(subject, ip, None, std::time::Instant::now())
            .map_err(ApiError::Throttled)?;
        if !self.shares_limits() {
            return Ok(Some(Guess::Local(guess)));
        }
        let key = throttle::guess_key(subject, Some(ip));
        let read = key.clone();
        let recorded = self
            .db
            .run(move |conn| shared::recorded_failures(conn, &read, DB_CLOCK))
            .await?;
        if let Some((wait_ms, _)) = recorded.filter(|(wait_ms, _)| *wait_ms > 0) {
            return Err(wait(wait_ms));
        }
        Ok(Some(Guess::Secret {
            local: guess,
            db: self.db.clone(),
            settings: *local.settings(),
            key,
            on_record: recorded.is_some(),
        }))
    }

    /// Deletes shared brute-force state that no longer counts (PostgreSQL;
    /// nothing to do on SQLite, whose state is pruned in memory).
    pub async fn prune_limits(&self) -> Result<usize, ApiError> {
        let Some(local) = self.throttle.as_ref().filter(|_| self.shares_limits()) else {
            return Ok(0);
        };
        let idle = millis(local.settings().idle());
        Ok(self
            .db
            .write(move |conn| shared::prune(conn, DB_CLOCK, idle))
            .await?)
    }
}

/// A reserved guess: judge it with `failure` or `succeeded`. Dropped without
/// a verdict (the check could not run), it only frees its reservation.
#[must_use]
pub enum Guess<'a> {
    Local(throttle::Guess<'a>),
    Shared(SharedGuess),
    /// `begin_secret_guess` on PostgreSQL: in flight here, failures there.
    /// Nothing is reserved in the database: no release is owed.
    Secret {
        local: throttle::Guess<'a>,
        db: Database,
        settings: ThrottleSettings,
        key: Vec<u8>,
        /// The key had failures on record: a right guess clears them.
        on_record: bool,
    },
}

impl Guess<'_> {
    /// A wrong guess; what it led to.
    pub async fn failure(self) -> Result<Failure, ApiError> {
        match self {
            Guess::Local(guess) => Ok(guess.failure(std::time::Instant::now())),
            Guess::Shared(mut guess) => {
                let keys = std::mem::take(&mut guess.keys);
                let settings = guess.settings;
                let counts = guess
                    .db
                    .run(move |conn| {
                        let max = millis(Duration::from_secs(settings.max_backoff_secs));
                        keys.iter()
                            .map(|key| {
                                shared::guess_failed(
                                    conn,
                                    key,
                                    DB_CLOCK,
                                    settings.free_failures,
                                    max,
                                )
                            })
                            .collect::<Result<Vec<u32>, _>>()
                    })
                    .await?;
                Ok(verdict(&counts, &settings))
            }
            Guess::Secret {
                local,
                db,
                settings,
                key,
                ..
            } => {
                local.failed(std::time::Instant::now());
                let max = millis(Duration::from_secs(settings.max_backoff_secs));
                let count = db
                    .run(move |conn| {
                        shared::guess_failed(conn, &key, DB_CLOCK, settings.free_failures, max)
                    })
                    .await?;
                Ok(verdict(&[count], &settings))
            }
        }
    }

    /// A right guess: clears the back-off of its keys. A failure to record
    /// it is logged, not the caller's: the guess was right.
    pub async fn succeeded(self) {
        match self {
            Guess::Local(guess) => guess.succeeded(),
            Guess::Secret {
                local,
                db,
                key,
                on_record,
                ..
            } => {
                local.succeeded();
                if on_record {
                    let keys = vec![key];
                    if let Err(e) = db.run(move |conn| end(conn, &keys, true)).await {
                        tracing::warn!(error = %crate::error::Chain(&e), "could not clear a guess's back-off");
                    }
                }
            }
            Guess::Shared(mut guess) => {
                let keys = std::mem::take(&mut guess.keys);
                if let Err(e) = guess.db.run(move |conn| end(conn, &keys, true)).await {
                    tracing::warn!(error = %crate::error::Chain(&e), "could not clear a guess's back-off");
                }
            }
        }
    }
}

/// What the failure counts of a guess's keys (in `begin_guess` order) mean,
/// as `auth::throttle` words it: the last key has used up its free failures;
/// one of them has just started backing off.
fn verdict(counts: &[u32], settings: &ThrottleSettings) -> Failure {
    Failure {
        exhausted: counts.last().is_some_and(|c| *c >= settings.free_failures),
        engaged: counts.contains(&settings.free_failures),
    }
}

fn end(
    conn: &mut crate::storage::DbConnection,
    keys: &[Vec<u8>],
    cleared: bool,
) -> Result<(), crate::storage::StorageError> {
    keys.iter()
        .try_for_each(|key| shared::guess_ended(conn, key, DB_CLOCK, cleared))
}

/// A guess reserved in the database.
pub struct SharedGuess {
    db: Database,
    /// Reserved and not yet judged.
    keys: Vec<Vec<u8>>,
    settings: ThrottleSettings,
}

impl Drop for SharedGuess {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.keys);
        let db = self.db.clone();
        // Not awaited: a cancelled request must not wait. If it is lost, the
        // reservation's lease ends it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = db.run(move |conn| end(conn, &keys, false)).await {
                    tracing::debug!(error = %crate::error::Chain(&e), "could not release a guess");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(free: u32) -> ThrottleSettings {
        ThrottleSettings {
            login_per_ip_per_minute: 10,
            register_per_ip_per_minute: 10,
            free_failures: free,
            max_backoff_secs: 900,
            account_mail_per_ip_per_minute: 1,
            account_mail_per_address_per_hour: 1,
        }
    }

    #[test]
    fn the_verdict_reads_the_counts_as_the_local_throttle_does() {
        let s = settings(3);
        assert_eq!(verdict(&[2], &s), Failure::default());
        assert_eq!(
            verdict(&[3], &s),
            Failure {
                exhausted: true,
                engaged: true
            }
        );
        assert_eq!(
            verdict(&[4], &s),
            Failure {
                exhausted: true,
                engaged: false
            }
        );
        // The `also` key is the last: it alone says exhausted.
        assert_eq!(
            verdict(&[5, 1], &s),
            Failure {
                exhausted: false,
                engaged: false
            }
        );
        assert_eq!(
            verdict(&[3, 1], &s),
            Failure {
                exhausted: false,
                engaged: true
            }
        );
    }
}

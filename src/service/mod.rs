//! The use cases of tokend, free of HTTP: each takes typed input and the
//! process's dependencies (`Services`) and returns a domain outcome or the
//! one error type (`ApiError`, mapped to HTTP in one place). Everything a
//! use case implies (throttling, cache invalidation, metrics, security log
//! events) happens inside it, so neither the HTTP handlers nor the command
//! line can forget any of it.

pub mod account_mails;
pub mod accounts;
pub mod actor;
pub mod admin;
pub mod audit;
pub mod bearer;
pub mod cached;
pub mod change_password;
pub mod claims;
pub mod clients;
pub mod devices;
pub mod email_verification;
pub mod groups;
pub mod introspect;
pub mod jobs;
pub mod limits;
pub mod login;
pub mod logout;
pub mod logout_all;
pub mod me;
pub mod oauth_token;
pub mod origin;
pub mod password_reset;
pub mod policy;
pub mod register;
pub mod revoke;
pub mod rotate;
pub mod verify;

use crate::auth::hashing::HashingPool;
use crate::auth::jwt::JwtKeys;
use crate::auth::throttle::Throttle;
use crate::metrics::Metrics;
use crate::storage::cache::StateCache;
use crate::storage::Database;

/// The long-lived dependencies of the use cases.
pub struct Services {
    pub db: Database,
    pub keys: JwtKeys,
    pub hashing: HashingPool,
    pub session_max_age_secs: i64,
    pub reuse_grace_secs: i64,
    /// false: a refresh renews the access token only (see `rotate`).
    pub rotate_refresh_tokens: bool,
    /// Until this instant (unix seconds; 0: never), sessionless access
    /// tokens of the legacy service identify imported users (see
    /// `policy::session_check`).
    pub accept_sessionless_until: i64,
    /// Record each login's instant in `users.last_login`.
    pub update_last_login: bool,
    /// Password-reset and verification mails (`accounts.*`).
    pub account_mails: account_mails::AccountMails,
    /// What a new password must satisfy.
    pub password_policy: crate::auth::password_policy::PasswordPolicy,
    /// User fields written into access tokens (`jwt.extra_claims`).
    pub extra_claims: Vec<crate::auth::claims::ExtraClaim>,
    /// Asked for more claims at every login and refresh, when configured.
    pub claims_hook: Option<crate::claims_hook::ClaimsHook>,
    /// The services allowed to introspect.
    pub introspection_clients: Vec<crate::config::IntrospectionClient>,
    /// Brute-force limits; `None` when disabled.
    pub throttle: Option<Throttle>,
    /// Session and user state for the token-check paths.
    pub cache: StateCache,
    pub metrics: std::sync::Arc<Metrics>,
    /// The audit trail's queue (`audit::Audit::record` never waits).
    pub audit: audit::Audit,
    /// Wakes this process's outbox sender (see `outbox_notify`).
    pub outbox: crate::mail::Outbox,
    /// The wall clock, in unix seconds (replaceable in tests).
    pub clock: crate::clock::Clock,
}

impl Services {
    /// The current instant, in unix seconds.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// An audit event of `kind`, now.
    pub fn audit_event(&self, kind: audit::EventKind) -> audit::Event {
        audit::Event::new(kind, self.now())
    }

    /// Wakes this process's outbox sender: call it after committing a
    /// transaction that queued mail or a job, so that it goes out at once
    /// rather than at the sender's next poll.
    pub fn outbox_notify(&self) {
        self.outbox.notify();
    }

    /// The part account administration needs.
    pub fn accounts(&self) -> accounts::Accounts<'_> {
        accounts::Accounts {
            db: &self.db,
            hashing: &self.hashing,
            cache: Some(&self.cache),
        }
    }
}

#[cfg(test)]
mod tests;

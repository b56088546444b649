//! Login: a new session for right credentials.

use super::audit::{login_failed as failed, EventKind};
use super::claims::access_claims;
use super::origin::Origin;
use super::Services;
use crate::auth::claims::ClaimsEvent;
use crate::auth::sessions::{new_session_id, PairSpec, SignedPair};
use crate::auth::throttle::QuotaKind;
use crate::config::EmailVerification;
use crate::error::ApiError;
use crate::metrics::LoginOutcome;
use crate::storage::refresh_tokens::{self, IssueOutcome};
use crate::storage::users;

pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Checks the credentials of `client` and starts a session: its first pair.
/// `credentials` are the parsed fields or their field errors, reported only
/// once the address is within its rate limit.
pub async fn login(
    svc: &Services,
    origin: &Origin,
    credentials: Result<Credentials, ApiError>,
) -> Result<SignedPair, ApiError> {
    let client = origin.ip;
    svc.take_quota(QuotaKind::Login, client).await?;
    let Credentials { username, password } = credentials?;
    // Reserved before the password is checked: no guesses while backing
    // off, and simultaneous guesses count before their outcome is known.
    let guess = svc
        .begin_guess(&username, client, None)
        .await
        .inspect_err(|e| {
            if matches!(e, ApiError::Throttled(_)) {
                svc.audit
                    .record(failed(svc.now(), origin, &username, None, "throttled"));
            }
        })?;
    let name = username.clone();
    let user = svc
        .db
        .run(move |conn| users::find_by_username(conn, &name))
        .await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let outcome = svc.hashing.check(client, password, stored, true).await?;
    let user = match user {
        Some(user) if outcome.matches && user.is_active => user,
        _ => {
            let engaged = match guess {
                Some(guess) => guess.failure().await?.engaged,
                None => false,
            };
            svc.metrics.login(LoginOutcome::Failed);
            let (user_id, reason) = match &user {
                Some(user) if outcome.matches => (Some(user.id), "inactive"),
                user => (user.as_ref().map(|u| u.id), "bad_credentials"),
            };
            svc.audit
                .record(failed(svc.now(), origin, &username, user_id, reason));
            if engaged {
                svc.audit
                    .record(failed(svc.now(), origin, &username, user_id, "login").backoff());
            }
            return Err(ApiError::BadCredentials);
        }
    };
    if let Some(guess) = guess {
        guess.succeeded().await;
    }
    // Only once the password is right, so it takes a wrong password's time
    // and tells a guesser nothing; users without an address are exempt.
    if svc.account_mails.verification() == EmailVerification::Mandatory
        && user.email.is_some()
        && !user.email_verified
    {
        svc.metrics.login(LoginOutcome::Failed);
        svc.audit.record(failed(
            svc.now(),
            origin,
            &username,
            Some(user.id),
            "email_not_verified",
        ));
        return Err(ApiError::EmailNotVerified);
    }
    // The hashes this login may rely on: the one checked, and its upgrade.
    let mut checked = vec![user.password_hash.clone()];
    if let Some(hash) = outcome.upgraded {
        // An imported Django hash (or a cheaper bcrypt) matched: store
        // tokend's own from now on. Only if the hash is still the one that
        // was checked; a failure here does not fail the login.
        checked.push(hash.clone());
        let (id, old) = (user.id, user.password_hash.clone());
        if let Err(e) = svc
            .db
            .write(move |conn| users::upgrade_password_hash(conn, id, &old, &hash))
            .await
        {
            tracing::warn!(error = %crate::error::Chain(&e), user_id = user.id, "password hash upgrade failed");
        }
    }
    let claims = access_claims(svc, user.id, ClaimsEvent::Login).await?;
    let now = svc.now();
    let session_end = now + svc.session_max_age_secs;
    let pair = PairSpec::new(
        user.id,
        &new_session_id(),
        now,
        svc.keys.lifetimes(),
        session_end,
    )
    .with_access_claims(claims);
    let tokens = pair.sign(&svc.keys)?;
    let succeeded = svc
        .audit_event(EventKind::LoginSucceeded)
        .origin(origin)
        .user(user.id)
        .username(&user.username)
        .session(&pair.session_id);
    let record_last_login = svc.update_last_login;
    let device = origin.device();
    match svc
        .db
        .write(move |conn| {
            let checked: Vec<&str> = checked.iter().map(String::as_str).collect();
            refresh_tokens::start_session(
                conn,
                &pair,
                session_end,
                &checked,
                record_last_login,
                &device,
            )
        })
        .await?
    {
        IssueOutcome::Issued => {
            svc.metrics.login(LoginOutcome::Ok);
            svc.audit.record(succeeded);
            Ok(tokens)
        }
        IssueOutcome::NoSuchUser => Err(ApiError::BadCredentials),
    }
}

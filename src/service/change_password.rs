//! Password change by the user: the old password proves it is them; every
//! other session of the user is revoked, the calling one stays signed in.

use std::time::Instant;

use super::audit::EventKind;
use super::origin::Origin;
use super::{accounts, bearer, Services};
use crate::auth::jwt::TokenError;
use crate::auth::throttle::QuotaKind;
use crate::error::{ApiError, FieldErrors};
use crate::storage::sessions::{self, RevokeReason};
use crate::storage::users::PasswordChange as Changed;

const MSG_WRONG_PASSWORD: &str = "Wrong password.";

/// The raw fields: each the trimmed value or its field problems.
pub struct PasswordChange {
    pub old_password: Result<String, Vec<String>>,
    pub new_password: Result<String, Vec<String>>,
}

/// `token` is the caller's Bearer access token; answers how many other
/// sessions were revoked.
pub async fn change_password(
    svc: &Services,
    origin: &Origin,
    token: &str,
    input: PasswordChange,
) -> Result<usize, ApiError> {
    let client = origin.ip;
    let (user, token) = bearer::authenticated(svc, token).await?;
    let mut errors = FieldErrors::default();
    let old = match input.old_password {
        Ok(old) => Some(old),
        Err(messages) => {
            errors.add("old_password", messages);
            None
        }
    };
    let new = match input
        .new_password
        .map(|v| svc.password_policy.parse(&v, Some(&user.username)))
    {
        Ok(Ok(password)) => Some(password),
        Ok(Err(messages)) | Err(messages) => {
            errors.add("new_password", messages);
            None
        }
    };
    errors.into_result()?;
    let (Some(old), Some(new)) = (old, new) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    // A stolen access token must not make the old password guessable: the
    // same quotas and back-off as login, and a count per session from every
    // address; when the session has used up its free failures, it is
    // revoked (a per-user lock would let the thief keep the owner from
    // changing the password; a new login starts a clean session).
    let session = token.sid.clone().unwrap_or_default();
    svc.take_quota(QuotaKind::Login, client).await?;
    let guess = svc
        .begin_guess(
            &user.username,
            client,
            Some(&format!("\0session:{session}")),
        )
        .await?;
    let checked = svc
        .hashing
        .check(client, old, Some(user.password_hash.clone()), false)
        .await?;
    if !checked.matches {
        let failure = match guess {
            Some(guess) => Some(guess.failure().await?),
            None => None,
        };
        if failure.is_some_and(|f| f.engaged) {
            svc.audit.record(
                svc.audit_event(EventKind::BackoffEngaged)
                    .origin(origin)
                    .user(user.id)
                    .username(&user.username)
                    .session(&session)
                    .reason("password_change"),
            );
        }
        if failure.is_some_and(|f| f.exhausted) {
            revoke_guessing_session(svc, user.id, session, origin).await?;
        }
        return Err(ApiError::Validation(FieldErrors::single(
            "old_password",
            MSG_WRONG_PASSWORD,
        )));
    }
    if let Some(guess) = guess {
        guess.succeeded().await;
    }
    // `authenticated` made sure the token names its (live) session; a reset
    // or another change since the check wins over this one.
    let token_sid = token.sid.clone();
    let outcome = accounts::change_password(
        &svc.accounts(),
        user.id,
        &new,
        token.sid,
        Some(user.password_hash.clone()),
        client,
        svc.now(),
    )
    .await?;
    let revoked = match outcome {
        Changed::Changed { revoked } => revoked,
        Changed::Superseded => {
            return Err(ApiError::Validation(FieldErrors::single(
                "old_password",
                MSG_WRONG_PASSWORD,
            )))
        }
        Changed::SessionRevoked => return Err(ApiError::BearerToken(TokenError::Blacklisted)),
    };
    let mut changed = svc
        .audit_event(EventKind::PasswordChanged)
        .origin(origin)
        .user(user.id)
        .username(&user.username)
        .detail(serde_json::json!({ "sessions_revoked": revoked }));
    if let Some(sid) = &token_sid {
        changed = changed.session(sid);
    }
    svc.audit.record(changed);
    tracing::info!(
        security_event = "password_change",
        user_id = user.id,
        revoked,
        "other sessions revoked"
    );
    Ok(revoked)
}

/// Ends a session whose access token keeps guessing the old password.
async fn revoke_guessing_session(
    svc: &Services,
    user_id: i64,
    session: String,
    origin: &Origin,
) -> Result<(), ApiError> {
    let client = origin.ip;
    let now = svc.now();
    let sid = session.clone();
    svc.db
        .write(move |conn| {
            sessions::revoke_session(conn, &sid, user_id, RevokeReason::PasswordGuessing, now)
        })
        .await?;
    svc.cache.session_revoked(&session, user_id, Instant::now());
    svc.audit.record(
        svc.audit_event(EventKind::SessionRevoked)
            .origin(origin)
            .user(user_id)
            .session(&session)
            .reason("password_guessing"),
    );
    tracing::warn!(
        security_event = "password_guessing",
        user_id,
        client_ip = %client,
        "wrong old passwords: the session is revoked"
    );
    Ok(())
}

//! Password reset by mail, with dj-rest-auth's bodies: a request answers
//! the same, in the same time, whether or not the address is known (it only
//! queues a job; the outbox worker looks the address up and mails the
//! link); the confirmation spends the one-time token, sets the password and
//! revokes every session of the user.

use std::net::IpAddr;

use super::Services;
use crate::auth::account_tokens::{decode_uid, digest};
use crate::auth::email::Email;
use crate::error::{ApiError, FieldErrors};
use crate::storage::account_tokens::{self, ResetOutcome, RESET};
use crate::storage::{outbox, users};

pub const MSG_INVALID_VALUE: &str = "Invalid value";
/// Django's SetPasswordForm message (with its typographic apostrophe).
pub const MSG_MISMATCH: &str = "The two password fields didn’t match.";

/// The outbox job kind of a reset request.
pub const JOB: &str = "password_reset";

/// `email` is the field's trimmed value or its problems.
pub async fn request(
    svc: &Services,
    client: IpAddr,
    email: Result<String, Vec<String>>,
) -> Result<(), ApiError> {
    queue_job(svc, client, JOB, &email_field(email)?).await
}

/// The `email` field of a mail request, validated.
pub(super) fn email_field(email: Result<String, Vec<String>>) -> Result<Email, ApiError> {
    email
        .and_then(|value| Email::parse(&value))
        .map_err(|messages| {
            let mut errors = FieldErrors::default();
            errors.add("email", messages);
            ApiError::Validation(errors)
        })
}

/// Queues an account mail job for `email` (one insert whatever the
/// address: known and unknown ones take the same time), within the
/// per-address and per-recipient quotas.
pub(super) async fn queue_job(
    svc: &Services,
    client: IpAddr,
    kind: &'static str,
    email: &Email,
) -> Result<(), ApiError> {
    let key = email.key();
    svc.take_account_mail_quota(client, &key).await?;
    let now = svc.now();
    let payload = serde_json::json!({ "email": key });
    svc.db
        .write(move |conn| Ok(outbox::enqueue_job(conn, kind, &payload, now)?))
        .await?;
    svc.outbox_notify();
    Ok(())
}

/// The outbox worker's half of a request: a reset link for the active
/// user with that address, if there is one.
pub async fn mail_link(svc: &Services, email_key: String) -> Result<(), ApiError> {
    let user = svc
        .db
        .run(move |conn| users::find_by_email_key(conn, &email_key))
        .await?;
    let Some(user) = user.filter(|u| u.is_active) else {
        return Ok(());
    };
    let Some(to) = user.email.clone() else {
        return Ok(());
    };
    let now = svc.now();
    let token = svc.account_mails.reset(user.id, &user.username, &to, now);
    svc.db
        .write(move |conn| Ok(account_tokens::issue_mailed(conn, user.id, &token, now)?))
        .await?;
    Ok(())
}

/// The fields of a confirmation: each the trimmed value or its problems.
pub struct Confirmation {
    pub new_password1: Result<String, Vec<String>>,
    pub new_password2: Result<String, Vec<String>>,
    pub uid: Result<String, Vec<String>>,
    pub token: Result<String, Vec<String>>,
}

/// Sets the new password if `uid` and `token` name a live reset token;
/// answers how many sessions were revoked.
pub async fn confirm(
    svc: &Services,
    origin: &super::origin::Origin,
    input: Confirmation,
) -> Result<usize, ApiError> {
    let client = origin.ip;
    let mut errors = FieldErrors::default();
    let mut field = |name: &str, value: Result<String, Vec<String>>| {
        value.map_err(|messages| errors.add(name, messages)).ok()
    };
    let password1 = field("new_password1", input.new_password1);
    let password2 = field("new_password2", input.new_password2);
    let uid = field("uid", input.uid);
    let token = field("token", input.token);
    errors.into_result()?;
    let (Some(password1), Some(password2), Some(uid), Some(token)) =
        (password1, password2, uid, token)
    else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let invalid = |name: &str| ApiError::Validation(FieldErrors::single(name, MSG_INVALID_VALUE));
    // dj-rest-auth's order: the uid, the token, then the passwords.
    let user_id = decode_uid(&uid).ok_or_else(|| invalid("uid"))?;
    let user = svc
        .db
        .run(move |conn| users::find_by_id(conn, user_id))
        .await?
        .filter(|u| u.is_active)
        .ok_or_else(|| invalid("uid"))?;
    let digest = digest(&token);
    let (probe, now) = (digest.clone(), svc.now());
    let live = svc
        .db
        .run(move |conn| Ok(account_tokens::is_live(conn, user_id, RESET, &probe, now)?))
        .await?;
    if !live {
        return Err(invalid("token"));
    }
    if password1 != password2 {
        return Err(ApiError::Validation(FieldErrors::single(
            "new_password2",
            MSG_MISMATCH,
        )));
    }
    let password = svc
        .password_policy
        .parse(&password2, Some(&user.username))
        .map_err(|messages| {
            let mut errors = FieldErrors::default();
            errors.add("new_password2", messages);
            ApiError::Validation(errors)
        })?;
    let hash = svc
        .hashing
        .hash(client, password.expose().to_owned())
        .await?;
    let now = svc.now();
    let outcome = svc
        .db
        .write(move |conn| account_tokens::reset_password(conn, user_id, &digest, &hash, now))
        .await?;
    match outcome {
        ResetOutcome::Reset { revoked } => {
            svc.cache.forget_user(user_id);
            svc.audit.record(
                svc.audit_event(super::audit::EventKind::PasswordReset)
                    .origin(origin)
                    .user(user_id)
                    .username(&user.username)
                    .detail(serde_json::json!({ "sessions_revoked": revoked })),
            );
            tracing::info!(
                security_event = "password_reset",
                user_id,
                sessions_revoked = revoked,
                "password reset through a mailed link"
            );
            Ok(revoked)
        }
        // Spent by a concurrent confirmation meanwhile.
        ResetOutcome::Invalid => Err(invalid("token")),
    }
}

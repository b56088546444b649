//! Address verification with dj-rest-auth's bodies: the key from the mail
//! confirms the address; a new mail can be asked for (answered the same
//! whether or not the address is known, as a reset request).

use std::net::IpAddr;

use super::Services;
use crate::auth::account_tokens::digest;
use crate::error::{ApiError, FieldErrors};
use crate::storage::{account_tokens, users};

/// The outbox job kind of a resend request.
pub const JOB: &str = "verify_resend";

/// Confirms the address of the key's user; unknown, expired or used keys
/// (or an address changed since) are `NotFound`.
pub async fn verify(
    svc: &Services,
    origin: &super::origin::Origin,
    key: Result<String, Vec<String>>,
) -> Result<(), ApiError> {
    let key = key.map_err(|messages| {
        let mut errors = FieldErrors::default();
        errors.add("key", messages);
        ApiError::Validation(errors)
    })?;
    let (digest, now) = (digest(&key), svc.now());
    let verified = svc
        .db
        .write(move |conn| account_tokens::verify_email(conn, &digest, now))
        .await?;
    let user_id = verified.ok_or(ApiError::NotFound)?;
    svc.audit.record(
        svc.audit_event(super::audit::EventKind::EmailVerified)
            .origin(origin)
            .user(user_id),
    );
    Ok(())
}

/// A new verification mail for `email`, when verification is on.
pub async fn resend(
    svc: &Services,
    client: IpAddr,
    email: Result<String, Vec<String>>,
) -> Result<(), ApiError> {
    let email = super::password_reset::email_field(email)?;
    if svc.account_mails.verification() == crate::config::EmailVerification::None {
        return Ok(());
    }
    super::password_reset::queue_job(svc, client, JOB, &email).await
}

/// The outbox worker's half: a verification mail for the user with that
/// address, unless it is verified already.
pub async fn mail_key(svc: &Services, email_key: String) -> Result<(), ApiError> {
    let user = svc
        .db
        .run(move |conn| users::find_by_email_key(conn, &email_key))
        .await?;
    let Some(user) = user.filter(|u| u.is_active && !u.email_verified) else {
        return Ok(());
    };
    let Some(to) = user.email.clone() else {
        return Ok(());
    };
    let now = svc.now();
    let token = svc.account_mails.verify(&user.username, &to, now);
    svc.db
        .write(move |conn| Ok(account_tokens::issue_mailed(conn, user.id, &token, now)?))
        .await?;
    Ok(())
}

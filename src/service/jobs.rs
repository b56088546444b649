//! Internal jobs queued in the outbox: the account mail requests (password
//! reset, verification resend), whose answer never depends on the address;
//! the outbox sender runs them after the request, and each one that finds a
//! user queues its mail in the outbox.

use serde::Deserialize;

use super::{email_verification, password_reset, Services};
use crate::mail::sender::JobError;

/// The outbox kinds of jobs, run by the sender before it delivers mail (so
/// that the mail a job queues leaves in the same round).
pub const KINDS: [&str; 2] = [password_reset::JOB, email_verification::JOB];

/// Runs the job of `kind` stored as `payload`.
pub async fn run(svc: &Services, kind: &str, payload: &str) -> Result<(), JobError> {
    #[derive(Deserialize)]
    struct Payload {
        email: String,
    }
    let Payload { email } =
        serde_json::from_str(payload).map_err(|_| JobError::Dead("unreadable payload".into()))?;
    let done = match kind {
        password_reset::JOB => password_reset::mail_link(svc, email).await,
        email_verification::JOB => email_verification::mail_key(svc, email).await,
        other => return Err(JobError::Dead(format!("unknown job kind `{other}`"))),
    };
    // Failures here are the database's: worth retrying.
    done.map_err(|e| JobError::Retry(crate::error::Chain(&e).to_string()))
}

//! `tokend email …`: a test message through the outbox, and its counts.

use tokend::config::Settings;
use tokend::mail::Mail;
use tokend::storage::outbox;

use super::{database, EmailCommand};

pub(super) fn email(settings: &Settings, command: EmailCommand) -> anyhow::Result<()> {
    let db = database(settings)?;
    match command {
        EmailCommand::Test { address } => {
            // Refused here rather than given up by the sender later.
            address
                .parse::<lettre::message::Mailbox>()
                .map_err(|_| anyhow::anyhow!("`{address}` is not an e-mail address"))?;
            let now = tokend::clock::unix_now();
            let mail = Mail {
                to: address.clone(),
                subject: "tokend test message".into(),
                text: format!(
                    "This is a test message from tokend, queued at {now} (unix time) by \
                     `tokend email test`.\n\nE-mail delivery works."
                ),
                html: Some(format!(
                    "<p>This is a test message from tokend, queued at {now} (unix time) by \
                     <code>tokend email test</code>.</p><p>E-mail delivery works.</p>"
                )),
            };
            db.run_blocking(|conn| Ok(outbox::enqueue_mail(conn, &mail, now)?))?;
            let how = match settings.email.smtp_url() {
                Some(_) => "sends it through email.smtp_url",
                None if settings.email.log_instead => {
                    "logs it instead of sending it (no email.smtp_url)"
                }
                None => "gives it up unsent (no email.smtp_url and email.log_instead = false)",
            };
            println!(
                "queued a test message to {address}; a running `tokend serve` {how}. \
                 `tokend email status` shows the outbox."
            );
        }
        EmailCommand::Status => {
            let counts = db.run_blocking(|conn| outbox::counts(conn, tokend::mail::KIND))?;
            println!(
                "queued {}\nsent {}\ndead {}",
                counts.queued, counts.sent, counts.dead
            );
        }
    }
    Ok(())
}

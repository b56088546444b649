//! E-mail: the messages tokend sends (password reset, address
//! verification), queued in the outbox and delivered by a background
//! sender.

pub mod templates;

use serde::{Deserialize, Serialize};

/// The outbox `kind` of e-mail messages.
pub const KIND: &str = "email";

/// One message, as stored in the outbox.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// The HTML alternative, when there is one.
    pub html: Option<String>,
}

/// Never prints the body: it holds one-time links.
impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

pub mod sender;

/// The process's handle on the outbox sender, shared through `Services`:
/// the request path calls `notify` after committing a transaction that
/// queued mail, so that this process sends it at once instead of at its
/// next poll.
#[derive(Clone, Default)]
pub struct Outbox {
    /// The mail and jobs loop's, and the webhook loop's: each its own, so
    /// that a wake-up reaches both.
    wake: [std::sync::Arc<tokio::sync::Notify>; 2],
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the sender's loops (a no-op cost when they are busy: one stored
    /// permit each).
    pub fn notify(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }

    /// Resolves at the next `notify` (or at once if one is pending), for
    /// the loop `index` (0: mail and jobs, 1: webhooks).
    pub async fn notified(&self, index: usize) {
        self.wake[index.min(1)].notified().await;
    }
}

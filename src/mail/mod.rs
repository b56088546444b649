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

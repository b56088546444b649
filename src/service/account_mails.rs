//! The mails of account flows (password reset, address verification): a
//! fresh one-time token, the link to the frontend that carries it, and the
//! message rendered from the configured templates.

use crate::auth::account_tokens::{digest, encode_uid, new_token};
use crate::config::{AccountsSettings, EmailVerification};
use crate::mail::templates::render;
use crate::mail::Mail;
use crate::storage::account_tokens::{MailedToken, RESET, VERIFY};

/// What the account flows need of `accounts.*`.
#[derive(Debug, Clone)]
pub struct AccountMails {
    settings: AccountsSettings,
}

struct Rendered<'a> {
    subject: &'a str,
    text: &'a str,
    html: &'a str,
}

impl AccountMails {
    pub fn new(settings: AccountsSettings) -> Self {
        AccountMails { settings }
    }

    pub fn verification(&self) -> EmailVerification {
        self.settings.email_verification
    }

    /// A password-reset token for user `user_id` named `username`, mailed
    /// to `to`, valid from `now`.
    pub fn reset(&self, user_id: i64, username: &str, to: &str, now: i64) -> MailedToken {
        let s = &self.settings;
        let (uid, token) = (encode_uid(user_id), new_token());
        let link = link(&s.reset_url, &[("uid", &uid), ("token", &token)]);
        let mail = self.render(
            Rendered {
                subject: &s.reset_subject,
                text: &s.reset_text,
                html: &s.reset_html,
            },
            username,
            to,
            &link,
            &[("uid", &uid), ("token", &token)],
            s.reset_ttl_secs,
        );
        MailedToken {
            purpose: RESET,
            email: None,
            digest: digest(&token),
            expires_at: now + s.reset_ttl_secs,
            mail,
        }
    }

    /// A verification token confirming address `to` of `username`.
    pub fn verify(&self, username: &str, to: &str, now: i64) -> MailedToken {
        let s = &self.settings;
        let key = new_token();
        let link = link(&s.verify_url, &[("key", &key)]);
        let mail = self.render(
            Rendered {
                subject: &s.verify_subject,
                text: &s.verify_text,
                html: &s.verify_html,
            },
            username,
            to,
            &link,
            &[("key", &key)],
            s.verify_ttl_secs,
        );
        MailedToken {
            purpose: VERIFY,
            email: Some(to.to_owned()),
            digest: digest(&key),
            expires_at: now + s.verify_ttl_secs,
            mail,
        }
    }

    fn render(
        &self,
        templates: Rendered<'_>,
        username: &str,
        to: &str,
        link: &str,
        codes: &[(&str, &str)],
        ttl_secs: i64,
    ) -> Mail {
        let (minutes, hours) = ((ttl_secs / 60).to_string(), (ttl_secs / 3600).to_string());
        let mut values = vec![
            ("site", self.settings.site_name.as_str()),
            ("username", username),
            ("link", link),
            ("minutes", minutes.as_str()),
            ("hours", hours.as_str()),
        ];
        values.extend_from_slice(codes);
        Mail {
            to: to.to_owned(),
            subject: render(templates.subject, &values, false).replace(['\r', '\n'], " "),
            text: render(templates.text, &values, false),
            html: (!templates.html.is_empty()).then(|| render(templates.html, &values, true)),
        }
    }
}

/// The frontend link; without a configured URL, the codes as text.
fn link(url: &str, codes: &[(&str, &str)]) -> String {
    if url.is_empty() {
        codes
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        render(url, codes, false)
    }
}

//! Webhooks of the audit trail: each audit row whose event passes
//! `webhooks.events` is queued in the outbox once per `webhooks.url`, in the
//! transaction that inserts the row (`storage::audit::insert_batch`), and
//! delivered by the outbox sender as a signed POST (Standard Webhooks),
//! retried with back-off until a 2xx. Also the signed-request helpers the
//! claims hook shares.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::webhook;
use crate::config::WebhooksSettings;
use crate::mail::sender::JobError;
use crate::storage::audit::AuditEvent;

/// The outbox `kind` of webhook deliveries.
pub const KIND: &str = "webhook";

/// Why a message for a URL this process does not have waits.
pub const NOT_CONFIGURED: &str = "the URL is not in this process's webhooks.url";

/// Stored errors are cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// Where audit events go: the configured URLs and the events they want.
/// Only routing, no secret: the storage layer queues with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    urls: Vec<String>,
    /// Event names; empty: every event.
    events: Vec<String>,
}

impl Targets {
    /// Nowhere: no webhook is queued.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn new(urls: Vec<String>, events: Vec<String>) -> Self {
        Targets { urls, events }
    }

    pub fn from_settings(settings: &WebhooksSettings) -> Self {
        Self::new(settings.url.clone(), settings.events.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The URLs an event named `event` is sent to (none when filtered out).
    pub fn urls_for(&self, event: &str) -> &[String] {
        if self.events.is_empty() || self.events.iter().any(|e| e == event) {
            &self.urls
        } else {
            &[]
        }
    }
}

/// One delivery as the outbox stores it: the `webhook-id` and the body are
/// fixed when it is queued, so every attempt sends the same id (receivers
/// deduplicate on it) and the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub url: String,
    pub id: String,
    pub body: String,
}

impl Message {
    /// A new message (a fresh `msg_…` id) of `event` to `url`.
    pub fn new(url: &str, event: &AuditEvent) -> Self {
        Message {
            url: url.to_owned(),
            id: webhook::new_message_id(),
            body: body(event),
        }
    }
}

/// The JSON body of an event's webhook: the Standard Webhooks envelope
/// `{"type", "timestamp", "data"}` with the audit row in `data` (its
/// `detail` as the JSON object it is).
pub fn body(event: &AuditEvent) -> String {
    let detail = event.detail.as_deref().map(|text| {
        serde_json::from_str::<serde_json::Value>(text)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
    });
    serde_json::json!({
        "type": event.event,
        "timestamp": crate::clock::rfc3339(event.at),
        "data": {
            "id": event.id,
            "user_id": event.user_id,
            "username": event.username,
            "session_id": event.session_id,
            "client_id": event.client_id,
            "ip": event.ip,
            "user_agent": event.user_agent,
            "request_id": event.request_id,
            "detail": detail,
        },
    })
    .to_string()
}

/// The HTTP client of signed calls: whole-call timeout, no redirects (a 3xx
/// is a failure, the Standard Webhooks advice: the URL is the operator's to
/// fix, and a redirect could point anywhere), tokend's user agent.
pub fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokend/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A POST of `body` to `url`, signed with `key` under the message id `id`
/// and the current instant (the attempt's: receivers check it against
/// their clock).
pub fn signed_post(
    client: &reqwest::Client,
    url: reqwest::Url,
    key: &[u8],
    id: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let timestamp = crate::clock::unix_now();
    let signature = webhook::sign(key, id, timestamp, &body);
    client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
}

/// Sends queued webhooks (the outbox sender's webhook kind).
pub struct Sender {
    urls: Vec<String>,
    key: Vec<u8>,
    timeout: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("webhooks::Sender")
            .field("urls", &self.urls)
            .field("key", &"***")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Sender {
    /// The configured sender, or `None` without `webhooks.url`. Settings
    /// are validated at load; a failure here is a start-up error.
    pub fn from_settings(settings: &WebhooksSettings) -> anyhow::Result<Option<Self>> {
        if settings.url.is_empty() {
            return Ok(None);
        }
        let key = webhook::parse_secret(settings.secret.expose())
            .map_err(|e| anyhow::anyhow!("webhooks.secret {e}"))?;
        let timeout = settings.timeout();
        Ok(Some(Sender {
            urls: settings.url.clone(),
            key,
            timeout,
            client: http_client(timeout)?,
        }))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One attempt at the message stored as `payload`: any 2xx delivers
    /// it; any other answer, a timeout or no connection is retried.
    pub async fn deliver(&self, payload: &str) -> Result<(), JobError> {
        let message: Message = serde_json::from_str(payload)
            .map_err(|_| JobError::Dead("unreadable payload".into()))?;
        // Not (or no longer) configured here: retried, not dropped, as
        // another replica may have it (a rolling change of the URLs); once
        // the message is old enough it is given up.
        if !self.urls.contains(&message.url) {
            return Err(JobError::Retry(NOT_CONFIGURED.into()));
        }
        let url = reqwest::Url::parse(&message.url)
            .map_err(|_| JobError::Dead("not a URL (webhooks.url)".into()))?;
        let request = signed_post(
            &self.client,
            url,
            &self.key,
            &message.id,
            message.body.into_bytes(),
        );
        let response = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| JobError::Retry("timed out (webhooks.timeout_ms)".into()))?
            // Without the URL: a receiver's token in its query string must
            // not reach the outbox row or the logs.
            .map_err(|e| {
                JobError::Retry(short(&crate::error::Chain(&e.without_url()).to_string()))
            })?;
        // The answer's body is not read: only the status counts.
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(JobError::Retry(format!(
                "answered HTTP {}",
                status.as_u16()
            )))
        }
    }
}

fn short(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stored `login_failed` row, for tests.
    pub(crate) fn event() -> AuditEvent {
        AuditEvent {
            id: 7,
            at: 1_798_765_445,
            event: "login_failed".into(),
            user_id: None,
            username: Some("al\"ice".into()),
            session_id: None,
            client_id: None,
            ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("r-1".into()),
            detail: Some(r#"{"reason":"bad_credentials"}"#.into()),
        }
    }

    #[test]
    fn the_body_is_the_envelope_with_the_row_in_data() {
        assert_eq!(
            body(&event()),
            r#"{"type":"login_failed","timestamp":"2027-01-01T01:04:05Z","data":{"id":7,"user_id":null,"username":"al\"ice","session_id":null,"client_id":null,"ip":"192.0.2.7","user_agent":"curl/8","request_id":"r-1","detail":{"reason":"bad_credentials"}}}"#
        );
        let bare = AuditEvent {
            detail: None,
            user_id: Some(3),
            ..event()
        };
        let value: serde_json::Value = serde_json::from_str(&body(&bare)).unwrap();
        assert_eq!(value["data"]["detail"], serde_json::Value::Null);
        assert_eq!(value["data"]["user_id"], 3);
    }

    #[test]
    fn messages_keep_their_id_and_bytes_through_the_outbox() {
        let message = Message::new("http://h/hook", &event());
        assert!(message.id.starts_with("msg_"));
        let stored = serde_json::to_string(&message).unwrap();
        assert_eq!(serde_json::from_str::<Message>(&stored).unwrap(), message);
        assert_ne!(Message::new("http://h/hook", &event()).id, message.id);
    }

    #[test]
    fn the_filter_picks_the_urls_of_an_event() {
        let urls = vec!["http://a/h".to_owned(), "http://b/h".to_owned()];
        let all = Targets::new(urls.clone(), vec![]);
        assert_eq!(all.urls_for("login_succeeded"), urls.as_slice());
        let failed = Targets::new(urls.clone(), vec!["login_failed".into()]);
        assert_eq!(failed.urls_for("login_failed"), urls.as_slice());
        assert!(failed.urls_for("login_succeeded").is_empty());
        assert!(Targets::none().urls_for("login_failed").is_empty());
        assert!(Targets::none().is_empty());
    }

    #[tokio::test]
    async fn unreadable_messages_are_given_up_and_unknown_urls_wait() {
        let settings = WebhooksSettings {
            url: vec!["http://127.0.0.1:9/hook".into()],
            secret: crate::config::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            events: vec![],
            give_up_after_secs: 86_400,
            retry_initial_secs: 5,
            retry_max_secs: 3600,
            timeout_ms: 1000,
        };
        let sender = Sender::from_settings(&settings).unwrap().unwrap();
        assert!(!format!("{sender:?}").contains("MfKQ"));
        assert_eq!(
            sender.deliver("{").await,
            Err(JobError::Dead("unreadable payload".into()))
        );
        let elsewhere =
            serde_json::to_string(&Message::new("http://other/hook", &event())).unwrap();
        assert_eq!(
            sender.deliver(&elsewhere).await,
            Err(JobError::Retry(NOT_CONFIGURED.into()))
        );
        let off = WebhooksSettings {
            url: vec![],
            ..settings
        };
        assert!(Sender::from_settings(&off).unwrap().is_none());
    }
}

//! The outbox sender: one background task per `tokend serve` process that
//! claims due rows of each kind from the outbox, handles them, and records
//! the outcome with the kind's back-off: the account mail jobs
//! (`service::jobs`) first, then e-mail over SMTP (lettre, async: never a
//! blocking thread for the network), then the audit webhooks over HTTP
//! (`crate::webhooks`). The database work goes through `Database::write`,
//! on the bounded blocking pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Mail, Outbox, KIND};
use crate::config::{EmailSettings, WebhooksSettings};
use crate::metrics::Metrics;
use crate::storage::{outbox, Database};

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Messages claimed (and delivered concurrently) at a time.
const BATCH: i64 = 10;

/// How often the sender counts the outbox for the gauges, at most.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// Stored errors are cut to this many characters.
const MAX_ERROR_CHARS: usize = 200;

/// Why a job or a webhook failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again later (e.g. the database was away).
    Retry(String),
    /// It can never succeed.
    Dead(String),
}

/// Runs a job of the kind given, with its payload (provided by the service
/// layer: `service::jobs::run`).
pub type JobRunner = Arc<
    dyn Fn(&'static str, String) -> Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>
        + Send
        + Sync,
>;

/// The jobs the sender runs: their kinds and how.
#[derive(Clone)]
pub struct Jobs {
    pub kinds: &'static [&'static str],
    pub run: JobRunner,
}

/// The SMTP transport for `url` (lettre's URL forms, see
/// `AsyncSmtpTransport::from_url`); connects to nothing.
pub fn transport(
    url: &str,
    timeout: Duration,
) -> Result<Transport, lettre::transport::smtp::Error> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
        .timeout(Some(timeout))
        .build())
}

/// How this process delivers mail.
#[derive(Clone)]
pub enum Delivery {
    /// Shared by the concurrent deliveries of a batch.
    Smtp(Arc<Smtp>),
    /// No SMTP, dev: the message goes to the log and counts as sent.
    Log,
    /// No SMTP, production: the message is given up unsent (it is never
    /// logged: its links are credentials).
    Refuse,
}

impl Delivery {
    pub fn from_settings(settings: &EmailSettings) -> anyhow::Result<Self> {
        let Some(url) = settings.smtp_url() else {
            return Ok(if settings.log_instead {
                Delivery::Log
            } else {
                Delivery::Refuse
            });
        };
        // Validated at load; the errors here never echo the URL.
        let transport = transport(url, settings.smtp_timeout())
            .map_err(|e| anyhow::anyhow!("email.smtp_url: {e}"))?;
        let from = settings
            .from()
            .ok_or_else(|| anyhow::anyhow!("email.from is required with email.smtp_url"))?
            .parse::<Mailbox>()
            .map_err(|e| anyhow::anyhow!("email.from: {e}"))?;
        Ok(Delivery::Smtp(Arc::new(Smtp {
            transport,
            from,
            timeout: settings.smtp_timeout(),
        })))
    }

    fn name(&self) -> &'static str {
        match self {
            Delivery::Smtp(_) => "smtp",
            Delivery::Log => "log",
            Delivery::Refuse => "none",
        }
    }
}

pub struct Smtp {
    transport: Transport,
    from: Mailbox,
    timeout: Duration,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Try again later (unless the message is too old).
    Retry(String),
    /// Never try again: the relay refused it for good, or it cannot be sent.
    Dead(String),
}

impl Outcome {
    fn of(result: Result<(), JobError>) -> Self {
        match result {
            Ok(()) => Outcome::Sent,
            Err(JobError::Retry(e)) => Outcome::Retry(short(&e)),
            Err(JobError::Dead(e)) => Outcome::Dead(short(&e)),
        }
    }
}

/// The retry schedule of a kind (`email.retry_*` and
/// `email.give_up_after_secs`; `webhooks.…` for webhooks).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial_secs: i64,
    pub max_secs: i64,
    pub give_up_after_secs: i64,
}

impl Backoff {
    fn from_settings(settings: &EmailSettings) -> Self {
        Backoff {
            initial_secs: settings.retry_initial_secs,
            max_secs: settings.retry_max_secs,
            give_up_after_secs: settings.give_up_after_secs,
        }
    }

    fn for_webhooks(settings: &WebhooksSettings) -> Self {
        Backoff {
            initial_secs: settings.retry_initial_secs,
            max_secs: settings.retry_max_secs,
            give_up_after_secs: settings.give_up_after_secs,
        }
    }

    /// The delay before the attempt after `failures` failed ones: doubling
    /// from `initial_secs`, capped at `max_secs`, less up to 20% (`jitter`
    /// in 0..=1) so that messages that failed together spread out.
    fn delay(&self, failures: i32, jitter: f64) -> i64 {
        let doublings = failures.saturating_sub(1).clamp(0, 40) as u32;
        let delay = self
            .initial_secs
            .saturating_mul(1_i64 << doublings.min(30))
            .min(self.max_secs);
        let spread = (delay as f64 * 0.2 * jitter.clamp(0.0, 1.0)) as i64;
        (delay - spread).max(1)
    }

    /// When to try again after `failures` failed attempts of a message
    /// queued at `created_at`, the last one failing `now`; `None`: give up
    /// (only once the message has been tried for `give_up_after_secs`).
    fn next_attempt(&self, created_at: i64, failures: i32, now: i64, jitter: f64) -> Option<i64> {
        (now < created_at.saturating_add(self.give_up_after_secs))
            .then(|| now.saturating_add(self.delay(failures, jitter)))
    }
}

pub struct Sender {
    db: Database,
    outbox: Outbox,
    delivery: Delivery,
    metrics: Arc<Metrics>,
    poll_interval: Duration,
    backoff: Backoff,
    jobs: Option<Jobs>,
    /// `None`: no `webhooks.url` in this process.
    webhooks: Option<Arc<crate::webhooks::Sender>>,
    webhook_backoff: Backoff,
}

/// The kinds of rows the sender delivers itself (jobs come on top).
const KINDS: [&str; 2] = [KIND, crate::webhooks::KIND];

impl Sender {
    pub fn new(
        db: Database,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        settings: &EmailSettings,
        webhooks: &WebhooksSettings,
    ) -> anyhow::Result<Self> {
        Ok(Sender {
            db,
            outbox,
            delivery: Delivery::from_settings(settings)?,
            metrics,
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
            backoff: Backoff::from_settings(settings),
            jobs: None,
            webhooks: crate::webhooks::Sender::from_settings(webhooks)?.map(Arc::new),
            webhook_backoff: Backoff::for_webhooks(webhooks),
        })
    }

    /// Also runs `jobs` (before delivering mail, which they may queue).
    pub fn with_jobs(mut self, jobs: Jobs) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Starts the loops on the current runtime: one for jobs and mail, one
    /// for webhooks, so that a receiver that hangs until its timeout cannot
    /// hold back password-reset mail.
    pub fn spawn(self) {
        tracing::info!(
            delivery = self.delivery.name(),
            webhooks = self.webhooks.is_some(),
            "outbox sender started"
        );
        let sender = Arc::new(self);
        let mut mail: Vec<&'static str> = sender
            .jobs
            .iter()
            .flat_map(|jobs| jobs.kinds.iter().copied())
            .collect();
        mail.push(KIND);
        tokio::spawn(sender.clone().run(mail, 0));
        tokio::spawn(sender.run(vec![crate::webhooks::KIND], 1));
    }

    /// Delivers rows of `kinds` until the process ends; loop `index` 0
    /// also refreshes the gauges.
    async fn run(self: Arc<Self>, kinds: Vec<&'static str>, index: usize) {
        let mut counted: Option<Instant> = None;
        // While the database is away, one warning, not one per poll.
        let mut failing = false;
        loop {
            if index == 0 && counted.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
                self.update_gauges().await;
                counted = Some(Instant::now());
            }
            let full = match self.round(&kinds).await {
                Ok(claimed) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("outbox: claiming mail again");
                    }
                    claimed >= BATCH as usize
                }
                Err(e) if failing => {
                    tracing::debug!(error = %crate::error::Chain(&e), "outbox: cannot claim mail");
                    false
                }
                Err(e) => {
                    failing = true;
                    tracing::warn!(
                        error = %crate::error::Chain(&e),
                        "outbox: cannot claim mail; will retry every poll"
                    );
                    false
                }
            };
            if full {
                // More may be due right now.
                continue;
            }
            tokio::select! {
                () = self.outbox.notified(index) => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    async fn update_gauges(&self) {
        for kind in KINDS {
            match self.db.run(move |conn| outbox::gauges(conn, kind)).await {
                Ok((queued, dead)) => self.metrics.outbox_counts(kind, queued, dead),
                Err(e) => {
                    tracing::debug!(error = %crate::error::Chain(&e), "outbox: cannot count")
                }
            }
        }
    }

    /// One batch of each of `kinds`, in order; returns the largest number of
    /// rows claimed of one kind.
    async fn round(&self, kinds: &[&'static str]) -> Result<usize, crate::storage::StorageError> {
        let mut most = 0;
        for kind in kinds {
            most = most.max(self.batch(kind).await?);
        }
        Ok(most)
    }

    /// How long handling a row of `kind` may take at most, seconds.
    fn timeout_secs(&self, kind: &str) -> i64 {
        let timeout = match (kind, &self.delivery, &self.webhooks) {
            (KIND, Delivery::Smtp(smtp), _) => smtp.timeout,
            (crate::webhooks::KIND, _, Some(webhooks)) => webhooks.timeout(),
            _ => Duration::ZERO,
        };
        timeout.as_secs() as i64 + 1
    }

    /// The retry schedule of `kind`, and the setting that gives up.
    fn backoff(&self, kind: &str) -> (&Backoff, &'static str) {
        match kind {
            crate::webhooks::KIND => (&self.webhook_backoff, "webhooks.give_up_after_secs"),
            _ => (&self.backoff, "email.give_up_after_secs"),
        }
    }

    /// Claims one batch of due rows of `kind` and handles them
    /// concurrently; returns how many were claimed.
    async fn batch(&self, kind: &'static str) -> Result<usize, crate::storage::StorageError> {
        let now = crate::clock::unix_now();
        // The lease outlasts the delivery timeout, so that no other sender
        // takes a message this one may still be sending.
        let lease_until = now + self.timeout_secs(kind) + 30;
        let claimed = self
            .db
            .write(move |conn| outbox::claim_due(conn, kind, now, lease_until, BATCH))
            .await?;
        let count = claimed.len();
        let mut tasks = tokio::task::JoinSet::new();
        for row in claimed {
            let delivery = self.delivery.clone();
            let jobs = self.jobs.clone();
            let webhooks = self.webhooks.clone();
            tasks.spawn(async move {
                let outcome = match (kind, jobs, webhooks) {
                    (KIND, _, _) => deliver(&delivery, row.id, &row.payload).await,
                    (crate::webhooks::KIND, _, Some(webhooks)) => {
                        Outcome::of(webhooks.deliver(&row.payload).await)
                    }
                    // Another replica may have the configuration.
                    (crate::webhooks::KIND, _, None) => {
                        Outcome::Retry("webhooks.url is not set in this process".into())
                    }
                    (_, Some(jobs), _) => Outcome::of((jobs.run)(kind, row.payload.clone()).await),
                    (_, None, _) => Outcome::Retry(format!("no handler for `{kind}` here")),
                };
                (row, outcome)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((row, outcome)) => self.record(kind, row, outcome).await,
                // A panic in one task: its lease runs out and the row is
                // claimed again.
                Err(e) => tracing::error!(kind, error = %e, "outbox: a task failed"),
            }
        }
        Ok(count)
    }

    async fn record(&self, kind: &'static str, row: outbox::Claimed, outcome: Outcome) {
        let now = crate::clock::unix_now();
        let id = row.id;
        let failures = row.attempts.saturating_add(1);
        let result = match outcome {
            Outcome::Sent => {
                self.metrics.outbox_sent(kind);
                self.db
                    .write(move |conn| outbox::mark_sent(conn, id, now))
                    .await
            }
            Outcome::Retry(error) => {
                self.metrics.outbox_failed_attempt(kind);
                let (backoff, give_up) = self.backoff(kind);
                let retry_at =
                    backoff.next_attempt(row.created_at, failures, now, rand::random::<f64>());
                match retry_at {
                    Some(at) => tracing::warn!(
                        kind,
                        id,
                        attempts = failures,
                        error = %error,
                        retry_in_secs = at - now,
                        "outbox: delivery failed; will retry"
                    ),
                    None => tracing::error!(
                        kind,
                        id,
                        attempts = failures,
                        error = %error,
                        "outbox: delivery failed; giving up ({give_up})"
                    ),
                }
                self.db
                    .write(move |conn| outbox::mark_failed(conn, id, &error, retry_at, now))
                    .await
            }
            Outcome::Dead(error) => {
                self.metrics.outbox_failed_attempt(kind);
                tracing::error!(kind, id, error = %error, "outbox: given up");
                self.db
                    .write(move |conn| outbox::mark_failed(conn, id, &error, None, now))
                    .await
            }
        };
        if let Err(e) = result {
            // The lease runs out and the message is claimed again: sent
            // twice at worst, never lost.
            tracing::warn!(
                kind,
                id,
                error = %crate::error::Chain(&e),
                "outbox: cannot record an outcome"
            );
        }
    }
}

/// One attempt at delivering the message stored as `payload`.
async fn deliver(delivery: &Delivery, id: i64, payload: &str) -> Outcome {
    let mail: Mail = match serde_json::from_str(payload) {
        Ok(mail) => mail,
        Err(_) => return Outcome::Dead("unreadable payload".into()),
    };
    match delivery {
        Delivery::Log => {
            tracing::info!(
                id,
                to = %mail.to,
                subject = %mail.subject,
                text = %mail.text,
                "e-mail not sent (no SMTP configured, email.log_instead): logged instead"
            );
            Outcome::Sent
        }
        Delivery::Refuse => {
            tracing::warn!(
                id,
                subject = %mail.subject,
                "e-mail given up: no SMTP configured (set TOKEND__EMAIL__SMTP_URL)"
            );
            Outcome::Dead("no SMTP configured".into())
        }
        Delivery::Smtp(smtp) => {
            let message = match message(&smtp.from, &mail) {
                Ok(message) => message,
                Err(e) => return Outcome::Dead(e),
            };
            match tokio::time::timeout(smtp.timeout, smtp.transport.send(message)).await {
                Ok(Ok(_)) => Outcome::Sent,
                Ok(Err(e)) if e.is_permanent() => Outcome::Dead(short(&e.to_string())),
                Ok(Err(e)) => Outcome::Retry(short(&e.to_string())),
                Err(_) => Outcome::Retry("timed out (email.smtp_timeout_ms)".into()),
            }
        }
    }
}

/// The RFC 5322 message: text alone, or text and HTML alternatives.
fn message(from: &Mailbox, mail: &Mail) -> Result<Message, String> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|_| "invalid recipient address".to_owned())?;
    let builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone());
    let built = match &mail.html {
        Some(html) => builder.multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            html.clone(),
        )),
        None => builder.singlepart(SinglePart::plain(mail.text.clone())),
    };
    built.map_err(|e| short(&format!("cannot build the message: {e}")))
}

fn short(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial_secs: 5,
        max_secs: 3600,
        give_up_after_secs: 86_400,
    };

    #[test]
    fn delays_double_from_the_initial_up_to_the_cap_less_jitter() {
        let delays: Vec<i64> = (1..=12).map(|n| BACKOFF.delay(n, 0.0)).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(BACKOFF.delay(1000, 0.0), 3600);
        // Jitter takes off at most a fifth.
        assert_eq!(BACKOFF.delay(1, 1.0), 4);
        assert_eq!(BACKOFF.delay(11, 1.0), 2880);
        assert_eq!(BACKOFF.delay(11, 0.5), 3240);
    }

    #[test]
    fn messages_are_retried_for_the_whole_give_up_window() {
        // Worst case jitter: the most attempts; none gives up early.
        let created = 1_000_000;
        let mut now = created;
        let mut failures = 0;
        while let Some(at) = BACKOFF.next_attempt(created, failures + 1, now, 1.0) {
            failures += 1;
            now = at;
        }
        let given_up = now - created;
        assert!(
            (86_400..86_400 + 3600).contains(&given_up),
            "gave up after {given_up} s"
        );
        // Roughly 10 attempts to reach the cap, then hourly-ish.
        assert!((30..=45).contains(&failures), "{failures} attempts");
    }

    #[test]
    fn messages_have_both_alternatives_and_refuse_bad_recipients() {
        let from: Mailbox = "tokend <noreply@example.com>".parse().unwrap();
        let mail = Mail {
            to: "alice@example.com".into(),
            subject: "Reset".into(),
            text: "Follow https://x/reset?t=1".into(),
            html: Some("<p>Follow <a href=\"https://x/reset?t=1\">this</a></p>".into()),
        };
        let raw = String::from_utf8(message(&from, &mail).unwrap().formatted()).unwrap();
        assert!(raw.contains("From: tokend <noreply@example.com>"), "{raw}");
        assert!(raw.contains("To: alice@example.com"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"), "{raw}");
        assert!(raw.contains("text/html"), "{raw}");
        let bad = Mail {
            to: "not an address".into(),
            ..mail
        };
        assert_eq!(
            message(&from, &bad).err().as_deref(),
            Some("invalid recipient address")
        );
    }

    /// Queuing wakes the sender at once, long before its next poll.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_notify_wakes_the_sender_before_its_poll() {
        use crate::config::{DatabaseSettings, Secret};
        let dir = tempfile::tempdir().unwrap();
        let db = Database::new(&DatabaseSettings {
            url: Secret::new(dir.path().join("t.db").display().to_string()),
            pool_size: 2,
            pool_timeout_ms: 5_000,
            sqlite_busy_timeout_ms: 5_000,
        })
        .unwrap();
        db.migrate_blocking().unwrap();
        let outbox = Outbox::new();
        let metrics = Arc::new(Metrics::new(vec![]).unwrap());
        let sender = Sender {
            db: db.clone(),
            outbox: outbox.clone(),
            delivery: Delivery::Log,
            metrics: metrics.clone(),
            poll_interval: Duration::from_secs(600),
            backoff: BACKOFF,
            jobs: None,
            webhooks: None,
            webhook_backoff: BACKOFF,
        };
        sender.spawn();
        // Its first look finds nothing; the next poll is ten minutes away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mail = Mail {
            to: "a@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: None,
        };
        let now = crate::clock::unix_now();
        db.write(move |conn| Ok(outbox::enqueue_mail(conn, &mail, now)?))
            .await
            .unwrap();
        outbox.notify();
        let started = Instant::now();
        loop {
            let counts = db.run(|conn| outbox::counts(conn, KIND)).await.unwrap();
            if counts.sent == 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{counts:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metrics
            .render((0, 0))
            .contains(r#"tokend_outbox_sent_total{kind="email"} 1"#));
    }

    #[tokio::test]
    async fn without_smtp_production_gives_up_and_dev_logs() {
        let payload = serde_json::to_string(&Mail {
            to: "a@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: None,
        })
        .unwrap();
        assert_eq!(deliver(&Delivery::Log, 1, &payload).await, Outcome::Sent);
        assert_eq!(
            deliver(&Delivery::Refuse, 1, &payload).await,
            Outcome::Dead("no SMTP configured".into())
        );
        assert_eq!(
            deliver(&Delivery::Log, 1, "{").await,
            Outcome::Dead("unreadable payload".into())
        );
    }
}

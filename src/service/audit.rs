//! The audit trail: security events recorded by the use cases and written
//! to `audit_events` by a background task, in batches.
//!
//! Recording costs a request a non-blocking channel send: `Audit::record`
//! never waits and never touches the database. When the bounded queue is
//! full (the database is slow or away), the event is dropped, counted in
//! `tokend_audit_dropped_total` and warned about. The writer inserts up to
//! `batch` rows per statement, at most `interval` after the first of them
//! arrived, and flushes what is queued when the server shuts down. Events
//! still queued when the process dies (a crash, SIGKILL) are lost: delivery
//! is at most once (docs/audit.md). Webhooks of the events are queued with
//! their rows (`crate::webhooks`), so they share that fate.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::origin::Origin;
use crate::metrics::Metrics;
use crate::storage::audit::NewAuditEvent;
use crate::storage::{Database, StorageError};

/// Longest username kept (Django's limit): a failed login records the name
/// as typed, which may be anything.
pub const MAX_USERNAME_CHARS: usize = 150;

macro_rules! kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// What happened. The names are a contract (docs/audit.md).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind { $($variant),* }

        impl EventKind {
            /// Every kind, in documentation order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $name),* }
            }
        }
    };
}

kinds! {
    LoginSucceeded => "login_succeeded",
    LoginFailed => "login_failed",
    BackoffEngaged => "backoff_engaged",
    Registered => "registered",
    RefreshReuseDetected => "refresh_reuse_detected",
    GraceReplayServed => "grace_replay_served",
    Logout => "logout",
    LogoutAll => "logout_all",
    PasswordChanged => "password_changed",
    PasswordReset => "password_reset",
    EmailVerified => "email_verified",
    SessionRevoked => "session_revoked",
    UserDisabled => "user_disabled",
    UserDeleted => "user_deleted",
    AdminAction => "admin_action",
    ClientCreated => "client_created",
    ClientDisabled => "client_disabled",
    KeySetAtStartup => "key_set_at_startup",
}

impl std::str::FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event `{s}`; one of: {}", names.join(", "))
            })
    }
}

/// More about an event, stored as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// `{"reason": …}`: e.g. why a login failed. Static, so that recording
    /// it allocates nothing.
    Reason(&'static str),
    Json(serde_json::Value),
}

/// One event, as recorded; turned into a row by the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Unix seconds.
    pub at: i64,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub session_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub detail: Option<Detail>,
}

impl Event {
    pub fn new(kind: EventKind, at: i64) -> Self {
        Event {
            kind,
            at,
            user_id: None,
            username: None,
            session_id: None,
            client_id: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: None,
        }
    }

    /// The request's address, user agent and request id.
    pub fn origin(mut self, origin: &Origin) -> Self {
        self.ip = Some(origin.ip);
        self.user_agent.clone_from(&origin.user_agent);
        self.request_id.clone_from(&origin.request_id);
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn user(mut self, user_id: i64) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The username as given: control characters dropped, cut to
    /// `MAX_USERNAME_CHARS`.
    pub fn username(mut self, username: &str) -> Self {
        let clean = |c: &char| !c.is_control();
        self.username = Some(
            if username.chars().all(|c| clean(&c)) && username.len() <= MAX_USERNAME_CHARS {
                username.to_owned()
            } else {
                username
                    .chars()
                    .filter(clean)
                    .take(MAX_USERNAME_CHARS)
                    .collect()
            },
        );
        self
    }

    pub fn session(mut self, session_id: &str) -> Self {
        self.session_id = Some(session_id.to_owned());
        self
    }

    pub fn client(mut self, client_id: &str) -> Self {
        self.client_id = Some(client_id.to_owned());
        self
    }

    pub fn reason(mut self, reason: &'static str) -> Self {
        self.detail = Some(Detail::Reason(reason));
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(Detail::Json(detail));
        self
    }

    /// This event as `backoff_engaged` (same subject and origin).
    pub fn backoff(self) -> Self {
        Event {
            kind: EventKind::BackoffEngaged,
            ..self
        }
    }

    /// The row to insert (off the request path: in the writer).
    pub fn into_row(self) -> NewAuditEvent {
        NewAuditEvent {
            at: self.at,
            event: self.kind.as_str().to_owned(),
            user_id: self.user_id,
            username: self.username,
            session_id: self.session_id,
            client_id: self.client_id,
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent,
            request_id: self.request_id,
            detail: self.detail.map(|d| {
                match d {
                    Detail::Reason(reason) => serde_json::json!({ "reason": reason }),
                    Detail::Json(value) => value,
                }
                .to_string()
            }),
        }
    }
}

/// A `login_failed` event for `username` as typed (`user_id` when such a
/// user exists); never anything of the password.
pub fn login_failed(
    at: i64,
    origin: &Origin,
    username: &str,
    user_id: Option<i64>,
    reason: &'static str,
) -> Event {
    let event = Event::new(EventKind::LoginFailed, at)
        .origin(origin)
        .username(username)
        .reason(reason);
    match user_id {
        Some(id) => event.user(id),
        None => event,
    }
}

/// An event about the session of a presented refresh token.
pub fn refresh_event(
    kind: EventKind,
    at: i64,
    origin: &Origin,
    presented: &super::policy::PresentedRefresh,
) -> Event {
    Event::new(kind, at)
        .origin(origin)
        .user(presented.user_id)
        .session(&presented.session_id)
}

/// A unix timestamp (seconds), or an RFC 3339 time
/// (`2026-12-02T10:00:00Z`, `2026-12-02T11:00:00+01:00`, fractions ignored).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let bad = || format!("`{text}` is neither a unix timestamp nor an RFC 3339 time");
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &text[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let (h, m) = (&rest[1..3], &rest[4..6]);
            if !(h.bytes().chain(m.bytes())).all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            sign * (h.parse::<i64>().map_err(|_| bad())? * 3600
                + m.parse::<i64>().map_err(|_| bad())? * 60)
        }
        _ => return Err(bad()),
    };
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

// Howard Hinnant's algorithm for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The recording side, shared by the use cases.
pub struct Audit {
    tx: mpsc::Sender<Event>,
    /// Until the writer takes it.
    rx: Mutex<Option<mpsc::Receiver<Event>>>,
    metrics: Arc<Metrics>,
    /// When a drop was last warned about (unix seconds): at most one
    /// warning a second, however many are dropped.
    warned_at: AtomicI64,
}

impl Audit {
    /// A queue of `capacity` events (at least 1).
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Audit {
            tx,
            rx: Mutex::new(Some(rx)),
            metrics,
            warned_at: AtomicI64::new(0),
        }
    }

    /// Queues `event` for the writer; never waits. A full queue (or a
    /// stopped writer) drops it, counted and warned about.
    pub fn record(&self, event: Event) {
        let Err(e) = self.tx.try_send(event) else {
            return;
        };
        self.metrics.audit_dropped(1);
        let now = crate::clock::unix_now();
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != now
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the audit queue is full",
                mpsc::error::TrySendError::Closed(_) => "the audit writer has stopped",
            };
            tracing::warn!(
                event = e.into_inner().kind.as_str(),
                "{why}: audit event dropped (see tokend_audit_dropped_total)"
            );
        }
    }

    /// The queue's receiving end, once: for the writer.
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Event>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Rows per INSERT at most.
    pub batch: usize,
    /// How long the first event of a batch waits for others.
    pub interval: Duration,
    /// Pauses before retrying a batch the database refused; then it is
    /// dropped (counted).
    pub retry_delays: &'static [Duration],
}

pub const RETRY_DELAYS: &[Duration] = &[Duration::from_millis(500), Duration::from_secs(2)];

/// The background writer of a serving process.
pub struct AuditWriter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl AuditWriter {
    /// Starts writing `audit`'s events to `db` (and queuing their webhooks,
    /// `outbox` woken when there are); `None` when a writer already took
    /// the queue.
    pub fn spawn(
        audit: &Audit,
        db: Database,
        outbox: crate::mail::Outbox,
        settings: WriterSettings,
    ) -> Option<Self> {
        let rx = audit.take_receiver()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let metrics = audit.metrics.clone();
        let task = tokio::spawn(run(rx, settings, stopped, metrics, move |rows| {
            let (db, outbox) = (db.clone(), outbox.clone());
            async move {
                let webhooks = db.webhooks();
                let queued = !webhooks.is_empty();
                let written = db
                    .write(move |conn| crate::storage::audit::insert_batch(conn, &webhooks, &rows))
                    .await?;
                if queued {
                    outbox.notify();
                }
                Ok(written)
            }
        }));
        Some(AuditWriter { stop, task })
    }

    /// Writes what is queued and stops; gives up after `timeout` (the rest
    /// is lost).
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!("the audit writer did not finish in time: queued events are lost");
        }
    }
}

/// The writer's loop: waits for an event, gathers more for up to
/// `interval` or until `batch` are there, hands them to `sink` (retrying
/// per `retry_delays`), and so on until `stop` completes or every sender is
/// gone; then refuses new events and writes what is left.
pub async fn run<S, F>(
    mut rx: mpsc::Receiver<Event>,
    settings: WriterSettings,
    stop: impl Future<Output = impl Sized>,
    metrics: Arc<Metrics>,
    mut sink: S,
) where
    S: FnMut(Arc<Vec<NewAuditEvent>>) -> F,
    F: Future<Output = Result<usize, StorageError>>,
{
    let batch = settings.batch.max(1);
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let mut events = Vec::with_capacity(batch);
    while !stopping {
        tokio::select! {
            biased;
            _ = &mut stop => stopping = true,
            n = rx.recv_many(&mut events, batch) => if n == 0 { break },
        }
        let deadline = tokio::time::Instant::now() + settings.interval;
        while !stopping && events.len() < batch {
            let room = batch - events.len();
            tokio::select! {
                biased;
                _ = &mut stop => stopping = true,
                _ = tokio::time::sleep_until(deadline) => break,
                n = rx.recv_many(&mut events, room) => if n == 0 { break },
            }
        }
        if !events.is_empty() {
            let delays = if stopping {
                &[][..]
            } else {
                settings.retry_delays
            };
            write(&mut events, &mut sink, delays, &metrics).await;
        }
    }
    // Whatever was sent before this point is written; later sends fail
    // (counted as dropped by `Audit::record`).
    rx.close();
    while rx.recv_many(&mut events, batch).await > 0 {
        write(&mut events, &mut sink, &[], &metrics).await;
    }
}

async fn write<S, F>(
    events: &mut Vec<Event>,
    sink: &mut S,
    retry_delays: &[Duration],
    metrics: &Metrics,
) where
    S: FnMut(Arc<Vec<NewAuditEvent>>) -> F,
    F: Future<Output = Result<usize, StorageError>>,
{
    let rows: Arc<Vec<NewAuditEvent>> = Arc::new(events.drain(..).map(Event::into_row).collect());
    let mut delays = retry_delays.iter();
    loop {
        match sink(rows.clone()).await {
            Ok(_) => {
                metrics.audit_written(rows.len());
                return;
            }
            Err(e) => match delays.next() {
                Some(delay) => {
                    tracing::warn!(error = %crate::error::Chain(&e), rows = rows.len(), "audit events not written; will retry");
                    tokio::time::sleep(*delay).await;
                }
                None => {
                    metrics.audit_dropped(rows.len());
                    tracing::warn!(error = %crate::error::Chain(&e), rows = rows.len(), "audit events not written: dropped (see tokend_audit_dropped_total)");
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(vec![]).unwrap())
    }

    fn counter(m: &Metrics, name: &str) -> u64 {
        let text = m.render((0, 0));
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    fn event(n: i64) -> Event {
        Event::new(EventKind::LoginFailed, n)
    }

    type Batches = Arc<Mutex<Vec<Vec<i64>>>>;

    /// A sink that records each batch's `at`s, failing the first `fail`
    /// calls.
    fn sink(
        batches: Batches,
        fail: usize,
    ) -> impl FnMut(Arc<Vec<NewAuditEvent>>) -> std::future::Ready<Result<usize, StorageError>>
    {
        let calls = AtomicUsize::new(0);
        move |rows| {
            if calls.fetch_add(1, Ordering::SeqCst) < fail {
                return std::future::ready(Err(StorageError::unavailable_because("test")));
            }
            batches
                .lock()
                .unwrap()
                .push(rows.iter().map(|r| r.at).collect());
            std::future::ready(Ok(rows.len()))
        }
    }

    const SETTINGS: WriterSettings = WriterSettings {
        batch: 3,
        interval: Duration::from_millis(200),
        retry_delays: &[Duration::from_millis(10)],
    };

    /// Polls `f` until it holds, for at most two seconds.
    async fn eventually(f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn batches_are_bounded_and_wait_at_most_the_interval() {
        let m = metrics();
        let audit = Audit::new(100, m.clone());
        let rx = audit.take_receiver().unwrap();
        assert!(audit.take_receiver().is_none());
        let batches = Batches::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let settings = WriterSettings {
            interval: Duration::from_millis(400),
            ..SETTINGS
        };
        let task = tokio::spawn(run(
            rx,
            settings,
            stopped,
            m.clone(),
            sink(batches.clone(), 0),
        ));
        let start = std::time::Instant::now();
        for n in 1..=7 {
            audit.record(event(n));
        }
        // Two full batches at once; the seventh waits for company.
        eventually(|| batches.lock().unwrap().len() == 2).await;
        assert_eq!(*batches.lock().unwrap(), [vec![1, 2, 3], vec![4, 5, 6]]);
        assert!(start.elapsed() < Duration::from_millis(300));
        eventually(|| batches.lock().unwrap().len() == 3).await;
        assert!(start.elapsed() >= Duration::from_millis(400));
        assert_eq!(batches.lock().unwrap()[2], [7]);
        assert_eq!(counter(&m, "tokend_audit_written_total"), 7);
        drop(stop);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_queued_then_refuses_more() {
        let m = metrics();
        let audit = Audit::new(100, m.clone());
        let rx = audit.take_receiver().unwrap();
        let batches = Batches::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        for n in 1..=5 {
            audit.record(event(n));
        }
        stop.send(()).unwrap();
        // Stopped before it ever ran: the queue is still written.
        run(rx, SETTINGS, stopped, m.clone(), sink(batches.clone(), 0)).await;
        let written: Vec<i64> = batches.lock().unwrap().concat();
        assert_eq!(written, [1, 2, 3, 4, 5]);
        assert!(batches.lock().unwrap().iter().all(|b| b.len() <= 3));
        audit.record(event(6));
        assert_eq!(counter(&m, "tokend_audit_dropped_total"), 1);
        assert_eq!(counter(&m, "tokend_audit_written_total"), 5);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let m = metrics();
        let audit = Audit::new(2, m.clone());
        // No writer: the queue fills.
        for n in 1..=5 {
            audit.record(event(n));
        }
        assert_eq!(counter(&m, "tokend_audit_dropped_total"), 3);
        let batches = Batches::default();
        let rx = audit.take_receiver().unwrap();
        drop(audit);
        // Every sender gone: the writer writes the rest and ends.
        run(
            rx,
            SETTINGS,
            std::future::pending::<()>(),
            m.clone(),
            sink(batches.clone(), 0),
        )
        .await;
        assert_eq!(*batches.lock().unwrap(), [vec![1, 2]]);
    }

    #[tokio::test]
    async fn refused_batches_are_retried_then_dropped() {
        let m = metrics();
        let audit = Audit::new(10, m.clone());
        let rx = audit.take_receiver().unwrap();
        let batches = Batches::default();
        // One failure: the retry writes it.
        audit.record(event(1));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            rx,
            SETTINGS,
            stopped,
            m.clone(),
            sink(batches.clone(), 1),
        ));
        eventually(|| batches.lock().unwrap().len() == 1).await;
        assert_eq!(*batches.lock().unwrap(), [vec![1]]);
        drop(stop);
        task.await.unwrap();

        let audit = Audit::new(10, m.clone());
        let rx = audit.take_receiver().unwrap();
        audit.record(event(2));
        audit.record(event(3));
        drop(audit);
        // Two failures, one retry: the batch is lost and counted.
        run(
            rx,
            SETTINGS,
            std::future::pending::<()>(),
            m.clone(),
            sink(batches.clone(), 2),
        )
        .await;
        assert_eq!(batches.lock().unwrap().len(), 1);
        assert_eq!(counter(&m, "tokend_audit_dropped_total"), 2);
    }

    #[test]
    fn rows_carry_the_origin_and_a_json_detail() {
        let origin = Origin::from_ip(IpAddr::from([192, 0, 2, 7]))
            .with_user_agent(Some("curl/8"))
            .with_request_id(Some("r-1".into()));
        let row = Event::new(EventKind::LoginFailed, 42)
            .origin(&origin)
            .username(&format!("a\u{0}{}", "b".repeat(500)))
            .reason("bad_credentials")
            .into_row();
        assert_eq!(row.event, "login_failed");
        assert_eq!(row.ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(row.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(row.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            row.detail.as_deref(),
            Some(r#"{"reason":"bad_credentials"}"#)
        );
        let name = row.username.unwrap();
        assert_eq!(name.chars().count(), MAX_USERNAME_CHARS);
        assert!(name.starts_with("ab"));
        assert_eq!(
            "grace_replay_served".parse::<EventKind>(),
            Ok(EventKind::GraceReplayServed)
        );
        assert!("nope"
            .parse::<EventKind>()
            .unwrap_err()
            .contains("login_failed"));
        assert_eq!(EventKind::ALL.len(), 18);
    }
}

//! E-mail delivery through the outbox, against a real SMTP server
//! (tests/smtp-sink/sink.py, aiosmtpd) that writes every message it accepts
//! to a directory, parsed by Python's email package. Without python3 these
//! tests are skipped, except under CI=true where they fail.

use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

use diesel::prelude::*;
use serde_json::Value;
use tokend::config::Settings;
use tokend::mail::Mail;
use tokend::storage::schema::outbox;
use tokend::storage::Database;

use crate::both_backends;
use crate::helpers::{
    free_port, now, python_venv, spawn_app_with, test_env, Backend, ChildServer, TestApp,
    TestDatabase,
};

const FROM: &str = "tokend tests <noreply@tokend.test>";

/// Whether the sink can run; panics under CI=true when it cannot.
fn have_python() -> bool {
    crate::helpers::have_python("the SMTP sink")
}

/// The SMTP server of a test, on a port chosen before it starts (so that
/// tokend can be pointed at it while it is still down).
struct Sink {
    port: u16,
    dir: tempfile::TempDir,
    server: Option<ChildServer>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            server: None,
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp-sink");
        let venv = python_venv("smtp-sink-venv", &dir.join("requirements.txt"));
        let mut command = Command::new(venv.join("bin/python"));
        command
            .arg(dir.join("sink.py"))
            .arg(self.port.to_string())
            .arg(self.dir.path())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        self.server = Some(ChildServer::start(&mut command));
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut numbered: Vec<(u64, Value)> = std::fs::read_dir(self.dir.path())
            .expect("sink dir")
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let n = name.strip_suffix(".json")?.parse().ok()?;
                let text = std::fs::read_to_string(entry.path()).ok()?;
                Some((n, serde_json::from_str(&text).expect("sink JSON")))
            })
            .collect();
        numbered.sort_by_key(|(n, _)| *n);
        numbered.into_iter().map(|(_, v)| v).collect()
    }

    /// Waits for `count` messages, then a little longer to catch any
    /// duplicate; returns all received.
    async fn received(&self, count: usize, within: Duration) -> Vec<Value> {
        wait_until(&format!("{count} message(s) received"), within, || async {
            self.messages().len() >= count
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.messages()
    }
}

pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Short timings: polls every 100 ms, retries every second.
fn smtp_settings(url: &str) -> Vec<(String, String)> {
    [
        ("TOKEND__EMAIL__SMTP_URL", url),
        ("TOKEND__EMAIL__FROM", FROM),
        ("TOKEND__EMAIL__POLL_INTERVAL_MS", "100"),
        ("TOKEND__EMAIL__RETRY_INITIAL_SECS", "1"),
        ("TOKEND__EMAIL__RETRY_MAX_SECS", "1"),
        ("TOKEND__EMAIL__SMTP_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn app_with(backend: Backend, settings: &[(String, String)]) -> TestApp {
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app_with(backend, &pairs).await
}

fn mail(to: &str, n: usize) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("Reset your password ({n})"),
        text: format!("Follow https://app.example.com/reset?token=t{n} to reset it.\n"),
        html: Some(format!(
            "<p>Follow <a href=\"https://app.example.com/reset?token=t{n}\">this link</a>.</p>\n"
        )),
    }
}

/// Queues `mails` in one transaction, as the code that causes mail does.
async fn enqueue(db: &Database, mails: Vec<Mail>) {
    db.write(move |conn| {
        conn.transaction(|conn| {
            for mail in &mails {
                tokend::storage::outbox::enqueue_mail(conn, mail, now())?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    })
    .await
    .expect("enqueue");
}

/// (id, attempts, last_error, sent, dead) of every row, by id.
type Row = (i64, i32, Option<String>, bool, bool);

/// The same with sent_at and dead_at.
type RawRow = (i64, i32, Option<String>, Option<i64>, Option<i64>);

async fn rows(db: &Database) -> Vec<Row> {
    db.run(|conn| {
        let rows: Vec<RawRow> = outbox::table
            .select((
                outbox::id,
                outbox::attempts,
                outbox::last_error,
                outbox::sent_at,
                outbox::dead_at,
            ))
            .order(outbox::id)
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(id, attempts, error, sent, dead)| {
                (id, attempts, error, sent.is_some(), dead.is_some())
            })
            .collect())
    })
    .await
    .expect("outbox rows")
}

async fn metric(app: &TestApp, line_start: &str) -> String {
    let text = app.send(app.client.get(app.url("/metrics"))).await.body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .to_owned()
}

/// A queued message arrives once, with the configured From, its To and
/// Subject, and both the text and the HTML alternative.
async fn queued_mail_is_delivered_once_with_both_parts(backend: Backend) {
    if !have_python() {
        return;
    }
    let mut sink = Sink::new();
    sink.start();
    let app = app_with(backend, &smtp_settings(&sink.url())).await;
    enqueue(&app.db, vec![mail("alice@example.com", 1)]).await;
    let received = sink.received(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let m = &received[0];
    assert_eq!(m["mail_from"], "noreply@tokend.test");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["alice@example.com"]));
    assert_eq!(m["from"], FROM);
    assert_eq!(m["to"], "alice@example.com");
    assert_eq!(m["subject"], "Reset your password (1)");
    assert_eq!(m["content_type"], "multipart/alternative");
    assert_eq!(
        m["text"],
        "Follow https://app.example.com/reset?token=t1 to reset it.\n"
    );
    assert_eq!(
        m["html"],
        "<p>Follow <a href=\"https://app.example.com/reset?token=t1\">this link</a>.</p>\n"
    );
    let rows = rows(&app.db).await;
    assert_eq!(rows, [(rows[0].0, 0, None, true, false)]);
    assert_eq!(
        metric(&app, "tokend_outbox_sent_total{").await,
        r#"tokend_outbox_sent_total{kind="email"} 1"#
    );
}

/// The relay is down when the mail is queued: the attempt fails, is
/// retried, and the mail arrives (once) when the relay comes up.
async fn mail_is_retried_until_the_relay_is_up(backend: Backend) {
    if !have_python() {
        return;
    }
    let mut sink = Sink::new();
    let app = app_with(backend, &smtp_settings(&sink.url())).await;
    enqueue(&app.db, vec![mail("bob@example.com", 2)]).await;
    wait_until("a failed attempt", Duration::from_secs(10), || async {
        rows(&app.db).await.first().is_some_and(|r| r.1 >= 1)
    })
    .await;
    let row = rows(&app.db).await.remove(0);
    assert!(!row.3 && !row.4, "{row:?}");
    let error = row.2.clone().expect("last error");
    assert!(error.contains("Connection refused"), "{error}");
    let failed = metric(&app, "tokend_outbox_failed_attempts_total{").await;
    assert_ne!(
        failed,
        r#"tokend_outbox_failed_attempts_total{kind="email"} 0"#
    );
    sink.start();
    let received = sink.received(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["subject"], "Reset your password (2)");
    let row = rows(&app.db).await.remove(0);
    assert!(row.3 && !row.4 && row.1 >= 1, "{row:?}");
}

/// Several senders (replicas) on one outbox: every message is delivered
/// exactly once.
async fn replicas_deliver_each_mail_exactly_once(backend: Backend) {
    if !have_python() {
        return;
    }
    let mut sink = Sink::new();
    sink.start();
    let app = app_with(backend, &smtp_settings(&sink.url())).await;
    let replicas = [app.spawn_replica().await, app.spawn_replica().await];
    const N: usize = 60;
    let mails = (0..N)
        .map(|n| mail(&format!("user{n}@example.com"), n))
        .collect();
    enqueue(&app.db, mails).await;
    let received = sink.received(N, Duration::from_secs(30)).await;
    let mut recipients: Vec<String> = received
        .iter()
        .map(|m| m["to"].as_str().expect("to").to_owned())
        .collect();
    recipients.sort();
    let mut expected: Vec<String> = (0..N).map(|n| format!("user{n}@example.com")).collect();
    expected.sort();
    assert_eq!(recipients, expected);
    assert!(rows(&app.db).await.iter().all(|r| r.3 && r.1 == 0));
    let mut total = 0;
    for a in [&app, &replicas[0], &replicas[1]] {
        let line = metric(a, "tokend_outbox_sent_total{").await;
        total += line.rsplit(' ').next().unwrap().parse::<usize>().unwrap();
    }
    assert_eq!(total, N);
}

/// `tokend serve` as a process, killable without a graceful shutdown.
pub(crate) struct Serve {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Serve {
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, as a service manager stops it: the process must exit 0.
    pub(crate) async fn stop(mut self) {
        crate::process::sigterm(self.child.id());
        let (status, server) = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().expect("wait");
            (status, self)
        })
        .await
        .expect("join");
        assert!(status.success(), "tokend exited {status}");
        drop(server);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tokend_command(database_url: &str, extra: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tokend"));
    command
        .envs(test_env(database_url))
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .env("TOKEND__LOG__LEVEL", "info")
        .envs(extra.iter().map(|(k, v)| (k, v)));
    command
}

#[allow(clippy::zombie_processes)] // reaped in Drop
pub(crate) async fn serve(database_url: &str, extra: &[(String, String)], log_dir: &Path) -> Serve {
    let port = free_port();
    let log = log_dir.join(format!("tokend-{port}.log"));
    let child = tokend_command(database_url, extra)
        .env("TOKEND__SERVER__PORT", port.to_string())
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    let server = Serve { child, log, port };
    let client = reqwest::Client::new();
    wait_until("tokend answers", Duration::from_secs(20), || async {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
    })
    .await;
    server
}

/// Runs `tokend ARGS` on the database; returns its stdout, or panics.
pub(crate) fn cli(database_url: &str, extra: &[(String, String)], args: &[&str]) -> String {
    let out = tokend_command(database_url, extra)
        .args(args)
        .output()
        .expect("run tokend");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tokend {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn open_database(database_url: &str) -> Database {
    let settings =
        Settings::load_from(Path::new("/nonexistent"), &test_env(database_url)).expect("settings");
    let db = Database::new(&settings.database).expect("database");
    db.migrate_blocking().expect("migrations");
    db
}

/// A fresh database for `tokend serve` processes: its URL, a handle on it
/// and a directory for their logs.
pub(crate) fn for_processes(backend: Backend) -> (TestDatabase, String, Database, TempDir) {
    let database = TestDatabase::create(backend);
    let url = database.url().to_owned();
    let db = open_database(&url);
    (database, url, db, tempfile::tempdir().expect("temp dir"))
}

/// A queued, undelivered message outlives the process that failed to send
/// it (killed, not stopped): the next process delivers it.
async fn queued_mail_survives_a_restart(backend: Backend) {
    if !have_python() {
        return;
    }
    let (_database, url, db, logs) = for_processes(backend);
    let mut sink = Sink::new();
    let settings = smtp_settings(&sink.url());
    let first = serve(&url, &settings, logs.path()).await;
    let queued = cli(&url, &settings, &["email", "test", "carol@example.com"]);
    assert!(
        queued.starts_with("queued a test message to carol@example.com; a running `tokend serve`"),
        "{queued}"
    );
    wait_until("a failed attempt", Duration::from_secs(10), || async {
        rows(&db).await.first().is_some_and(|r| r.1 >= 1)
    })
    .await;
    drop(first); // SIGKILL
    assert_eq!(
        cli(&url, &settings, &["email", "status"]),
        "queued 1\nsent 0\ndead 0\n"
    );
    sink.start();
    // Nothing delivers it while no tokend runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.messages().len(), 0);
    let _second = serve(&url, &settings, logs.path()).await;
    let received = sink.received(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["to"], "carol@example.com");
    assert_eq!(received[0]["subject"], "tokend test message");
    assert_eq!(
        cli(&url, &settings, &["email", "status"]),
        "queued 0\nsent 1\ndead 0\n"
    );
}

/// No SMTP URL in the dev profile: the message (with its link) goes to the
/// log and counts as sent; in production it is never logged, and given up.
async fn without_smtp_dev_logs_and_production_gives_up(backend: Backend) {
    let database = TestDatabase::create(backend);
    let url = database.url().to_owned();
    let db = empty_outbox(&url).await;
    let logs = tempfile::tempdir().expect("temp dir");
    let fast = vec![(
        "TOKEND__EMAIL__POLL_INTERVAL_MS".to_owned(),
        "100".to_owned(),
    )];
    let dev = serve(&url, &fast, logs.path()).await;
    enqueue(&db, vec![mail("dave@example.com", 3)]).await;
    wait_until(
        "the message is handled",
        Duration::from_secs(10),
        || async { rows(&db).await.first().is_some_and(|r| r.3 || r.4) },
    )
    .await;
    let log = dev.log.clone();
    drop(dev);
    let log = std::fs::read_to_string(log).expect("log");
    assert!(
        log.contains("e-mail not sent (no SMTP configured, email.log_instead): logged instead"),
        "{log}"
    );
    assert!(log.contains("dave@example.com"), "{log}");
    assert!(log.contains("Reset your password (3)"), "{log}");
    assert!(
        log.contains("https://app.example.com/reset?token=t3"),
        "{log}"
    );
    let row = rows(&db).await.remove(0);
    assert_eq!((row.1, row.2, row.3, row.4), (0, None, true, false));

    let production = [
        ("TOKEND_PROFILE", "production"),
        ("TOKEND__PASSWORD__BCRYPT_COST", "10"),
        ("TOKEND__EMAIL__POLL_INTERVAL_MS", "100"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let logs = tempfile::tempdir().expect("temp dir");
    let prod = serve(&url, &production, logs.path()).await;
    enqueue(&db, vec![mail("erin@example.com", 4)]).await;
    wait_until(
        "the message is handled",
        Duration::from_secs(10),
        || async { rows(&db).await.get(1).is_some_and(|r| r.3 || r.4) },
    )
    .await;
    let log = prod.log.clone();
    drop(prod);
    let row = rows(&db).await.remove(1);
    assert_eq!(
        (row.1, row.2.as_deref(), row.3, row.4),
        (1, Some("no SMTP configured"), false, true)
    );
    let log = std::fs::read_to_string(log).expect("log");
    assert!(log.contains("e-mail given up: no SMTP configured"), "{log}");
    assert!(!log.contains("token=t4"), "{log}");
    assert!(!log.contains("erin@example.com"), "{log}");
}

async fn empty_outbox(url: &str) -> Database {
    let db = open_database(url);
    assert_eq!(rows(&db).await, []);
    db
}

/// The purge deletes sent and dead messages older than
/// `email.retention_days`, and nothing queued.
async fn purge_removes_old_sent_and_dead_mail(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__EMAIL__POLL_INTERVAL_MS", "600000")]).await;
    // The app's sender polled once at start-up, before these exist; its
    // next poll is ten minutes away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    enqueue(&app.db, (0..5).map(|n| mail("x@example.com", n)).collect()).await;
    let ids: Vec<i64> = rows(&app.db).await.iter().map(|r| r.0).collect();
    let queued = ids[4];
    let day = 86_400;
    let (old, recent) = (now() - 8 * day, now() - 6 * day);
    let marks = [
        (ids[0], Some(old), None),    // sent 8 days ago: purged
        (ids[1], None, Some(old)),    // dead 8 days ago: purged
        (ids[2], Some(recent), None), // sent 6 days ago: kept
        (ids[3], None, Some(recent)), // dead 6 days ago: kept
    ];
    app.db
        .write(move |conn| {
            for (id, sent, dead) in marks {
                diesel::update(outbox::table.filter(outbox::id.eq(id)))
                    .set((
                        outbox::sent_at.eq(sent),
                        outbox::dead_at.eq(dead),
                        outbox::created_at.eq(old),
                    ))
                    .execute(conn)?;
            }
            // Queued for 8 days (never delivered): kept.
            diesel::update(outbox::table.filter(outbox::id.eq(queued)))
                .set(outbox::created_at.eq(old))
                .execute(conn)?;
            Ok(())
        })
        .await
        .expect("mark rows");
    let (ok, out) = crate::cli::tokend(&app, &["purge"], "");
    assert!(ok, "{out}");
    assert!(
        out.contains("purge done: 0 refresh token(s), 0 session(s), 2 outbox message(s), 0 account token(s), 0 service token revocation(s), 0 audit event(s) removed"),
        "{out}"
    );
    let left: Vec<i64> = rows(&app.db).await.iter().map(|r| r.0).collect();
    assert_eq!(left, ids[2..]);
}

/// A password reset request: the sender runs the queued job (the user is
/// looked up after the answer) and delivers the mail it queues, with the
/// reset link; an unknown address gets nothing.
async fn reset_requests_are_mailed_by_the_sender(backend: Backend) {
    if !have_python() {
        return;
    }
    let mut sink = Sink::new();
    sink.start();
    let mut settings = smtp_settings(&sink.url());
    settings.push((
        "TOKEND__ACCOUNTS__RESET_URL".to_owned(),
        "https://app.example/reset/{uid}/{token}".to_owned(),
    ));
    // A long poll: the request path's notify wakes the sender.
    settings.push((
        "TOKEND__EMAIL__POLL_INTERVAL_MS".to_owned(),
        "600000".to_owned(),
    ));
    let app = app_with(backend, &settings).await;
    app.post_json(
        "/api/user/register/",
        serde_json::json!({"username": "alice", "password": "pw", "email": "alice@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    for email in ["alice@example.com", "nobody@example.com"] {
        app.post_json(
            "/api/auth/password/reset/",
            serde_json::json!({ "email": email }),
        )
        .await
        .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    }
    let received = sink.received(1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["to"], "alice@example.com");
    let text = received[0]["text"].as_str().expect("text");
    assert!(text.contains("https://app.example/reset/MQ/"), "{text}");
    // Both jobs done, the mail sent: nothing left queued.
    let rows = rows(&app.db).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.3 && !r.4 && r.1 == 0), "{rows:?}");
}

/// The relay is down when a reset is requested: the request still answers
/// 200, the mail arrives (once) when the relay is back, and the link in the
/// delivered message resets the password.
async fn a_reset_requested_while_the_relay_is_down_arrives_and_works(backend: Backend) {
    if !have_python() {
        return;
    }
    let mut sink = Sink::new();
    let mut settings = smtp_settings(&sink.url());
    settings.push((
        "TOKEND__ACCOUNTS__RESET_URL".to_owned(),
        "https://app.example/reset/{uid}/{token}".to_owned(),
    ));
    let app = app_with(backend, &settings).await;
    app.post_json(
        "/api/user/register/",
        serde_json::json!({"username": "erin", "password": "old pw", "email": "erin@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"erin"}"#);
    app.post_json(
        "/api/auth/password/reset/",
        serde_json::json!({"email": "erin@example.com"}),
    )
    .await
    .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    wait_until("a failed delivery", Duration::from_secs(10), || async {
        rows(&app.db).await.iter().any(|r| r.1 >= 1 && !r.3)
    })
    .await;
    sink.start();
    let received = sink.received(1, Duration::from_secs(15)).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["to"], "erin@example.com");
    let text = received[0]["text"].as_str().expect("text part");
    let link = text
        .split_whitespace()
        .find(|w| w.starts_with("https://app.example/reset/"))
        .expect("reset link");
    let parts: Vec<&str> = link
        .trim_start_matches("https://app.example/reset/")
        .split('/')
        .collect();
    app.post_json(
        "/api/auth/password/reset/confirm/",
        serde_json::json!({"uid": parts[0], "token": parts[1],
                           "new_password1": "new pw", "new_password2": "new pw"}),
    )
    .await
    .assert(
        200,
        r#"{"detail":"Password has been reset with the new password."}"#,
    );
    assert_eq!(app.login("erin", "new pw").await.status, 200);
    assert_eq!(app.login("erin", "old pw").await.status, 401);
    // Delivered: the table keeps recipient and subject, never the link.
    let token = parts[1].to_owned();
    let payloads: Vec<String> = app
        .db
        .run(|conn| {
            Ok(outbox::table
                .filter(outbox::kind.eq("email"))
                .select(outbox::payload)
                .load(conn)?)
        })
        .await
        .expect("payloads");
    assert_eq!(
        payloads,
        [r#"{"to":"erin@example.com","subject":"Password reset on tokend","redacted":true}"#]
    );
    assert!(!payloads[0].contains(&token));
}

/// A webhook receiver that accepts connections and never answers holds
/// each delivery for its whole timeout; mail goes out meanwhile, on a loop
/// of its own.
async fn a_hanging_webhook_receiver_does_not_hold_back_mail(backend: Backend) {
    if !have_python() {
        return;
    }
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let hook = format!("http://{}/hook", hanging.local_addr().expect("address"));
    // Accepted and held open, never answered.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    std::thread::spawn(move || {
        for stream in hanging.incoming().map_while(Result::ok) {
            holder.lock().expect("held").push(stream);
        }
    });
    let mut sink = Sink::new();
    sink.start();
    let mut settings = smtp_settings(&sink.url());
    for (k, v) in [
        ("TOKEND__WEBHOOKS__URL", hook.as_str()),
        (
            "TOKEND__WEBHOOKS__SECRET",
            "whsec_dG9rZW5kIGF1ZGl0IHdlYmhvb2sgdGVzdCBzZWNyZXQh",
        ),
        ("TOKEND__WEBHOOKS__TIMEOUT_MS", "60000"),
        ("TOKEND__AUDIT__FLUSH_INTERVAL_MS", "50"),
    ] {
        settings.push((k.to_owned(), v.to_owned()));
    }
    let app = app_with(backend, &settings).await;
    // Webhooks, all hanging.
    for _ in 0..12 {
        app.login("nobody", "wrong").await;
    }
    wait_until(
        "webhook deliveries under way",
        Duration::from_secs(10),
        // The webhook loop is stuck in a delivery (the start-up event's or
        // a login's, whichever batch it claimed first) for a minute.
        || async { !held.lock().expect("held").is_empty() },
    )
    .await;
    enqueue(&app.db, vec![mail("alice@example.com", 1)]).await;
    let received = sink.received(1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1, "{received:?}");
}

both_backends!(
    a_hanging_webhook_receiver_does_not_hold_back_mail,
    a_reset_requested_while_the_relay_is_down_arrives_and_works,
    queued_mail_is_delivered_once_with_both_parts,
    mail_is_retried_until_the_relay_is_up,
    replicas_deliver_each_mail_exactly_once,
    queued_mail_survives_a_restart,
    without_smtp_dev_logs_and_production_gives_up,
    purge_removes_old_sent_and_dead_mail,
    reset_requests_are_mailed_by_the_sender,
);

//! The audit webhooks against a real receiver (tests/claims-hook/receiver.py)
//! that checks every request's signature with the reference Standard
//! Webhooks library (`standardwebhooks`), an implementation independent of
//! tokend's. Without python3 these tests are skipped, except under CI=true
//! where they fail.

use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};
use tokend::storage::audit::{self, AuditEvent, AuditQuery};
use tokend::storage::schema::outbox;
use tokend::storage::Database;

use crate::both_backends;
use crate::claims_hook::Receiver;
use crate::helpers::free_port;
use crate::helpers::{claims, spawn_app_with, Backend, TestApp};
use crate::outbox::{cli, for_processes, serve, wait_until};

const SECRET: &str = "whsec_dG9rZW5kIGF1ZGl0IHdlYmhvb2sgdGVzdCBzZWNyZXQh";
const OTHER_SECRET: &str = "whsec_c29tZSBvdGhlciBzZWNyZXQsIG5vdCB0b2tlbmQncw==";

fn have_python() -> bool {
    crate::helpers::have_python("the webhook receiver")
}

/// Short timings: the outbox polled every 100 ms, retries every second.
fn settings(url: &str, events: &str) -> Vec<(String, String)> {
    [
        ("TOKEND__WEBHOOKS__URL", url),
        ("TOKEND__WEBHOOKS__SECRET", SECRET),
        ("TOKEND__WEBHOOKS__EVENTS", events),
        ("TOKEND__WEBHOOKS__RETRY_INITIAL_SECS", "1"),
        ("TOKEND__WEBHOOKS__RETRY_MAX_SECS", "1"),
        ("TOKEND__EMAIL__POLL_INTERVAL_MS", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn app(backend: Backend, url: &str, events: &str) -> TestApp {
    let settings = settings(url, events);
    let pairs: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    spawn_app_with(backend, &pairs).await
}

/// The webhook rows of the outbox: (payload, attempts, sent).
async fn webhook_rows(db: &Database) -> Vec<(String, i32, bool)> {
    db.run(|conn| {
        let rows: Vec<(String, i32, Option<i64>)> = outbox::table
            .filter(outbox::kind.eq("webhook"))
            .order(outbox::id)
            .select((outbox::payload, outbox::attempts, outbox::sent_at))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(payload, attempts, sent)| (payload, attempts, sent.is_some()))
            .collect())
    })
    .await
    .expect("outbox rows")
}

/// The audit rows of `event`, oldest first.
async fn audit_rows(db: &Database, event: &str) -> Vec<AuditEvent> {
    let query = AuditQuery {
        event: Some(event.to_owned()),
        limit: 100,
        ..Default::default()
    };
    let mut events = db
        .run(move |conn| audit::list(conn, &query))
        .await
        .expect("audit rows")
        .events;
    events.reverse();
    events
}

/// Waits for `count` calls at the receiver (all verified), 10 s at most.
async fn calls(receiver: &Receiver, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = receiver.calls().await;
        if calls.len() >= count {
            return calls;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} calls",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(app: &TestApp, series: &str) -> String {
    let text = app.send(app.client.get(app.url("/metrics"))).await.body;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_owned()
}

/// The webhook of `row`, as the receiver must have got it.
fn expected_payload(row: &AuditEvent) -> Value {
    json!({
        "type": row.event,
        "timestamp": tokend::clock::rfc3339(row.at),
        "data": {
            "id": row.id,
            "user_id": row.user_id,
            "username": row.username,
            "session_id": row.session_id,
            "client_id": row.client_id,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "request_id": row.request_id,
            "detail": row.detail.as_deref().map(|d| serde_json::from_str::<Value>(d).unwrap()),
        }
    })
}

/// A failed and a successful login: each arrives once, signed (checked by
/// the reference library), with exactly the audit row in `data`.
async fn logins_are_delivered_signed_with_the_audit_row(backend: Backend) {
    if !have_python() {
        return;
    }
    let receiver = Receiver::start_on(SECRET, None);
    let app = app(backend, &receiver.hook_url(), "").await;
    let created = app.register("alice", "pw12345").await;
    assert_eq!(created.status, 201, "{}", created.body);
    let user_id = created.json()["id"].as_i64().expect("id");
    let failed = app.login("alice", "wrong").await;
    assert_eq!(failed.status, 401);
    let ok = app.login("alice", "pw12345").await;
    assert_eq!(ok.status, 200);
    let sid = claims(&ok.token("refresh"))["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    // key_set_at_startup, registered, login_failed, login_succeeded.
    let mut received = calls(&receiver, 4).await;
    received.sort_by_key(|call| call["payload"]["data"]["id"].as_i64());
    let types: Vec<&str> = received
        .iter()
        .map(|c| c["payload"]["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "key_set_at_startup",
            "registered",
            "login_failed",
            "login_succeeded"
        ]
    );
    let failed_row = &audit_rows(&app.db, "login_failed").await[0];
    let ok_row = &audit_rows(&app.db, "login_succeeded").await[0];
    assert_eq!(received[2]["payload"], expected_payload(failed_row));
    assert_eq!(received[3]["payload"], expected_payload(ok_row));
    // The rows are what the requests did (so the payloads are too).
    assert_eq!(
        received[2]["payload"]["data"],
        json!({
            "id": failed_row.id, "user_id": user_id, "username": "alice", "session_id": null,
            "client_id": null, "ip": "127.0.0.1", "user_agent": null,
            "request_id": failed.header("x-request-id").expect("request id"),
            "detail": {"reason": "bad_credentials"},
        })
    );
    assert_eq!(
        received[3]["payload"]["data"],
        json!({
            "id": ok_row.id, "user_id": user_id, "username": "alice", "session_id": sid,
            "client_id": null, "ip": "127.0.0.1", "user_agent": null,
            "request_id": ok.header("x-request-id").expect("request id"),
            "detail": null,
        })
    );
    let now = crate::helpers::now();
    for call in &received {
        let headers = &call["headers"];
        assert_eq!(headers["content-type"], "application/json");
        let id = headers["webhook-id"].as_str().expect("webhook-id");
        assert!(id.starts_with("msg_") && id.len() == 28, "{id}");
        let at: i64 = headers["webhook-timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("webhook-timestamp");
        assert!((now - 30..=now).contains(&at), "{at} vs {now}");
    }
    let ids: std::collections::HashSet<&str> = received
        .iter()
        .map(|c| c["headers"]["webhook-id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    wait_until("recorded as sent", Duration::from_secs(5), || async {
        webhook_rows(&app.db).await.iter().all(|r| r.2)
    })
    .await;
    assert_eq!(webhook_rows(&app.db).await.len(), 4);
    assert_eq!(
        metric(&app, r#"tokend_outbox_sent_total{kind="webhook"}"#).await,
        "4"
    );
    assert_eq!(
        metric(
            &app,
            r#"tokend_outbox_failed_attempts_total{kind="webhook"}"#
        )
        .await,
        "0"
    );
    assert_eq!(receiver.calls().await.len(), 4);
}

/// `webhooks.events = login_failed`: nothing else is queued or sent.
async fn only_the_events_asked_for_are_sent(backend: Backend) {
    if !have_python() {
        return;
    }
    let receiver = Receiver::start_on(SECRET, None);
    let app = app(backend, &receiver.hook_url(), "login_failed").await;
    assert_eq!(app.register("bob", "pw12345").await.status, 201);
    assert_eq!(app.login("bob", "pw12345").await.status, 200);
    assert_eq!(app.login("bob", "nope").await.status, 401);
    let received = calls(&receiver, 1).await;
    assert_eq!(received[0]["payload"]["type"], "login_failed");
    assert_eq!(received[0]["payload"]["data"]["username"], "bob");
    // Every event of the test is written (the writer keeps their order):
    // only one of them queued a webhook.
    wait_until("the audit rows", Duration::from_secs(5), || async {
        audit_rows(&app.db, "login_failed").await.len() == 1
    })
    .await;
    assert_eq!(audit_rows(&app.db, "login_succeeded").await.len(), 1);
    assert_eq!(webhook_rows(&app.db).await.len(), 1);
    assert_eq!(receiver.calls().await.len(), 1);
}

/// The receiver fails twice, then recovers: each event arrives, counted
/// once by its webhook-id, which every attempt repeats.
async fn a_failing_receiver_gets_each_event_once_it_recovers(backend: Backend) {
    if !have_python() {
        return;
    }
    let receiver = Receiver::start_on(SECRET, None);
    receiver
        .behave(json!({"mode": "claims", "fail_first": 2}))
        .await;
    let app = app(backend, &receiver.hook_url(), "login_failed").await;
    assert_eq!(app.login("carol", "x").await.status, 401);
    assert_eq!(app.login("dave", "y").await.status, 401);
    // Two events, two failed attempts, then both delivered.
    wait_until("both delivered", Duration::from_secs(15), || async {
        let rows = webhook_rows(&app.db).await;
        rows.len() == 2 && rows.iter().all(|r| r.2)
    })
    .await;
    let received = receiver.calls().await;
    assert_eq!(received.len(), 4, "{received:#?}");
    let mut by_id: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for call in &received {
        by_id
            .entry(call["headers"]["webhook-id"].as_str().unwrap().to_owned())
            .or_default()
            .push(call["payload"].clone());
    }
    assert_eq!(by_id.len(), 2, "{by_id:#?}");
    let mut users: Vec<&str> = by_id
        .values()
        .map(|attempts| {
            // Every attempt of one id carries the same event.
            assert!(attempts.iter().all(|p| *p == attempts[0]), "{attempts:#?}");
            attempts[0]["data"]["username"].as_str().unwrap()
        })
        .collect();
    users.sort();
    assert_eq!(users, ["carol", "dave"]);
    let attempts: i32 = webhook_rows(&app.db).await.iter().map(|r| r.1).sum();
    assert_eq!(attempts, 2);
    assert_eq!(
        metric(
            &app,
            r#"tokend_outbox_failed_attempts_total{kind="webhook"}"#
        )
        .await,
        "2"
    );
    assert_eq!(
        metric(&app, r#"tokend_outbox_sent_total{kind="webhook"}"#).await,
        "2"
    );
    // Delivered means done: no attempt after that.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.calls().await.len(), 4);
}

/// The receiver is down while tokend stops (SIGTERM) with events pending:
/// the next tokend delivers them.
async fn pending_webhooks_are_delivered_after_a_restart(backend: Backend) {
    if !have_python() {
        return;
    }
    let (_database, url, db, logs) = for_processes(backend);
    let port = free_port();
    let settings = settings(&format!("http://127.0.0.1:{port}/hook"), "login_failed");
    let first = serve(&url, &settings, logs.path()).await;
    let client = reqwest::Client::new();
    let failed = client
        .post(format!("{}/api/token/", first.base()))
        .json(&json!({"username": "erin", "password": "wrong"}))
        .send()
        .await
        .expect("login");
    assert_eq!(failed.status(), 401);
    wait_until("a failed attempt", Duration::from_secs(10), || async {
        webhook_rows(&db).await.first().is_some_and(|r| r.1 >= 1)
    })
    .await;
    first.stop().await;
    let rows = webhook_rows(&db).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].2, "not delivered");
    let receiver = Receiver::start_on(SECRET, Some(port));
    // Nothing delivers it while no tokend runs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receiver.calls().await.is_empty());
    let _second = serve(&url, &settings, logs.path()).await;
    let received = calls(&receiver, 1).await;
    let row = &audit_rows(&db, "login_failed").await[0];
    assert_eq!(received[0]["payload"], expected_payload(row));
    assert_eq!(row.username.as_deref(), Some("erin"));
    wait_until("recorded as sent", Duration::from_secs(5), || async {
        webhook_rows(&db).await[0].2
    })
    .await;
    assert_eq!(receiver.calls().await.len(), 1);
}

/// A receiver holding another secret refuses every request: its check is
/// real, and tokend keeps the event for a later attempt.
async fn a_receiver_with_another_secret_refuses_the_signature(backend: Backend) {
    if !have_python() {
        return;
    }
    let receiver = Receiver::start_on(OTHER_SECRET, None);
    let app = app(backend, &receiver.hook_url(), "login_failed").await;
    assert_eq!(app.login("frank", "x").await.status, 401);
    wait_until("two refused attempts", Duration::from_secs(10), || async {
        receiver.raw_calls().await.len() >= 2
    })
    .await;
    for call in receiver.raw_calls().await {
        assert_eq!(call["verified"], false, "{call}");
        assert_eq!(
            call["error"], "WebhookVerificationError: No matching signature found",
            "{call}"
        );
    }
    let rows = webhook_rows(&app.db).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].2 && rows[0].1 >= 1, "{rows:?}");
}

/// Administration from the command line writes its audit row and queues
/// its webhook in one transaction; the running server delivers it.
async fn command_line_administration_is_sent_too(backend: Backend) {
    if !have_python() {
        return;
    }
    let receiver = Receiver::start_on(SECRET, None);
    let app = app(backend, &receiver.hook_url(), "user_disabled").await;
    let created = app.register("gina", "pw12345").await;
    assert_eq!(created.status, 201);
    let user_id = created.json()["id"].as_i64().expect("id");
    let settings = settings(&receiver.hook_url(), "user_disabled");
    cli(&app.database_url, &settings, &["users", "disable", "gina"]);
    let received = calls(&receiver, 1).await;
    let row = &audit_rows(&app.db, "user_disabled").await[0];
    assert_eq!(received[0]["payload"], expected_payload(row));
    assert_eq!(received[0]["payload"]["data"]["user_id"], user_id);
    assert_eq!(
        received[0]["payload"]["data"]["detail"],
        json!({"sessions_revoked": 0, "actor": "cli"})
    );
}

both_backends!(
    command_line_administration_is_sent_too,
    logins_are_delivered_signed_with_the_audit_row,
    only_the_events_asked_for_are_sent,
    a_failing_receiver_gets_each_event_once_it_recovers,
    pending_webhooks_are_delivered_after_a_restart,
    a_receiver_with_another_secret_refuses_the_signature,
);

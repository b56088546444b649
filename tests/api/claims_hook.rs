//! The claims hook against a real receiver (tests/claims-hook/receiver.py)
//! that checks every call's signature with the reference Standard Webhooks
//! library, an implementation independent of tokend's. Without python3 the
//! receiver's tests are skipped, except under CI=true where they fail.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{claims, python_venv, spawn_app_with, Backend, ChildServer, TestApp};

const HOOK_SECRET: &str = "whsec_dG9rZW5kIGNsYWltcyBob29rIHRlc3Qgc2VjcmV0ISE=";

const UNAVAILABLE: &str =
    r#"{"detail":"Claims service unavailable.","code":"claims_hook_unavailable"}"#;

/// tests/claims-hook/receiver.py, also the audit webhooks' receiver.
pub(crate) struct Receiver {
    server: ChildServer,
    client: reqwest::Client,
}

impl Receiver {
    /// The receiver, or `None` (test skipped) when python3 is missing
    /// outside CI.
    fn start() -> Option<Receiver> {
        if !crate::helpers::have_python("the claims hook receiver") {
            return None;
        }
        Some(Receiver::start_on(HOOK_SECRET, None))
    }

    /// The receiver checking signatures with `secret`, on `port` (default:
    /// a free one); python3 must be there (`have_python`).
    pub(crate) fn start_on(secret: &str, port: Option<u16>) -> Receiver {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claims-hook");
        let venv = python_venv("claims-hook-venv", &dir.join("requirements.txt"));
        let mut command = Command::new(venv.join("bin/python"));
        command
            .arg(dir.join("receiver.py"))
            .env("HOOK_SECRET", secret)
            .env("PORT", port.unwrap_or(0).to_string())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        Receiver {
            server: ChildServer::start(&mut command),
            client: reqwest::Client::new(),
        }
    }

    pub(crate) fn hook_url(&self) -> String {
        format!("{}/hook", self.server.url)
    }

    /// How the hook answers from now on (see receiver.py).
    pub(crate) async fn behave(&self, state: Value) {
        let response = self
            .client
            .post(format!("{}/control", self.server.url))
            .json(&state)
            .send()
            .await
            .expect("receiver control");
        assert_eq!(response.status(), 200);
    }

    async fn answer_claims(&self, claims: Value) {
        self.behave(json!({"mode": "claims", "claims": claims}))
            .await;
    }

    /// The calls received so far, each checked with the reference library.
    pub(crate) async fn calls(&self) -> Vec<Value> {
        let calls = self.raw_calls().await;
        for call in &calls {
            assert_eq!(call["verified"], true, "signature refused: {call}");
        }
        calls
    }

    /// The calls received so far, verified or not.
    pub(crate) async fn raw_calls(&self) -> Vec<Value> {
        let calls: Value = self
            .client
            .get(format!("{}/calls", self.server.url))
            .send()
            .await
            .expect("receiver calls")
            .json()
            .await
            .expect("calls JSON");
        calls.as_array().expect("a list").clone()
    }
}

async fn app_with_hook(backend: Backend, url: &str, failure: &str, timeout_ms: &str) -> TestApp {
    spawn_app_with(
        backend,
        &[
            ("TOKEND__CLAIMS__HOOK_URL", url),
            ("TOKEND__CLAIMS__HOOK_SECRET", HOOK_SECRET),
            ("TOKEND__CLAIMS__HOOK_TIMEOUT_MS", timeout_ms),
            ("TOKEND__CLAIMS__HOOK_FAILURE", failure),
            ("TOKEND__JWT__EXTRA_CLAIMS", "username,groups"),
        ],
    )
    .await
}

async fn register(app: &TestApp, username: &str) -> i64 {
    let created = app.register(username, "pw12345").await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.json()["id"].as_i64().expect("id")
}

/// `tokend_claims_hook_failures_total{failure, reason}` as /metrics shows it.
async fn failures(app: &TestApp, failure: &str, reason: &str) -> u64 {
    let text = app.send(app.client.get(app.url("/metrics"))).await.body;
    let series =
        format!(r#"tokend_claims_hook_failures_total{{failure="{failure}",reason="{reason}"}} "#);
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .expect("a count")
}

#[track_caller]
fn assert_unavailable(reply: &crate::helpers::Reply) {
    reply.assert(503, UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), Some("1"));
}

async fn hook_claims_at_login_and_refresh(backend: Backend) {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let app = app_with_hook(backend, &receiver.hook_url(), "closed", "2000").await;
    let id = register(&app, "alice").await;
    app.db
        .run(move |conn| {
            use tokend::storage::{groups, users};
            groups::create(conn, "ops")?;
            groups::create(conn, "editors")?;
            groups::add_member(conn, id, "ops")?;
            groups::add_member(conn, id, "editors")?;
            users::set_flag(conn, id, users::Flag::Staff, true)
        })
        .await
        .expect("groups");
    assert!(
        receiver.calls().await.is_empty(),
        "registration asks nothing"
    );

    // The hook's claims are merged over the computed ones.
    receiver
        .answer_claims(json!({"tenant": "acme", "roles": ["reader"], "username": "alice@acme"}))
        .await;
    let pair = app.login("alice", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    let access = claims(&pair.token("access"));
    assert_eq!(access["tenant"], "acme");
    assert_eq!(access["roles"], json!(["reader"]));
    assert_eq!(access["username"], "alice@acme");
    assert_eq!(access["groups"], json!(["editors", "ops"]));
    assert_eq!(access["user_id"], id.to_string());
    assert_eq!(access["token_type"], "access");
    let refresh_claims = claims(&pair.token("refresh"));
    assert!(refresh_claims.get("tenant").is_none(), "{refresh_claims}");

    let calls = receiver.calls().await;
    assert_eq!(calls.len(), 1);
    let login = &calls[0];
    assert_eq!(
        login["payload"],
        json!({
            "event": "login",
            "user": {
                "id": id,
                "username": "alice",
                "email": "",
                "is_staff": true,
                "is_superuser": false,
                "groups": ["editors", "ops"],
            },
            "claims": {"username": "alice", "groups": ["editors", "ops"]},
        })
    );
    assert_eq!(login["headers"]["content-type"], "application/json");
    let first_id = login["headers"]["webhook-id"].as_str().expect("webhook-id");
    assert!(first_id.starts_with("msg_"), "{first_id}");
    let sent_at: i64 = login["headers"]["webhook-timestamp"]
        .as_str()
        .expect("webhook-timestamp")
        .parse()
        .expect("unix seconds");
    assert!((sent_at - crate::helpers::now()).abs() < 30, "{sent_at}");

    // A refresh asks again, with the claims computed afresh.
    receiver.answer_claims(json!({"tenant": "globex"})).await;
    let refreshed = app.refresh(&pair.token("refresh")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let access = claims(&refreshed.token("access"));
    assert_eq!(access["tenant"], "globex");
    assert_eq!(access["username"], "alice");
    assert!(access.get("roles").is_none(), "{access}");
    let calls = receiver.calls().await;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["payload"]["event"], "refresh");
    assert_eq!(
        calls[1]["payload"]["claims"],
        json!({"username": "alice", "groups": ["editors", "ops"]})
    );
    assert_ne!(calls[1]["headers"]["webhook-id"], first_id);
}

async fn replays_use_the_stored_claims(backend: Backend) {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let app = app_with_hook(backend, &receiver.hook_url(), "closed", "2000").await;
    register(&app, "bob").await;
    receiver.answer_claims(json!({"tenant": "v1"})).await;
    let login = app.login("bob", "pw12345").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let first = app.refresh(&login.token("refresh")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(claims(&first.token("access"))["tenant"], "v1");

    // Inside the grace window the same pair comes back, though the hook
    // would now write other claims.
    receiver.answer_claims(json!({"tenant": "v2"})).await;
    let replay = app.refresh(&login.token("refresh")).await;
    replay.assert(200, &first.body);
    // The successor's own refresh does get the new claims.
    let next = app.refresh(&first.token("refresh")).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(claims(&next.token("access"))["tenant"], "v2");
    receiver.calls().await;
}

crate::both_backends!(
    hook_claims_at_login_and_refresh,
    replays_use_the_stored_claims
);

// The failure cases do not depend on the database: SQLite only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_claims_are_refused() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let closed = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "closed", "2000").await;
    register(&closed, "carol").await;
    for reserved in [
        "exp",
        "jti",
        "token_type",
        "sid",
        "iss",
        "aud",
        "client_id",
        "user_id",
    ] {
        receiver
            .answer_claims(json!({"tenant": "acme", reserved: 1}))
            .await;
        assert_unavailable(&closed.login("carol", "pw12345").await);
    }
    assert_eq!(failures(&closed, "closed", "reserved_claim").await, 8);
    assert_eq!(failures(&closed, "closed", "bad_answer").await, 0);

    let open = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "open", "2000").await;
    register(&open, "carol").await;
    receiver
        .answer_claims(json!({"tenant": "acme", "exp": 1}))
        .await;
    let pair = open.login("carol", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    let access = claims(&pair.token("access"));
    // The computed claims only: none of the refused answer's.
    assert!(access.get("tenant").is_none(), "{access}");
    assert!(access["exp"].as_i64().expect("exp") > crate::helpers::now());
    assert_eq!(access["username"], "carol");
    assert_eq!(failures(&open, "open", "reserved_claim").await, 1);
    assert_eq!(receiver.calls().await.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_its_timeout_fails() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    receiver
        .behave(json!({"mode": "sleep", "sleep_ms": 3000, "claims": {"tenant": "late"}}))
        .await;
    let closed = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "closed", "300").await;
    register(&closed, "dave").await;
    let started = Instant::now();
    assert_unavailable(&closed.login("dave", "pw12345").await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
    assert_eq!(failures(&closed, "closed", "timeout").await, 1);

    let open = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "open", "300").await;
    register(&open, "dave").await;
    let pair = open.login("dave", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    let access = claims(&pair.token("access"));
    assert!(access.get("tenant").is_none(), "{access}");
    assert_eq!(access["username"], "dave");
    assert_eq!(failures(&open, "open", "timeout").await, 1);
    // A refresh fails open the same way.
    let refreshed = open.refresh(&pair.token("refresh")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(failures(&open, "open", "timeout").await, 2);
}

/// Needs no receiver: nothing listens on the hook's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_is_down_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let closed = app_with_hook(Backend::Sqlite, &url, "closed", "2000").await;
    register(&closed, "erin").await;
    assert_unavailable(&closed.login("erin", "pw12345").await);
    assert_eq!(failures(&closed, "closed", "unavailable").await, 1);

    let open = app_with_hook(Backend::Sqlite, &url, "open", "2000").await;
    register(&open, "erin").await;
    let pair = open.login("erin", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    assert_eq!(claims(&pair.token("access"))["username"], "erin");
    assert_eq!(failures(&open, "open", "unavailable").await, 1);
    assert_eq!(failures(&open, "closed", "unavailable").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_refused() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let app = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "closed", "2000").await;
    register(&app, "frank").await;
    let too_many_claims = json!({"mode": "claims", "claims": {"pad": "x".repeat(5000)}});
    for state in [
        json!({"mode": "error"}),
        json!({"mode": "redirect"}),
        json!({"mode": "not_json"}),
        json!({"mode": "huge"}),
        too_many_claims,
    ] {
        receiver.behave(state.clone()).await;
        let reply = app.login("frank", "pw12345").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (503, UNAVAILABLE),
            "{state}"
        );
    }
    assert_eq!(failures(&app, "closed", "bad_answer").await, 5);
    // One call per login: the redirect was not followed.
    assert_eq!(receiver.calls().await.len(), 5);
    // The same hook answering well again: tokens again.
    receiver.answer_claims(json!({"tenant": "acme"})).await;
    let pair = app.login("frank", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    assert_eq!(claims(&pair.token("access"))["tenant"], "acme");
}

/// Logins waiting on a slow hook hold no worker: token checks stay fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hook_does_not_slow_token_checks() {
    let Some(receiver) = Receiver::start() else {
        return;
    };
    let app = app_with_hook(Backend::Sqlite, &receiver.hook_url(), "closed", "5000").await;
    register(&app, "grace").await;
    receiver.answer_claims(json!({"tenant": "acme"})).await;
    let access = app.login("grace", "pw12345").await.token("access");

    receiver
        .behave(json!({"mode": "sleep", "sleep_ms": 2500, "claims": {"tenant": "acme"}}))
        .await;
    // More waiting logins than the app has workers (2).
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/token/"))
                .json(&json!({"username": "grace", "password": "pw12345"}));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.calls().await.len() < 9 {
        assert!(
            Instant::now() < deadline,
            "the logins never reached the hook"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    app.verify(&access).await.assert(200, "{}");
    let me = app.get_me(Some(&format!("Bearer {access}"))).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let checks = started.elapsed();
    assert!(
        checks < Duration::from_millis(500),
        "verify and /me took {checks:?}"
    );
    for login in waiting {
        assert_eq!(login.await.expect("joined").expect("answered"), 200);
    }
}

//! The real binary as a process: graceful shutdown under load, and logs
//! that never contain a password or a token.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{free_port, Backend, TestDatabase, SIGNING_KEY};

struct Server {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(database: &TestDatabase, bcrypt_cost: &str) -> Server {
    start_with(database, bcrypt_cost, &[]).await
}

// The child is reaped in Drop, which clippy's local analysis cannot see.
#[allow(clippy::zombie_processes)]
async fn start_with(database: &TestDatabase, bcrypt_cost: &str, extra: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("tokend.log");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .env("TOKEND__DATABASE__URL", database.url())
        .env("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY)
        .env("TOKEND__SERVER__PORT", port.to_string())
        .env("TOKEND__PASSWORD__BCRYPT_COST", bcrypt_cost)
        .env("TOKEND__RATE_LIMIT__ENABLED", "false")
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .envs(extra.iter().copied())
        // As verbose as it gets: nothing secret may appear even at trace.
        .env("RUST_LOG", "trace")
        // Logs go to stdout (twelve-factor); stderr carries start-up errors.
        .stdout(std::fs::File::create(&log).expect("log file"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tokend");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("tokend did not come up");
}

/// Sends SIGTERM to the process `pid`, as a service manager stops it.
pub(crate) fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

/// SIGTERM while logins (slow: bcrypt) are in flight: every accepted request
/// is answered, then the process exits 0.
async fn sigterm_finishes_in_flight_requests(backend: Backend) {
    let database = TestDatabase::create(backend);
    let mut server = start(&database, "10").await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/api/user/register/", server.base))
        .json(&json!({"username": "alice", "password": "pw"}))
        .send()
        .await
        .expect("register");
    assert_eq!(created.status().as_u16(), 201);
    let logins = (0..12).map(|i| {
        let client = reqwest::Client::new();
        let url = format!("{}/api/token/", server.base);
        let password = if i % 2 == 0 { "pw" } else { "wrong" };
        async move {
            client
                .post(url)
                .json(&json!({"username": "alice", "password": password}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let in_flight = tokio::spawn(join_all(logins));
    // Let the requests reach the server and queue for the hashing pool.
    tokio::time::sleep(Duration::from_millis(150)).await;
    sigterm(server.child.id());
    let answers = in_flight.await.expect("join");
    for (i, answer) in answers.iter().enumerate() {
        let expected = if i % 2 == 0 { 200 } else { 401 };
        assert_eq!(
            answer.as_ref().ok(),
            Some(&expected),
            "request {i}: {answers:?}"
        );
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().expect("wait");
        (status, server)
    })
    .await
    .expect("join")
    .0;
    assert!(status.success(), "exit status {status}");
}

/// A full scenario at trace level: no password, token or key in the logs.
async fn logs_never_contain_secrets(backend: Backend) {
    let database = TestDatabase::create(backend);
    let server = start(&database, "4").await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{}", server.base, path);
    let password = "pa55-Secret-Horse";
    client
        .post(url("/api/user/register/"))
        .json(&json!({"username": "alice", "password": password}))
        .send()
        .await
        .expect("register");
    client
        .post(url("/api/token/"))
        .json(&json!({"username": "alice", "password": "wrong-Secret-Guess"}))
        .send()
        .await
        .expect("bad login");
    let pair: serde_json::Value = client
        .post(url("/api/token/"))
        .form(&[("username", "alice"), ("password", password)])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("pair");
    let (access, refresh) = (
        pair["access"].as_str().unwrap(),
        pair["refresh"].as_str().unwrap(),
    );
    client
        .get(url("/api/user/me/?token=query-Secret-Token"))
        .bearer_auth(access)
        .send()
        .await
        .expect("me");
    let rotated: serde_json::Value = client
        .post(url("/api/token/refresh/"))
        .json(&json!({ "refresh": refresh }))
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("rotated");
    client
        .post(url("/api/token/verify/"))
        .json(&json!({ "token": access }))
        .send()
        .await
        .expect("verify");
    client
        .post(url("/api/token/blacklist/"))
        .json(&json!({ "refresh": rotated["refresh"] }))
        .send()
        .await
        .expect("blacklist");
    client
        .post(url("/api/user/password/"))
        .bearer_auth(access)
        .json(&json!({"old_password": password, "new_password": "new-Secret-Pass"}))
        .send()
        .await
        .expect("password change");
    sigterm(server.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&server.log).expect("log");
    assert!(
        log.contains("/api/token/refresh/"),
        "requests are logged: {log}"
    );
    let secrets = [
        password,
        "wrong-Secret-Guess",
        "new-Secret-Pass",
        "query-Secret-Token",
        access,
        refresh,
        rotated["access"].as_str().unwrap(),
        rotated["refresh"].as_str().unwrap(),
        SIGNING_KEY,
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "a secret reached the logs: {secret}");
    }
    // Not even a token's signature or payload part.
    for part in access.split('.').skip(1) {
        assert!(!log.contains(part));
    }
}

/// With an admin listener, SIGTERM stops both listeners and the process
/// exits 0.
async fn sigterm_stops_the_admin_listener_too(backend: Backend) {
    let database = TestDatabase::create(backend);
    let admin_port = free_port();
    let admin_address = format!("127.0.0.1:{admin_port}");
    let mut server = start_with(
        &database,
        "4",
        &[("TOKEND__SERVER__ADMIN_ADDRESS", &admin_address)],
    )
    .await;
    let metrics = reqwest::get(format!("http://{admin_address}/metrics"))
        .await
        .expect("admin listener up");
    assert_eq!(metrics.status().as_u16(), 200);
    sigterm(server.child.id());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().expect("wait");
        (status, server)
    });
    let (status, server) = tokio::time::timeout(Duration::from_secs(15), status)
        .await
        .expect("exits within 15 s")
        .expect("join");
    assert!(status.success(), "exit status {status}");
    for address in [
        admin_address,
        server.base.trim_start_matches("http://").to_owned(),
    ] {
        assert!(
            std::net::TcpStream::connect(&address).is_err(),
            "{address} still listening"
        );
    }
}

/// Replays inside the grace window and reuse of a spent token are security
/// events in the log, with the user and the client address.
async fn replays_and_reuse_are_logged_as_security_events(backend: Backend) {
    let database = TestDatabase::create(backend);
    let server = start_with(&database, "4", &[("TOKEND__LOG__FORMAT", "json")]).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{}", server.base, path);
    let post = |path: &str, body: serde_json::Value| {
        let request = client.post(url(path)).json(&body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let (status, created) = post(
        "/api/user/register/",
        json!({"username": "alice", "password": "pw"}),
    )
    .await;
    assert_eq!(status, 201);
    let id = created["id"].clone();
    let (_, pair) = post(
        "/api/token/",
        json!({"username": "alice", "password": "pw"}),
    )
    .await;
    let r1 = pair["refresh"].clone();
    let (first, rotated) = post("/api/token/refresh/", json!({ "refresh": r1 })).await;
    let (second, replayed) = post("/api/token/refresh/", json!({ "refresh": r1 })).await;
    assert_eq!((first, second), (200, 200));
    assert_eq!(rotated, replayed, "a replay");
    let (_, _) = post(
        "/api/token/refresh/",
        json!({ "refresh": rotated["refresh"] }),
    )
    .await;
    let (reused, _) = post("/api/token/refresh/", json!({ "refresh": r1 })).await;
    assert_eq!(reused, 401);
    sigterm(server.child.id());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&server.log).expect("log");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line.get("security_event").is_some())
        .map(|line| {
            json!({
                "level": line["level"],
                "security_event": line["security_event"],
                "user_id": line["user_id"],
                "client_ip": line["client_ip"],
            })
        })
        .collect();
    assert_eq!(
        events,
        [
            json!({"level": "WARN", "security_event": "refresh_token_replay",
                   "user_id": id, "client_ip": "127.0.0.1"}),
            json!({"level": "WARN", "security_event": "refresh_token_reuse",
                   "user_id": id, "client_ip": "127.0.0.1"}),
        ],
        "{log}"
    );
}

both_backends!(
    sigterm_finishes_in_flight_requests,
    logs_never_contain_secrets,
    sigterm_stops_the_admin_listener_too,
    replays_and_reuse_are_logged_as_security_events,
);

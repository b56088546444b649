//! Replicas act as one service: on PostgreSQL every change that ends cached
//! state is announced (`LISTEN/NOTIFY`) and each serving process drops what
//! it cached at once. The cache TTL here is a minute, so only the notice can
//! explain a refusal seen sooner.

use std::time::{Duration, Instant};

use diesel::RunQueryDsl;
use serde_json::json;

use crate::cli::tokend;
use crate::client_tokens::revoke;
use crate::clients::{client_token, create};
use crate::helpers::{spawn_app_with, Backend, ServerProcess, TestApp};

/// Long enough that nothing in a test expires by itself.
const LONG_TTL: (&str, &str) = ("TOKEND__CACHE__TTL_MS", "60000");
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const INVALID: &str = r#"{"detail":"Token is invalid","code":"token_not_valid"}"#;
const INACTIVE: &str = r#"{"detail":"User is inactive","code":"user_inactive"}"#;

async fn verify(app: &TestApp, base: &str, token: &str) -> (u16, String) {
    let reply = app
        .client
        .post(format!("{base}/api/token/verify/"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("sent");
    let status = reply.status().as_u16();
    (status, reply.text().await.expect("body"))
}

async fn me(app: &TestApp, base: &str, token: &str) -> (u16, String) {
    let reply = app
        .client
        .get(format!("{base}/api/user/me/"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sent");
    let status = reply.status().as_u16();
    (status, reply.text().await.expect("body"))
}

/// Asks `check` until it answers `expected` (the only other answer allowed
/// is 200, still accepted); how long that took. Fails after `limit`.
async fn refused_after<F, Fut>(check: F, expected: (u16, &str), limit: Duration) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (u16, String)>,
{
    let start = Instant::now();
    loop {
        let (status, body) = check().await;
        if status != 200 {
            assert_eq!((status, body.as_str()), expected);
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "still accepted after {limit:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p).div_ceil(100).saturating_sub(1)]
}

/// A logout through one process is refused by another `tokend serve`
/// process that has the session cached as live, within 100 ms (p99 over
/// 100 trials): the notice, not the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_is_refused_by_the_other_process_within_100_ms() {
    let a = spawn_app_with(Backend::Postgres, &[LONG_TTL]).await;
    let b = ServerProcess::start(&a, &[]).await;
    a.register("alice", "pw").await;
    // A load spike of the shared test machine gets a second measurement:
    // both must miss the bound to fail.
    let mut p99 = Duration::MAX;
    for _ in 0..2 {
        let mut took = Vec::with_capacity(100);
        for _ in 0..100 {
            let pair = a.login("alice", "pw").await;
            let access = pair.token("access");
            assert_eq!(verify(&a, &b.address, &access).await, (200, "{}".into()));
            a.blacklist(&pair.token("refresh")).await.assert(200, "{}");
            took.push(
                refused_after(
                    || verify(&a, &b.address, &access),
                    (401, BLACKLISTED),
                    Duration::from_secs(5),
                )
                .await,
            );
        }
        took.sort();
        let (p50, max) = (percentile(&took, 50), took[99]);
        p99 = percentile(&took, 99);
        eprintln!("logout through A refused by B after: p50 {p50:?}, p99 {p99:?}, max {max:?}");
        if p99 <= Duration::from_millis(100) {
            break;
        }
    }
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
}

/// Every other kind of revocation through one process reaches the other
/// at once too: the revocation endpoint, logout everywhere, ending a
/// session from the list, a password change (other sessions), reuse of a
/// spent refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_reaches_the_other_process() {
    let a = spawn_app_with(Backend::Postgres, &[LONG_TTL]).await;
    let b = ServerProcess::start(&a, &[]).await;
    a.register("alice", "old password").await;
    let login = || async { a.login("alice", "old password").await };
    let soon = Duration::from_secs(2);
    let refused = |access: String| {
        let (a, b) = (&a, &b);
        async move { refused_after(|| verify(a, &b.address, &access), (401, BLACKLISTED), soon).await }
    };

    // RFC 7009 revocation.
    let pair = login().await;
    let access = pair.token("access");
    assert_eq!(verify(&a, &b.address, &access).await.0, 200);
    assert_eq!(revoke(&a, &access).await.status, 200);
    refused(access).await;

    // Logout everywhere.
    let (one, two) = (login().await, login().await);
    for pair in [&one, &two] {
        assert_eq!(verify(&a, &b.address, &pair.token("access")).await.0, 200);
    }
    a.post_bearer("/api/user/logout-all/", &one.token("access"), json!({}))
        .await
        .assert(200, "{}");
    refused(one.token("access")).await;
    refused(two.token("access")).await;

    // A session ended from the list of sessions.
    let (mine, other) = (login().await, login().await);
    assert_eq!(verify(&a, &b.address, &other.token("access")).await.0, 200);
    let sid = crate::helpers::claims(&other.token("access"))["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let reply = a
        .send(
            a.client
                .delete(a.url(&format!("/api/user/sessions/{sid}/")))
                .bearer_auth(mine.token("access")),
        )
        .await;
    assert_eq!(reply.status, 200);
    refused(other.token("access")).await;

    // The other sessions ended from the list.
    let (mine, other) = (login().await, login().await);
    assert_eq!(verify(&a, &b.address, &other.token("access")).await.0, 200);
    a.post_bearer(
        "/api/user/sessions/revoke-others/",
        &mine.token("access"),
        json!({}),
    )
    .await
    // `other` and the caller's session of the step before.
    .assert(200, r#"{"revoked":2}"#);
    refused(other.token("access")).await;

    // A password change ends the other sessions.
    let (mine, other) = (login().await, login().await);
    assert_eq!(verify(&a, &b.address, &other.token("access")).await.0, 200);
    a.post_bearer(
        "/api/user/password/",
        &mine.token("access"),
        json!({"old_password": "old password", "new_password": "new password"}),
    )
    .await
    .assert(200, "{}");
    refused(other.token("access")).await;
    assert_eq!(verify(&a, &b.address, &mine.token("access")).await.0, 200);

    // A spent refresh token presented again: its session is revoked as
    // stolen (outside the grace window, which is 0 here only for this).
    let c = a
        .spawn_replica_with(&[("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "0")])
        .await;
    let pair = c.login("alice", "new password").await;
    let next = c.refresh(&pair.token("refresh")).await;
    assert_eq!(next.status, 200);
    assert_eq!(verify(&a, &b.address, &next.token("access")).await.0, 200);
    assert_eq!(c.refresh(&pair.token("refresh")).await.status, 401);
    refused(next.token("access")).await;

    // A service token revoked (that token only), then its client deleted
    // from the command line.
    let billing = create(&a, &["billing", "--scope", "orders:read"]);
    let (one, two) = (
        client_token(&a, &billing.0, &billing.1).await,
        client_token(&a, &billing.0, &billing.1).await,
    );
    for token in [&one, &two] {
        assert_eq!(verify(&a, &b.address, token).await, (200, "{}".into()));
    }
    assert_eq!(revoke(&a, &one).await.status, 200);
    refused(one).await;
    assert_eq!(verify(&a, &b.address, &two).await, (200, "{}".into()));
    assert!(tokend(&a, &["clients", "delete", "billing"], "").0);
    refused_after(|| verify(&a, &b.address, &two), (401, INVALID), soon).await;
}

/// The command line is another process without a cache: what it changes
/// reaches a running server at once (a user disabled; a client disabled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_is_heard_by_a_running_server() {
    let app = spawn_app_with(
        Backend::Postgres,
        &[
            LONG_TTL,
            ("TOKEND__INTROSPECTION__CLIENTS", "legacy:s3cret-legacy"),
        ],
    )
    .await;
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let base = app.address.clone();
    assert_eq!(me(&app, &base, &access).await.0, 200);
    let (ok, out) = tokend(&app, &["users", "disable", "alice"], "");
    assert!(ok, "{out}");
    let took = refused_after(
        || me(&app, &base, &access),
        (401, INACTIVE),
        Duration::from_secs(2),
    )
    .await;
    assert!(took <= Duration::from_millis(500), "{took:?}");

    let billing = create(&app, &["billing", "--scope", "orders:read"]);
    let token = client_token(&app, &billing.0, &billing.1).await;
    assert_eq!(verify(&app, &base, &token).await, (200, "{}".into()));
    assert!(tokend(&app, &["clients", "disable", "billing"], "").0);
    let took = refused_after(
        || verify(&app, &base, &token),
        (401, BLACKLISTED),
        Duration::from_secs(2),
    )
    .await;
    assert!(took <= Duration::from_millis(500), "{took:?}");
}

/// Value of the counter `name` in the process's /metrics.
async fn counter(app: &TestApp, base: &str, name: &str) -> Option<f64> {
    let text = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Notices sent while a process is not listening are lost: once it
/// listens again it flushes its cache, so a change it never heard of is
/// seen then (not a minute later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_reconnects_and_flushes_the_cache() {
    let a = spawn_app_with(Backend::Postgres, &[LONG_TTL]).await;
    let b = ServerProcess::start(&a, &[]).await;
    let (_, access, _) = a.user_with_tokens("alice", "pw").await;
    assert_eq!(verify(&a, &b.address, &access).await, (200, "{}".into()));
    // A revocation nobody announces (as if its notice were missed): B
    // keeps its cached "live".
    let sid = crate::helpers::claims(&access)["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let mut pg =
        <diesel::PgConnection as diesel::Connection>::establish(&a.database_url).expect("connect");
    diesel::sql_query(format!(
        "UPDATE sessions SET revoked_at = 1, revoke_reason = 'logout' WHERE id = '{sid}'"
    ))
    .execute(&mut pg)
    .expect("revoke quietly");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(verify(&a, &b.address, &access).await, (200, "{}".into()));
    assert_eq!(
        counter(&a, &b.address, "tokend_cache_listener_reconnects_total").await,
        Some(0.0)
    );
    // Cut the listeners' connections (A's and B's).
    let killed = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'tokend cache listener' AND datname = current_database()",
    )
    .execute(&mut pg)
    .expect("terminate");
    assert_eq!(killed, 2);
    let took = refused_after(
        || verify(&a, &b.address, &access),
        (401, BLACKLISTED),
        Duration::from_secs(5),
    )
    .await;
    eprintln!("flushed after the listener's connection was cut: {took:?}");
    assert_eq!(
        counter(&a, &b.address, "tokend_cache_listener_reconnects_total").await,
        Some(1.0)
    );
    // Listening again: the next revocation is heard as before.
    let pair = a.login("alice", "pw").await;
    let access = pair.token("access");
    assert_eq!(verify(&a, &b.address, &access).await.0, 200);
    a.blacklist(&pair.token("refresh")).await.assert(200, "{}");
    refused_after(
        || verify(&a, &b.address, &access),
        (401, BLACKLISTED),
        Duration::from_secs(2),
    )
    .await;
}

/// SQLite has no notices and no listener: another process sees a logout
/// only when its cached state expires (the documented TTL bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_processes_rely_on_the_ttl() {
    let a = spawn_app_with(Backend::Sqlite, &[LONG_TTL]).await;
    let b = ServerProcess::start(&a, &[]).await;
    let (_, access, refresh) = a.user_with_tokens("alice", "pw").await;
    assert_eq!(verify(&a, &b.address, &access).await, (200, "{}".into()));
    a.blacklist(&refresh).await.assert(200, "{}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(verify(&a, &b.address, &access).await, (200, "{}".into()));
    assert_eq!(
        verify(&a, &a.address, &access).await,
        (401, BLACKLISTED.into())
    );
    assert_eq!(
        counter(&a, &b.address, "tokend_cache_listener_reconnects_total").await,
        Some(0.0)
    );
}

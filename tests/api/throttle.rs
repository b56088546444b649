//! Brute-force limits: per-IP quotas and the per-(username, IP) back-off.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app_with, Backend, Reply, TestApp};

const ON: (&str, &str) = ("TOKEND__RATE_LIMIT__ENABLED", "true");
const PROXY: (&str, &str) = ("TOKEND__RATE_LIMIT__CLIENT_IP_HEADER", "X-Forwarded-For");

async fn login_from(app: &TestApp, ip: &str, username: &str, password: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/api/token/"))
            .header("X-Forwarded-For", format!("203.0.113.99, {ip}"))
            .json(&json!({ "username": username, "password": password })),
    )
    .await
}

#[track_caller]
fn assert_throttled(reply: &Reply) {
    assert_eq!(reply.status, 429, "{}", reply.body);
    let wait: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(wait >= 1);
    let unit = if wait == 1 { "second" } else { "seconds" };
    assert_eq!(
        reply.body,
        format!(r#"{{"detail":"Request was throttled. Expected available in {wait} {unit}."}}"#)
    );
}

async fn logins_per_address_are_limited(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE", "3"),
        ],
    )
    .await;
    app.register("alice", "pw").await;
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, "198.51.100.1", "alice", "pw").await.status,
            200
        );
    }
    assert_throttled(&login_from(&app, "198.51.100.1", "alice", "pw").await);
    // Another client address (the last one in the trusted header) is not affected.
    assert_eq!(
        login_from(&app, "198.51.100.2", "alice", "pw").await.status,
        200
    );
}

async fn registrations_per_address_are_limited(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[ON, ("TOKEND__RATE_LIMIT__REGISTER_PER_IP_PER_MINUTE", "2")],
    )
    .await;
    assert_eq!(app.register("a1", "pw").await.status, 201);
    assert_eq!(app.register("a2", "pw").await.status, 201);
    assert_throttled(&app.register("a3", "pw").await);
}

async fn failed_logins_back_off_per_username_and_address(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[ON, PROXY, ("TOKEND__RATE_LIMIT__FREE_FAILURES", "2")],
    )
    .await;
    app.register("alice", "pw").await;
    let attacker = "192.0.2.66";
    for _ in 0..2 {
        login_from(&app, attacker, "alice", "guess").await.assert(
            401,
            r#"{"detail":"No active account found with the given credentials"}"#,
        );
    }
    // Backing off: even the right password is not tried from there.
    let reply = login_from(&app, attacker, "alice", "pw").await;
    assert_throttled(&reply);
    assert_eq!(reply.header("retry-after"), Some("1"));
    // The real user, elsewhere, is not locked out; other users neither.
    assert_eq!(
        login_from(&app, "192.0.2.10", "alice", "pw").await.status,
        200
    );
    app.register("bob", "pw").await;
    assert_eq!(login_from(&app, attacker, "bob", "pw").await.status, 200);
    // Not a permanent lock: after the wait, a right password works and resets.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(login_from(&app, attacker, "alice", "pw").await.status, 200);
    assert_eq!(
        login_from(&app, attacker, "alice", "guess").await.status,
        401
    );
}

async fn without_a_trusted_header_the_peer_address_counts(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[ON, ("TOKEND__RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE", "2")],
    )
    .await;
    app.register("alice", "pw").await;
    // Spoofed headers change nothing when no header is trusted.
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_from(&app, ip, "alice", "pw").await.status, 200);
    }
    assert_throttled(&login_from(&app, "198.51.100.3", "alice", "pw").await);
}

both_backends!(
    logins_per_address_are_limited,
    registrations_per_address_are_limited,
    failed_logins_back_off_per_username_and_address,
    without_a_trusted_header_the_peer_address_counts,
);

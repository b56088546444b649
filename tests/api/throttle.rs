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
    // On record: the failure that started the back-off, and the refusal.
    let engaged = &crate::audit::events(&app, "backoff_engaged", 1).await[0];
    assert_eq!(
        (
            engaged.ip.as_deref(),
            engaged.username.as_deref(),
            engaged.detail.as_deref()
        ),
        (Some(attacker), Some("alice"), Some(r#"{"reason":"login"}"#))
    );
    let failed = crate::audit::events(&app, "login_failed", 3).await;
    let reasons: Vec<_> = failed.iter().map(|e| e.detail.as_deref()).collect();
    assert_eq!(
        reasons,
        [
            Some(r#"{"reason":"throttled"}"#),
            Some(r#"{"reason":"bad_credentials"}"#),
            Some(r#"{"reason":"bad_credentials"}"#)
        ]
    );
    assert_eq!(
        failed[0].request_id.as_deref(),
        reply.header("x-request-id")
    );
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

async fn change_password_from(app: &TestApp, ip: &str, access: &str, old: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/api/user/password/"))
            .header("X-Forwarded-For", ip)
            .header("Authorization", format!("Bearer {access}"))
            .json(&json!({ "old_password": old, "new_password": "a new password" })),
    )
    .await
}

/// A stolen access token does not make the old password guessable: wrong
/// old passwords count in the (user, address) back-off shared with login,
/// and once its session has used up its free failures (from any address),
/// that session is revoked; the owner logs in again and can change the
/// password (a per-user lock would let the thief prevent that).
async fn old_password_guesses_back_off(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[ON, PROXY, ("TOKEND__RATE_LIMIT__FREE_FAILURES", "3")],
    )
    .await;
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let thief = "192.0.2.66";
    let wrong = r#"{"old_password":["Wrong password."]}"#;
    for _ in 0..2 {
        change_password_from(&app, thief, &access, "guess")
            .await
            .assert(400, wrong);
    }
    // Old-password and login failures share the (user, address) back-off.
    login_from(&app, thief, "alice", "guess").await.assert(
        401,
        r#"{"detail":"No active account found with the given credentials"}"#,
    );
    assert_throttled(&login_from(&app, thief, "alice", "pw").await);
    // The session's third failure, from another address: answered, then the
    // stolen token's session is over, everywhere.
    change_password_from(&app, "198.51.100.20", &access, "guess")
        .await
        .assert(400, wrong);
    let revoked = r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#;
    change_password_from(&app, "198.51.100.21", &access, "pw")
        .await
        .assert(401, revoked);
    // The owner, elsewhere, logs in and changes the password at once.
    let fresh = login_from(&app, "198.51.100.22", "alice", "pw").await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    change_password_from(&app, "198.51.100.22", &fresh.token("access"), "pw")
        .await
        .assert(200, "{}");
}

/// Old-password checks count in the per-address quota of password checks.
async fn old_password_checks_count_in_the_address_quota(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE", "3"),
            ("TOKEND__RATE_LIMIT__FREE_FAILURES", "100"),
        ],
    )
    .await;
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let ip = "192.0.2.77";
    for _ in 0..3 {
        assert_eq!(
            change_password_from(&app, ip, &access, "guess")
                .await
                .status,
            400
        );
    }
    assert_throttled(&change_password_from(&app, ip, &access, "guess").await);
    assert_throttled(&login_from(&app, ip, "alice", "pw").await);
}

/// Simultaneous guesses cannot skip the back-off: they are counted while
/// their passwords are being checked, so a burst evaluates no more than the
/// free failures (plus one).
async fn simultaneous_guesses_are_counted_in_flight(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__PASSWORD__BCRYPT_COST", "8"),
            ("TOKEND__PASSWORD__HASHING_QUEUE_PER_CLIENT", "64"),
        ],
    )
    .await;
    app.register("alice", "pw").await;
    let attempts = (0..30).map(|i| {
        let password = if i == 29 { "pw" } else { "guess" };
        login_from(&app, "192.0.2.66", "alice", password)
    });
    let replies = futures::future::join_all(attempts).await;
    let evaluated = replies
        .iter()
        .filter(|r| r.status == 401 || r.status == 200)
        .count();
    let throttled = replies.iter().filter(|r| r.status == 429).count();
    assert!(
        evaluated <= 6 && evaluated + throttled == 30,
        "{evaluated} guesses evaluated, {throttled} throttled: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

/// One address cannot take the whole hashing queue: its share is bounded
/// (429 beyond it), and another address's login still gets a place.
async fn one_address_cannot_fill_the_hashing_queue(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__PASSWORD__BCRYPT_COST", "10"),
            ("TOKEND__PASSWORD__MAX_CONCURRENT_HASHES", "1"),
            ("TOKEND__PASSWORD__HASHING_QUEUE", "4"),
            ("TOKEND__PASSWORD__HASHING_QUEUE_PER_CLIENT", "2"),
        ],
    )
    .await;
    app.register("bob", "bobs password").await;
    let app = &app;
    let flood = (0..20).map(|i| {
        let user = format!("nobody{i}");
        async move { login_from(app, "192.0.2.66", &user, "guess").await }
    });
    let victim = async {
        // While the flood holds its places.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        login_from(app, "198.51.100.5", "bob", "bobs password").await
    };
    let (flooded, bob) = futures::join!(futures::future::join_all(flood), victim);
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert!(
        flooded.iter().any(|r| r.status == 429),
        "{:?}",
        flooded.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(flooded.iter().all(|r| r.status == 401 || r.status == 429));
}

/// A registration whose request carries these `X-Forwarded-For` lines.
async fn register_behind(app: &TestApp, lines: &[&str], username: &str) -> Reply {
    let mut request = app.client.post(app.url("/api/user/register/"));
    for line in lines {
        request = request.header("X-Forwarded-For", *line);
    }
    app.send(request.json(&json!({ "username": username, "password": "pw" })))
        .await
}

async fn app_with_two_registrations_per_minute(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__REGISTER_PER_IP_PER_MINUTE", "2"),
        ],
    )
    .await
}

/// The trusted header is read whole: a client's own `X-Forwarded-For` line
/// before the proxy's does not choose the address that is limited.
async fn forged_header_lines_do_not_escape_quotas(backend: Backend) {
    let app = app_with_two_registrations_per_minute(backend).await;
    for (i, forged) in ["10.0.0.1", "10.0.0.2"].iter().enumerate() {
        let reply = register_behind(&app, &[forged, "198.51.100.7"], &format!("u{i}")).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    assert_throttled(&register_behind(&app, &["10.0.0.3", "198.51.100.7"], "u3").await);
}

/// IPv6 clients are limited per /64: a host cannot rotate addresses within
/// its own prefix to escape a quota.
async fn ipv6_clients_share_their_64(backend: Backend) {
    let app = app_with_two_registrations_per_minute(backend).await;
    for (ip, name) in [("2001:db8:1:2::1", "a"), ("2001:db8:1:2:ffff::9", "b")] {
        assert_eq!(register_behind(&app, &[ip], name).await.status, 201);
    }
    assert_throttled(&register_behind(&app, &["2001:db8:1:2::abcd"], "c").await);
    let other_prefix = register_behind(&app, &["2001:db8:1:3::1"], "d").await;
    assert_eq!(other_prefix.status, 201);
}

/// Wrong introspection credentials back off per client id and address;
/// during the back-off right ones are refused too (or the answer would tell
/// them apart); other clients and addresses are not affected, and a right
/// answer clears the count (a service's occasional stale secret never adds
/// up to a lock-out).
async fn introspection_secret_guesses_back_off(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__FREE_FAILURES", "3"),
            (
                "TOKEND__INTROSPECTION__CLIENTS",
                "svc:the-right-secret,other:another-secret",
            ),
        ],
    )
    .await;
    let introspect = |ip: &'static str, id: &'static str, secret: &'static str| {
        app.send(
            app.client
                .post(app.url("/api/token/introspect/"))
                .header("X-Forwarded-For", ip)
                .basic_auth(id, Some(secret))
                .form(&[("token", "x")]),
        )
    };
    let inactive = r#"{"active":false}"#;
    // Occasional failures between successes never lock the service out.
    for _ in 0..4 {
        introspect("192.0.2.66", "svc", "stale")
            .await
            .assert(401, r#"{"error":"invalid_client"}"#);
        introspect("192.0.2.66", "svc", "the-right-secret")
            .await
            .assert(200, inactive);
    }
    for _ in 0..3 {
        introspect("192.0.2.66", "svc", "guess")
            .await
            .assert(401, r#"{"error":"invalid_client"}"#);
    }
    assert_throttled(&introspect("192.0.2.66", "svc", "the-right-secret").await);
    // Another client behind the same address, and the same client elsewhere.
    introspect("192.0.2.66", "other", "another-secret")
        .await
        .assert(200, inactive);
    introspect("198.51.100.3", "svc", "the-right-secret")
        .await
        .assert(200, inactive);
}

/// Replicas on one PostgreSQL database share the back-off and the quotas:
/// guesses spread round robin over three of them lock at the same attempt
/// as on one, and the per-address quota counts every replica's logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_back_off_and_the_quotas() {
    let a = spawn_app_with(
        Backend::Postgres,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__FREE_FAILURES", "3"),
            ("TOKEND__RATE_LIMIT__LOGIN_PER_IP_PER_MINUTE", "8"),
        ],
    )
    .await;
    let replicas = [&a, &a.spawn_replica().await, &a.spawn_replica().await];
    a.register("alice", "pw").await;
    let attacker = "192.0.2.66";
    for attempt in 0..3 {
        login_from(replicas[attempt % 3], attacker, "alice", "guess")
            .await
            .assert(
                401,
                r#"{"detail":"No active account found with the given credentials"}"#,
            );
    }
    // The fourth guess, on any replica, waits; even the right password.
    for replica in replicas {
        assert_throttled(&login_from(replica, attacker, "alice", "pw").await);
    }
    // The address's quota (8 a minute) counts all of them: 3 guesses and 3
    // refusals so far, 2 more logins from elsewhere in the balancer's
    // rotation, then every replica refuses.
    a.register("bob", "pw").await;
    assert_eq!(
        login_from(replicas[1], attacker, "bob", "pw").await.status,
        200
    );
    assert_eq!(
        login_from(replicas[2], attacker, "bob", "pw").await.status,
        200
    );
    for replica in replicas {
        assert_throttled(&login_from(replica, attacker, "bob", "pw").await);
    }
}

/// A burst of simultaneous guesses spread over replicas is counted in
/// flight across them: no more are evaluated than on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_guesses_on_several_replicas_are_counted_together() {
    let a = spawn_app_with(
        Backend::Postgres,
        &[
            ON,
            PROXY,
            ("TOKEND__PASSWORD__BCRYPT_COST", "8"),
            ("TOKEND__PASSWORD__HASHING_QUEUE_PER_CLIENT", "64"),
        ],
    )
    .await;
    let b = a.spawn_replica().await;
    let c = a.spawn_replica().await;
    let replicas = [&a, &b, &c];
    a.register("alice", "pw").await;
    let attempts = (0..30).map(|i| login_from(replicas[i % 3], "192.0.2.66", "alice", "guess"));
    let replies = futures::future::join_all(attempts).await;
    let evaluated = replies.iter().filter(|r| r.status == 401).count();
    let throttled = replies.iter().filter(|r| r.status == 429).count();
    assert!(
        evaluated <= 6 && evaluated + throttled == 30,
        "{evaluated} guesses evaluated, {throttled} throttled: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

/// Wrong introspection secrets count on every replica: failures on three
/// replicas in turn lock the (client, address) on all of them, and a right
/// secret on one clears the count everywhere. Right secrets alone write
/// nothing shared (one service's introspections never take turns on a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_failures_count_on_every_replica() {
    let a = spawn_app_with(
        Backend::Postgres,
        &[
            ON,
            PROXY,
            ("TOKEND__RATE_LIMIT__FREE_FAILURES", "3"),
            ("TOKEND__INTROSPECTION__CLIENTS", "svc:the-right-secret"),
        ],
    )
    .await;
    let (b, c) = (a.spawn_replica().await, a.spawn_replica().await);
    let replicas = [&a, &b, &c];
    async fn introspect(app: &TestApp, secret: &str) -> Reply {
        app.send(
            app.client
                .post(app.url("/api/token/introspect/"))
                .header("X-Forwarded-For", "192.0.2.66")
                .basic_auth("svc", Some(secret))
                .form(&[("token", "x")]),
        )
        .await
    }
    let shared_rows = || async {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        a.db.run(|conn| {
            Ok(
                diesel::sql_query("SELECT COUNT(*) AS n FROM throttle_guesses")
                    .get_result::<N>(conn)?
                    .n,
            )
        })
        .await
        .expect("count")
    };
    for replica in replicas {
        introspect(replica, "the-right-secret")
            .await
            .assert(200, r#"{"active":false}"#);
    }
    assert_eq!(shared_rows().await, 0);
    // A failure, then a right secret elsewhere: the count is cleared.
    introspect(&a, "guess")
        .await
        .assert(401, r#"{"error":"invalid_client"}"#);
    assert_eq!(shared_rows().await, 1);
    introspect(&b, "the-right-secret")
        .await
        .assert(200, r#"{"active":false}"#);
    assert_eq!(shared_rows().await, 0);
    for replica in replicas {
        introspect(replica, "guess")
            .await
            .assert(401, r#"{"error":"invalid_client"}"#);
    }
    for replica in replicas {
        assert_throttled(&introspect(replica, "the-right-secret").await);
    }
}

/// The shared state's statements, with given times: the in-memory rules
/// (free failures, then 1, 2, 4… s locks; guesses in flight counted), and a
/// verdict whose row is gone still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_back_off_statements_follow_the_rules() {
    use tokend::storage::throttle::{guess_failed, reserve_guess};
    let app = spawn_app_with(Backend::Postgres, &[]).await;
    let t0: i64 = 1_800_000_000_000;
    let (reserved, failures, locked, after_lock, lost) = app
        .db
        .run(move |conn| {
            let key = b"subject-and-address".to_vec();
            let mut reserved = Vec::new();
            for t in 0..4 {
                reserved.push(reserve_guess(conn, &key, Some(t0 + t), 3, 900_000)?);
            }
            let mut failures = Vec::new();
            for t in 0..3 {
                failures.push(guess_failed(conn, &key, Some(t0 + 10 + t), 3, 900_000)?);
            }
            let locked = reserve_guess(conn, &key, Some(t0 + 100), 3, 900_000)?;
            let after_lock = reserve_guess(conn, &key, Some(t0 + 1_100), 3, 900_000)?;
            let lost = guess_failed(conn, b"never-reserved", Some(t0), 3, 900_000)?;
            Ok::<_, tokend::storage::StorageError>((reserved, failures, locked, after_lock, lost))
        })
        .await
        .expect("statements");
    // Three free guesses in flight at once; the fourth waits for them.
    assert_eq!(reserved, [Ok(()), Ok(()), Ok(()), Err(1_000)]);
    assert_eq!(failures, [1, 2, 3]);
    // The third failure locked the key for 1 s from its time (t0 + 12).
    assert_eq!(locked, Err(912));
    assert_eq!(after_lock, Ok(()));
    assert_eq!(lost, 1);
}

both_backends!(
    old_password_guesses_back_off,
    old_password_checks_count_in_the_address_quota,
    simultaneous_guesses_are_counted_in_flight,
    one_address_cannot_fill_the_hashing_queue,
    forged_header_lines_do_not_escape_quotas,
    ipv6_clients_share_their_64,
    introspection_secret_guesses_back_off,
    logins_per_address_are_limited,
    registrations_per_address_are_limited,
    failed_logins_back_off_per_username_and_address,
    without_a_trusted_header_the_peer_address_counts,
);

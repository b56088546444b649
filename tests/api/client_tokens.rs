//! Service (OAuth 2 client) tokens after they are issued: verify, RFC 7662
//! introspection (also by registered clients with `tokend:introspect`),
//! RFC 7009 revocation of a single token, and the end of every token of a
//! disabled or deleted client: at introspection at once, at verify within
//! the cache bound.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::cli::tokend;
use crate::clients::{client_token, create};
use crate::helpers::{claims, now, sign, spawn_app_with, Backend, Reply, TestApp};

const CONFIGURED: (&str, &str) = ("TOKEND__INTROSPECTION__CLIENTS", "legacy:s3cret-legacy");
const INVALID: &str = r#"{"detail":"Token is invalid","code":"token_not_valid"}"#;
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const INACTIVE: &str = r#"{"active":false}"#;
const INVALID_CLIENT: &str = r#"{"error":"invalid_client"}"#;

async fn introspect(app: &TestApp, (id, secret): (&str, &str), token: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/api/token/introspect/"))
            .basic_auth(id, Some(secret))
            .form(&[("token", token)]),
    )
    .await
}

/// POST /api/token/revoke/ (RFC 7009) with `token`.
pub(crate) async fn revoke(app: &TestApp, token: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/api/token/revoke/"))
            .form(&[("token", token)]),
    )
    .await
}

/// Polls verify until it refuses the token; how long that took.
async fn refused_within(app: &TestApp, token: &str, limit: Duration, body: &str) -> Duration {
    let start = Instant::now();
    loop {
        let reply = app.verify(token).await;
        if reply.status == 401 {
            reply.assert(401, body);
            return start.elapsed();
        }
        reply.assert(200, "{}");
        assert!(start.elapsed() < limit, "still verified after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn service_tokens_verify_and_introspect(backend: Backend) {
    let app = spawn_app_with(backend, &[CONFIGURED]).await;
    let billing = create(
        &app,
        &[
            "billing",
            "--scope",
            "orders:read",
            "--audience",
            "orders-api",
        ],
    );
    let token = client_token(&app, &billing.0, &billing.1).await;
    app.verify(&token).await.assert(200, "{}");
    // Never a user, whatever asks.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {token}"))).await.status,
        401
    );

    // The configured introspection client still works, and reports what
    // the token says, with no user in it.
    let reply = introspect(&app, ("legacy", "s3cret-legacy"), &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let c = claims(&token);
    assert_eq!(
        reply.json(),
        json!({
            "active": true,
            "token_type": "access",
            "client_id": billing.0,
            "scope": "orders:read",
            "aud": "orders-api",
            "exp": c["exp"],
            "iat": c["iat"],
            "jti": c["jti"],
        })
    );

    // A registered client may introspect only with tokend:introspect.
    let gateway = create(&app, &["gateway", "--scope", "tokend:introspect"]);
    let reply = introspect(&app, (&gateway.0, &gateway.1), &token).await;
    assert_eq!(reply.json()["client_id"], billing.0.as_str());
    // User tokens too.
    let (uid, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let reply = introspect(&app, (&gateway.0, &gateway.1), &access).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        (&reply.json()["active"], &reply.json()["user_id"]),
        (&json!(true), &json!(uid.to_string()))
    );
    for (id, secret) in [
        (billing.0.as_str(), billing.1.as_str()),
        (gateway.0.as_str(), "wrong"),
        (gateway.0.as_str(), billing.1.as_str()),
    ] {
        let reply = introspect(&app, (id, secret), &token).await;
        reply.assert(401, INVALID_CLIENT);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Basic realm="tokend""#)
        );
    }
    // A disabled introspecting client is refused at once.
    assert!(tokend(&app, &["clients", "disable", "gateway"], "").0);
    introspect(&app, (&gateway.0, &gateway.1), &token)
        .await
        .assert(401, INVALID_CLIENT);

    // A token claiming both a client and a user is not tokend's.
    let forged = sign(&json!({
        "token_type": "access", "exp": now() + 60, "iat": now(), "jti": "f1",
        "client_id": billing.0, "scope": "orders:read", "aud": "orders-api",
        "user_id": uid.to_string(),
    }));
    app.verify(&forged).await.assert(401, INVALID);
    // Nor one for another audience than its client's.
    let elsewhere = sign(&json!({
        "token_type": "access", "exp": now() + 60, "iat": now(), "jti": "f2",
        "client_id": billing.0, "scope": "orders:read", "aud": "elsewhere",
    }));
    app.verify(&elsewhere).await.assert(401, INVALID);
    introspect(&app, ("legacy", "s3cret-legacy"), &elsewhere)
        .await
        .assert(200, INACTIVE);
    // Whoever holds the signing key (an HS256 downstream) can sign a
    // service token, but only one the client could get: not more scopes,
    // not a longer life, not from the future or from before the client.
    let n = now();
    let forged = |claims: Value| {
        let mut base = json!({
            "token_type": "access", "exp": n + 600, "iat": n, "jti": "f3",
            "client_id": billing.0, "scope": "orders:read", "aud": "orders-api",
        });
        for (k, v) in claims.as_object().expect("object") {
            base[k] = v.clone();
        }
        sign(&base)
    };
    app.verify(&forged(json!({}))).await.assert(200, "{}");
    for claims in [
        json!({"scope": "orders:read admin"}),
        json!({"iat": n + 86_400 * 365, "exp": n + 86_400 * 365 + 1}),
        json!({"exp": n + 86_400 * 3650}),
        json!({"iat": n - 1000, "exp": n + 600}),
    ] {
        let token = forged(claims.clone());
        app.verify(&token).await.assert(401, INVALID);
        introspect(&app, ("legacy", "s3cret-legacy"), &token)
            .await
            .assert(200, INACTIVE);
    }
    // A user's refresh token is untouched by any of this.
    app.verify(&refresh).await.assert(200, "{}");
}

/// With a leeway, a revoked token is still acceptable past its `exp`: its
/// revocation outlives that, whatever the purge does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_outlive_the_leeway() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[CONFIGURED, ("TOKEND__JWT__LEEWAY_SECS", "60")],
    )
    .await;
    let billing = create(&app, &["billing", "--scope", "orders:read", "--ttl", "1"]);
    let token = client_token(&app, &billing.0, &billing.1).await;
    assert_eq!(revoke(&app, &token).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (ok, out) = tokend(&app, &["purge"], "");
    assert!(
        ok && out.contains(" 0 service token revocation(s),"),
        "{out}"
    );
    introspect(&app, ("legacy", "s3cret-legacy"), &token)
        .await
        .assert(200, INACTIVE);
    let replica = app.spawn_replica().await;
    replica.verify(&token).await.assert(401, BLACKLISTED);
}

async fn revoking_a_service_token_ends_that_token_only(backend: Backend) {
    let app = spawn_app_with(backend, &[CONFIGURED]).await;
    let billing = create(&app, &["billing", "--scope", "orders:read"]);
    let (one, two) = (
        client_token(&app, &billing.0, &billing.1).await,
        client_token(&app, &billing.0, &billing.1).await,
    );
    app.verify(&one).await.assert(200, "{}");
    let reply = revoke(&app, &one).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    // Again: still fine, as RFC 7009 wants.
    assert_eq!(revoke(&app, &one).await.status, 200);
    app.verify(&one).await.assert(401, BLACKLISTED);
    introspect(&app, ("legacy", "s3cret-legacy"), &one)
        .await
        .assert(200, INACTIVE);
    app.verify(&two).await.assert(200, "{}");
    let reply = introspect(&app, ("legacy", "s3cret-legacy"), &two).await;
    assert_eq!(reply.json()["active"], true);

    // Another replica sees the revocation in the database.
    let replica = app.spawn_replica().await;
    replica.verify(&one).await.assert(401, BLACKLISTED);
    replica.verify(&two).await.assert(200, "{}");
}

async fn disabling_or_deleting_a_client_ends_its_tokens(backend: Backend) {
    let app = spawn_app_with(backend, &[CONFIGURED]).await;
    let billing = create(&app, &["billing", "--scope", "orders:read"]);
    let reports = create(&app, &["reports", "--scope", "reports:read"]);
    let token = client_token(&app, &billing.0, &billing.1).await;
    let other = client_token(&app, &reports.0, &reports.1).await;
    // Seen once, so the live state is cached.
    app.verify(&token).await.assert(200, "{}");

    // Disabled from the command line (another process): introspection at
    // once, verify within the cache bound (`cache.ttl_ms`, 1 s here).
    assert!(tokend(&app, &["clients", "disable", "billing"], "").0);
    introspect(&app, ("legacy", "s3cret-legacy"), &token)
        .await
        .assert(200, INACTIVE);
    let took = refused_within(&app, &token, Duration::from_secs(3), BLACKLISTED).await;
    assert!(took <= Duration::from_millis(1500), "{took:?}");
    app.verify(&other).await.assert(200, "{}");

    // Enabled again, the old token stays dead; new ones work. A grant in
    // the same second as the disable would count as issued before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(tokend(&app, &["clients", "enable", "billing"], "").0);
    introspect(&app, ("legacy", "s3cret-legacy"), &token)
        .await
        .assert(200, INACTIVE);
    app.verify(&token).await.assert(401, BLACKLISTED);
    let fresh = client_token(&app, &billing.0, &billing.1).await;
    app.verify(&fresh).await.assert(200, "{}");

    // Deleted: its tokens are nobody's.
    assert!(tokend(&app, &["clients", "delete", "billing"], "").0);
    introspect(&app, ("legacy", "s3cret-legacy"), &fresh)
        .await
        .assert(200, INACTIVE);
    refused_within(&app, &fresh, Duration::from_secs(3), INVALID).await;
    app.verify(&other).await.assert(200, "{}");
}

async fn metadata_lists_the_scopes(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    create(
        &app,
        &["b", "--scope", "orders:write", "--scope", "orders:read"],
    );
    create(&app, &["a", "--scope", "orders:read"]);
    create(&app, &["off", "--scope", "hidden:scope"]);
    assert!(tokend(&app, &["clients", "disable", "off"], "").0);
    let reply = app
        .send(
            app.client
                .get(app.url("/.well-known/oauth-authorization-server")),
        )
        .await;
    assert_eq!(
        reply.json()["scopes_supported"],
        json!([
            "orders:read",
            "orders:write",
            "tokend:admin",
            "tokend:introspect"
        ])
    );
}

both_backends!(
    service_tokens_verify_and_introspect,
    revoking_a_service_token_ends_that_token_only,
    disabling_or_deleting_a_client_ends_its_tokens,
    metadata_lists_the_scopes,
);

/// With `jwt.audience` set, a client without an audience of its own gets
/// tokens for it; a client with its own keeps that one, and both verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_tokens_with_a_configured_audience() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[CONFIGURED, ("TOKEND__JWT__AUDIENCE", "tokend-users")],
    )
    .await;
    let plain = create(&app, &["plain", "--scope", "x"]);
    let own = create(&app, &["own", "--scope", "x", "--audience", "orders-api"]);
    let t1 = client_token(&app, &plain.0, &plain.1).await;
    let t2 = client_token(&app, &own.0, &own.1).await;
    assert_eq!(claims(&t1)["aud"], "tokend-users");
    assert_eq!(claims(&t2)["aud"], "orders-api");
    app.verify(&t1).await.assert(200, "{}");
    app.verify(&t2).await.assert(200, "{}");
    // User tokens must still carry the configured audience.
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    app.verify(&access).await.assert(200, "{}");
    let wrong = sign(&json!({
        "token_type": "access", "exp": now() + 60, "jti": "u1", "user_id": "1",
        "sid": "s", "aud": "orders-api",
    }));
    app.verify(&wrong).await.assert(401, INVALID);
}

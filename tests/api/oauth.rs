//! RFC 7662 introspection, RFC 7009 revocation, and replicas sharing one
//! database.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{now, sign, spawn_app_with, Backend, Reply, ServerProcess, TestApp};

const CLIENTS: (&str, &str) = (
    "TOKEND__INTROSPECTION__CLIENTS",
    "billing:s3cret-billing, orders:s3cret-orders",
);

async fn introspect(app: &TestApp, credentials: Option<(&str, &str)>, form: &str) -> Reply {
    let mut request = app
        .client
        .post(app.url("/api/token/introspect/"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some((id, secret)) = credentials {
        request = request.basic_auth(id, Some(secret));
    }
    app.send(request).await
}

async fn revoke(app: &TestApp, token: &str) -> Reply {
    app.post_raw(
        "/api/token/revoke/",
        "application/x-www-form-urlencoded",
        format!("token={token}&token_type_hint=refresh_token"),
    )
    .await
}

async fn introspection_needs_a_service_credential(backend: Backend) {
    let app = spawn_app_with(backend, &[CLIENTS]).await;
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let form = format!("token={access}");
    for credentials in [
        None,
        Some(("billing", "wrong")),
        Some(("nobody", "s3cret-billing")),
        Some(("orders", "s3cret-billing")),
    ] {
        let reply = introspect(&app, credentials, &form).await;
        reply.assert(401, r#"{"error":"invalid_client"}"#);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Basic realm="tokend""#)
        );
    }
    introspect(&app, Some(("orders", "s3cret-orders")), "")
        .await
        .assert(400, r#"{"error":"invalid_request"}"#);
}

async fn introspection_answers_claims_or_inactive(backend: Backend) {
    let app = spawn_app_with(backend, &[CLIENTS]).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let billing = Some(("billing", "s3cret-billing"));
    let reply = introspect(
        &app,
        billing,
        &format!("token={access}&token_type_hint=access_token"),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "access");
    assert_eq!(body["sub"], id.to_string());
    assert_eq!(body["username"], "alice");
    assert_eq!(body["sid"], crate::helpers::claims(&access)["sid"]);
    let reply = introspect(&app, billing, &format!("token={refresh}")).await;
    assert_eq!(
        (
            reply.json()["active"].clone(),
            reply.json()["token_type"].clone()
        ),
        (json!(true), json!("refresh"))
    );

    let expired = sign(
        &json!({"token_type":"access","exp":now()-1,"iat":now()-60,"jti":"e".repeat(32),"user_id":id.to_string(),"sid":"x"}),
    );
    for token in ["garbage", expired.as_str()] {
        introspect(&app, billing, &format!("token={token}"))
            .await
            .assert(200, r#"{"active":false}"#);
    }
    // Spent, then revoked: inactive.
    let rotated = app.refresh(&refresh).await;
    introspect(&app, billing, &format!("token={refresh}"))
        .await
        .assert(200, r#"{"active":false}"#);
    app.blacklist(&rotated.token("refresh"))
        .await
        .assert(200, "{}");
    for token in [rotated.token("access"), rotated.token("refresh"), access] {
        introspect(&app, billing, &format!("token={token}"))
            .await
            .assert(200, r#"{"active":false}"#);
    }
}

/// `jwt.user_id_claim = "sub"`: introspection answers as with the default
/// name; a token with the id as `user_id` names no user, so it is inactive
/// and revoking it ends nothing.
async fn introspection_and_revocation_read_the_configured_user_id_claim(backend: Backend) {
    let app = spawn_app_with(backend, &[CLIENTS, ("TOKEND__JWT__USER_ID_CLAIM", "sub")]).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    assert_eq!(crate::helpers::claims(&access).get("user_id"), None);
    let billing = Some(("billing", "s3cret-billing"));
    for (token, token_type) in [(&access, "access"), (&refresh, "refresh")] {
        let reply = introspect(&app, billing, &format!("token={token}")).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        assert_eq!(
            (
                &body["active"],
                &body["token_type"],
                &body["sub"],
                &body["user_id"],
                &body["username"]
            ),
            (
                &json!(true),
                &json!(token_type),
                &json!(id.to_string()),
                &json!(id.to_string()),
                &json!("alice")
            )
        );
    }
    let mut renamed = crate::helpers::claims(&refresh);
    let object = renamed.as_object_mut().unwrap();
    let value = object.shift_remove("sub").unwrap();
    object.insert("user_id".into(), value);
    let renamed = sign(&renamed);
    introspect(&app, billing, &format!("token={renamed}"))
        .await
        .assert(200, r#"{"active":false}"#);
    revoke(&app, &renamed).await.assert(200, "");
    assert_eq!(app.refresh(&refresh).await.status, 200);
}

async fn revocation_follows_rfc_7009(backend: Backend) {
    let app = spawn_app_with(backend, &[CLIENTS]).await;
    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let other = app.login("alice", "pw").await;
    // Invalid or unknown tokens are not an error.
    revoke(&app, "garbage").await.assert(200, "");
    app.post_raw(
        "/api/token/revoke/",
        "application/x-www-form-urlencoded",
        "",
    )
    .await
    .assert(400, r#"{"error":"invalid_request"}"#);
    revoke(&app, &refresh).await.assert(200, "");
    app.refresh(&refresh).await.assert(
        401,
        r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
    );
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        401
    );
    // Revoking by access token ends that session too; others live on.
    let other_access = other.token("access");
    assert_eq!(
        app.get_me(Some(&format!("Bearer {other_access}")))
            .await
            .status,
        200
    );
    revoke(&app, &other_access).await.assert(200, "");
    assert_eq!(app.refresh(&other.token("refresh")).await.status, 401);
    let third = app.login("alice", "pw").await;
    assert_eq!(app.refresh(&third.token("refresh")).await.status, 200);
}

/// Two tokend instances on one database behave as one service: a session
/// revoked through one is refused by it at once, by introspection on the
/// other at once (it always reads the database), and by the other's token
/// checks within the cache bound (`cache.ttl_ms`), even when that one has
/// the session cached as live.
async fn replicas_see_revocations_within_the_cache_bound(backend: Backend) {
    let first = spawn_app_with(backend, &[CLIENTS]).await;
    let second = first.spawn_replica().await;
    let (_, access, refresh) = first.user_with_tokens("alice", "pw").await;
    for replica in [&first, &second] {
        assert_eq!(
            replica
                .get_me(Some(&format!("Bearer {access}")))
                .await
                .status,
            200
        );
        replica.verify(&access).await.assert(200, "{}");
    }
    second.blacklist(&refresh).await.assert(200, "{}");
    let blacklisted = r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#;
    second
        .get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(401, blacklisted);
    second.verify(&access).await.assert(
        401,
        r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
    );
    let reply = introspect(
        &first,
        Some(("billing", "s3cret-billing")),
        &format!("token={access}"),
    )
    .await;
    assert_eq!(reply.json(), json!({"active": false}));
    let started = std::time::Instant::now();
    first.me_becomes(&access, 401, blacklisted).await;
    first.verify(&access).await.assert(
        401,
        r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
    );
    assert!(started.elapsed() < crate::helpers::CACHE_BOUND);
    // A rotation on one replica spends the token for the other.
    let pair = second.login("alice", "pw").await;
    let r1 = pair.token("refresh");
    assert_eq!(first.refresh(&r1).await.status, 200);
    let replay = second.refresh(&r1).await;
    assert_eq!(replay.status, 200, "inside the grace window: the same pair");
}

/// The same across two processes: a logout through the second process is
/// seen by it at once and by the first within the cache bound.
async fn a_second_process_on_the_same_database_agrees(backend: Backend) {
    let app = spawn_app_with(backend, &[CLIENTS]).await;
    let other = ServerProcess::start(&app, &[]).await;
    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let me = |base: String, token: String| {
        let client = app.client.clone();
        async move {
            client
                .get(format!("{base}/api/user/me/"))
                .bearer_auth(token)
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    assert_eq!(me(other.address.clone(), access.clone()).await, 200);
    assert_eq!(me(app.address.clone(), access.clone()).await, 200);
    let logout = app
        .client
        .post(format!("{}/api/token/blacklist/", other.address))
        .json(&json!({ "refresh": refresh }))
        .send()
        .await
        .expect("sent");
    assert_eq!(logout.status().as_u16(), 200);
    assert_eq!(me(other.address.clone(), access.clone()).await, 401);
    app.me_becomes(
        &access,
        401,
        r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#,
    )
    .await;
}

both_backends!(
    introspection_and_revocation_read_the_configured_user_id_claim,
    a_second_process_on_the_same_database_agrees,
    introspection_needs_a_service_credential,
    introspection_answers_claims_or_inactive,
    revocation_follows_rfc_7009,
    replicas_see_revocations_within_the_cache_bound,
);

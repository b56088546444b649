//! HTTP-level rules: methods, media types, sizes, paths, headers.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend};

async fn wrong_methods_are_405_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.send(app.client.get(app.url("/api/token/"))).await;
    reply.assert(405, r#"{"detail":"Method \"GET\" not allowed."}"#);
    assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
    let reply = app
        .send(app.client.put(app.url("/api/token/verify/")))
        .await;
    reply.assert(405, r#"{"detail":"Method \"PUT\" not allowed."}"#);
    // On /api/user/me/ authentication comes first, as in DRF.
    let reply = app.send(app.client.delete(app.url("/api/user/me/"))).await;
    reply.assert(
        401,
        r#"{"detail":"Authentication credentials were not provided."}"#,
    );
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let bearer = format!("Bearer {access}");
    let reply = app
        .send(
            app.client
                .delete(app.url("/api/user/me/"))
                .header("Authorization", &bearer),
        )
        .await;
    reply.assert(405, r#"{"detail":"Method \"DELETE\" not allowed."}"#);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
    let reply = app
        .send(
            app.client
                .post(app.url("/api/user/me/"))
                .header("Authorization", &bearer),
        )
        .await;
    reply.assert(405, r#"{"detail":"Method \"POST\" not allowed."}"#);
}

/// Every route, in both slash forms, answers methods it does not serve
/// with 405 and `Allow` (the health checks, /metrics, the JWKS and the
/// document included), OPTIONS with 200 `{}` and `Allow`, and HEAD where
/// it serves GET.
async fn every_route_answers_other_methods_405_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, access, _) = app.user_with_tokens("alice", "pw").await;
    let bearer = format!("Bearer {access}");
    let doc = app
        .send(app.client.get(app.url("/openapi.json")))
        .await
        .json();
    for path in tokend::routes::paths() {
        let serves = |method: &str| doc["paths"][&path][method].is_object();
        let get = serves("get");
        // DRF's order: get, post, delete, then head with get, options.
        let mut served: Vec<&str> = ["GET", "POST", "DELETE"]
            .into_iter()
            .filter(|m| serves(&m.to_lowercase()))
            .collect();
        let mut listed = served.clone();
        if get {
            listed.push("HEAD");
            served.push("HEAD");
        }
        listed.push("OPTIONS");
        let allow = listed.join(", ");
        let allow = allow.as_str();
        // A path parameter: any one segment.
        let path = path.replace("{id}", "0123abcd");
        let mut forms = vec![path.clone()];
        if path.ends_with('/') {
            forms.push(path.trim_end_matches('/').to_owned());
        }
        for form in forms {
            let request = |method: &str| {
                app.client
                    .request(method.parse().expect("method"), app.url(&form))
                    .header("Authorization", &bearer)
            };
            let others = ["TRACE", "PUT", "DELETE", "PATCH", "POST", "GET"];
            for method in others.into_iter().filter(|m| !served.contains(m)) {
                let reply = app.send(request(method)).await;
                reply.assert(
                    405,
                    &format!(r#"{{"detail":"Method \"{method}\" not allowed."}}"#),
                );
                assert_eq!(reply.header("allow"), Some(allow), "{method} {form}");
            }
            let reply = app.send(request("OPTIONS")).await;
            reply.assert(200, "{}");
            assert_eq!(reply.header("allow"), Some(allow), "OPTIONS {form}");
            if get {
                // HEAD answers as GET does (alice is no admin), without a body.
                let status = app.send(request("GET")).await.status;
                let reply = app.send(request("HEAD")).await;
                assert_eq!(reply.status, status, "HEAD {form}");
                assert_eq!(reply.body, "", "HEAD {form}");
            }
        }
    }
}

async fn unknown_paths_are_404_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.send(app.client.get(app.url("/nope/"))).await;
    reply.assert(404, r#"{"detail":"Not found."}"#);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    app.send(app.client.post(app.url("/api/token/x/")))
        .await
        .assert(404, r#"{"detail":"Not found."}"#);
}

async fn paths_without_trailing_slash_work(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app
        .post_json(
            "/api/user/register",
            json!({"username": "alice", "password": "pw"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let pair = app
        .post_json("/api/token", json!({"username": "alice", "password": "pw"}))
        .await;
    assert_eq!(pair.status, 200);
}

async fn media_types_and_bad_bodies(backend: Backend) {
    let app = spawn_app(backend).await;
    app.post_raw("/api/token/", "text/plain", "x").await.assert(
        415,
        r#"{"detail":"Unsupported media type \"text/plain\" in request."}"#,
    );
    let reply = app
        .post_raw("/api/token/", "application/json", "{bad")
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("JSON parse error - "),
        "{}",
        reply.body
    );
    // Invalid UTF-8, deep nesting, NUL bytes: 400, never a 5xx.
    assert_eq!(
        app.post_raw(
            "/api/token/",
            "application/json",
            &b"{\"username\":\"\xff\"}"[..]
        )
        .await
        .status,
        400
    );
    assert_eq!(
        app.post_raw("/api/token/", "application/json", "[".repeat(100_000))
            .await
            .status,
        413
    );
    assert_eq!(
        app.post_raw("/api/token/", "application/json", "[".repeat(5_000))
            .await
            .status,
        400
    );
    app.post_json(
        "/api/token/",
        json!({"username": "a\u{0}", "password": "x"}),
    )
    .await
    .assert(400, r#"{"username":["Null characters are not allowed."]}"#);
    // Empty bodies are empty forms, whatever the type.
    app.post_raw("/api/token/verify/", "text/plain", "")
        .await
        .assert(400, r#"{"token":["This field is required."]}"#);
}

async fn oversized_bodies_are_413_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let big = json!({"username": "x".repeat(100_000), "password": "x"});
    let reply = app.post_json("/api/user/register/", big).await;
    reply.assert(413, r#"{"detail":"Request body is too large."}"#);
}

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    app.send(app.client.get(app.url("/healthz")))
        .await
        .assert(200, r#"{"status":"ok"}"#);
    app.send(app.client.get(app.url("/readyz")))
        .await
        .assert(200, r#"{"status":"ready"}"#);
}

async fn cors_allows_browser_clients(backend: Backend) {
    let app = spawn_app(backend).await;
    let preflight = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/api/token/"))
                .header("Origin", "http://login.example")
                .header("Access-Control-Request-Method", "POST")
                .header("Access-Control-Request-Headers", "content-type"),
        )
        .await;
    assert_eq!(preflight.status, 200, "{}", preflight.body);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    let reply = app
        .send(
            app.client
                .post(app.url("/api/token/"))
                .header("Origin", "http://login.example")
                .json(&json!({"username": "x", "password": "y"})),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
}

async fn responses_carry_security_headers_and_request_ids(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.register("alice", "pw").await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-request-id").map(str::len), Some(16));
    // Keep-alive is kept: handlers always read the body.
    assert_ne!(reply.header("connection"), Some("close"));
}

async fn cors_refusals_are_json(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[("TOKEND__CORS__ALLOWED_ORIGINS", "https://app.example")],
    )
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/token/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
    };
    let allowed = app.send(preflight("https://app.example")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let refused = app.send(preflight("https://evil.example")).await;
    refused.assert(
        400,
        r#"{"detail":"Origin is not allowed to make this request"}"#,
    );
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

both_backends!(
    cors_refusals_are_json,
    wrong_methods_are_405_json,
    every_route_answers_other_methods_405_with_allow,
    unknown_paths_are_404_json,
    paths_without_trailing_slash_work,
    media_types_and_bad_bodies,
    oversized_bodies_are_413_json,
    health_and_readiness,
    cors_allows_browser_clients,
    responses_carry_security_headers_and_request_ids,
);

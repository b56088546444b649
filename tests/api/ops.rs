//! Operations endpoints: /metrics (Prometheus text), and the health checks.

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend};

async fn metrics_count_requests_logins_refreshes_and_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, access, r1) = app.user_with_tokens("alice", "pw12345").await;
    assert_eq!(app.login("alice", "wrong").await.status, 401);
    assert_eq!(app.refresh(&r1).await.status, 200);
    assert_eq!(
        app.refresh(&r1).await.status,
        200,
        "replay in the grace window"
    );
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    let _ = app.send(app.client.get(app.url("/no/such/path"))).await;
    let reply = app.send(app.client.get(app.url("/metrics"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for line in [
        r#"tokend_http_requests_total{method="POST",route="/api/user/register/",status="201"} 1"#,
        r#"tokend_http_requests_total{method="POST",route="/api/token/",status="200"} 1"#,
        r#"tokend_http_requests_total{method="POST",route="/api/token/",status="401"} 1"#,
        r#"tokend_http_requests_total{method="POST",route="/api/token/refresh/",status="200"} 2"#,
        r#"tokend_http_requests_total{method="GET",route="/api/user/me/",status="200"} 1"#,
        r#"tokend_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"tokend_logins_total{outcome="ok"} 1"#,
        r#"tokend_logins_total{outcome="failed"} 1"#,
        r#"tokend_refreshes_total{outcome="rotated"} 1"#,
        r#"tokend_refreshes_total{outcome="replayed"} 1"#,
        "tokend_refresh_reuse_detections_total 0",
        "tokend_rate_limited_requests_total 0",
        "# TYPE tokend_http_request_duration_seconds histogram",
        "# TYPE tokend_db_pool_connections gauge",
    ] {
        assert!(
            reply.body.contains(line),
            "missing {line} in\n{}",
            reply.body
        );
    }
    // Never a token, a username or a path with data in it.
    assert!(!reply.body.contains("alice") && !reply.body.contains(&access));
}

both_backends!(
    metrics_count_requests_logins_refreshes_and_reuse,
    openapi_document_matches_the_routes,
    operational_endpoints_move_to_the_admin_listener,
    production_serves_metrics_only_on_the_admin_listener,
);

/// The OpenAPI document against the running routes: every documented
/// operation is served, and a plain request to it answers one of the
/// statuses documented for it; every API route is documented.
async fn openapi_document_matches_the_routes(backend: Backend) {
    let app = spawn_app(backend).await;
    let reply = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(reply.status, 200);
    let doc = reply.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    documented.sort_unstable();
    assert_eq!(
        documented,
        [
            "/.well-known/jwks.json",
            "/api/token/",
            "/api/token/blacklist/",
            "/api/token/introspect/",
            "/api/token/refresh/",
            "/api/token/revoke/",
            "/api/token/verify/",
            "/api/user/logout-all/",
            "/api/user/me/",
            "/api/user/password/",
            "/api/user/register/",
            "/healthz",
            "/metrics",
            "/readyz",
        ]
    );
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let statuses: Vec<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse().expect("numeric status"))
                .collect();
            let request = match method.as_str() {
                "get" => app.client.get(app.url(path)),
                "post" => app.client.post(app.url(path)).json(&serde_json::json!({})),
                other => panic!("unexpected method {other} on {path}"),
            };
            let reply = app.send(request).await;
            assert!(
                statuses.contains(&reply.status),
                "{method} {path} answered {} {}, documented: {statuses:?}",
                reply.status,
                reply.body
            );
        }
    }
    // Schemas referenced exist; bearer and basic security schemes are there.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["introspection_client"]["scheme"], "basic");
    let text = reply.body.clone();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "dangling $ref {name}"
        );
    }
    // The docs page and its bundled assets are served (no download).
    let page = app.send(app.client.get(app.url("/docs/"))).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("swagger"), "{}", page.body);
    let bundle = app
        .send(app.client.get(app.url("/docs/swagger-ui-bundle.js")))
        .await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.len() > 100_000);
}

/// With `server.admin_address`, /metrics, /openapi.json and /docs/ are served
/// on the admin listener only: the API port answers 404 as for any unknown
/// path, and the admin port serves no API.
async fn operational_endpoints_move_to_the_admin_listener(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__SERVER__ADMIN_ADDRESS", "127.0.0.1:0")]).await;
    let admin = app.admin_address.clone().expect("an admin listener");
    assert_ne!(admin, app.address);
    for path in [
        "/metrics",
        "/openapi.json",
        "/docs/",
        "/docs/swagger-ui-bundle.js",
    ] {
        app.send(app.client.get(app.url(path)))
            .await
            .assert(404, r#"{"detail":"Not found."}"#);
    }
    app.send(app.client.get(app.url("/healthz")))
        .await
        .assert(200, r#"{"status":"ok"}"#);
    let (_, access, _) = app.user_with_tokens("alice", "pw12345").await;
    let metrics = app.send(app.client.get(format!("{admin}/metrics"))).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        metrics.body.contains(
            r#"tokend_http_requests_total{method="POST",route="/api/token/",status="200"} 1"#
        ),
        "{}",
        metrics.body
    );
    assert!(!metrics.body.contains(&access));
    let document = app
        .send(app.client.get(format!("{admin}/openapi.json")))
        .await;
    assert_eq!(document.status, 200);
    assert_eq!(document.json()["openapi"], "3.1.0");
    assert_eq!(
        app.send(app.client.get(format!("{admin}/docs/")))
            .await
            .status,
        200
    );
    app.send(app.client.get(format!("{admin}/readyz")))
        .await
        .assert(200, r#"{"status":"ready"}"#);
    app.send(
        app.client
            .get(format!("{admin}/api/user/me/"))
            .bearer_auth(&access),
    )
    .await
    .assert(404, r#"{"detail":"Not found."}"#);
}

const PRODUCTION: [(&str, &str); 2] = [
    ("TOKEND_PROFILE", "production"),
    ("TOKEND__PASSWORD__BCRYPT_COST", "10"),
];

/// The production profile never serves /metrics on the API port: without
/// an admin listener, nowhere; the API documents stay (they describe the
/// public API).
async fn production_serves_metrics_only_on_the_admin_listener(backend: Backend) {
    let app = spawn_app_with(backend, &PRODUCTION).await;
    assert_eq!(app.admin_address, None);
    app.send(app.client.get(app.url("/metrics")))
        .await
        .assert(404, r#"{"detail":"Not found."}"#);
    assert_eq!(
        app.send(app.client.get(app.url("/openapi.json")))
            .await
            .status,
        200
    );
    assert_eq!(
        app.send(app.client.get(app.url("/docs/"))).await.status,
        200
    );

    let mut env = PRODUCTION.to_vec();
    env.push(("TOKEND__SERVER__ADMIN_ADDRESS", "127.0.0.1:0"));
    let app = spawn_app_with(backend, &env).await;
    let admin = app.admin_address.clone().expect("an admin listener");
    app.send(app.client.get(app.url("/metrics")))
        .await
        .assert(404, r#"{"detail":"Not found."}"#);
    let metrics = app.send(app.client.get(format!("{admin}/metrics"))).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .body
        .contains("# TYPE tokend_http_requests_total counter"));
}

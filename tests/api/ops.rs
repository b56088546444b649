//! Operations endpoints: /metrics (Prometheus text), and the health checks.

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

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

//! Operations endpoints: /metrics (Prometheus text), and the health checks.

use serde_json::{json, Value};

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
    documented_responses_are_the_real_bodies,
    request_schemas_accept_what_the_server_accepts,
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
    let mut documented: Vec<String> = paths.keys().cloned().collect();
    documented.sort_unstable();
    // The route table is the one list: every route is documented.
    let mut routes = tokend::routes::paths();
    routes.sort_unstable();
    assert_eq!(documented, routes);
    assert!(documented.len() >= 15, "{documented:?}");
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let statuses: Vec<u16> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(|s| s.parse().expect("numeric status"))
                .collect();
            // A path parameter: any one segment.
            let url = app.url(&path.replace("{id}", "0123abcd"));
            let request = match method.as_str() {
                "get" => app.client.get(url),
                "post" => app.client.post(url).json(&serde_json::json!({})),
                "delete" => app.client.delete(url),
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

/// Whether `value` conforms to `schema` (the subset of JSON Schema the
/// document uses: $ref, oneOf, type, required, properties,
/// additionalProperties, items).
fn conforms(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str) {
        let name = name.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        assert!(!target.is_null(), "dangling $ref {name}");
        return conforms(doc, target, value);
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| conforms(doc, o, value).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            n => Err(format!("{value} matches {n} of {schema}")),
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t)) {
        return Err(format!("{value} is not of type {types:?}"));
    }
    if let Value::Object(map) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !map.contains_key(name) {
                return Err(format!("{value} lacks {name}"));
            }
        }
        for (key, item) in map {
            match (
                schema["properties"].get(key),
                schema.get("additionalProperties"),
            ) {
                (Some(property), _) => conforms(doc, property, item)?,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!("{value}: {key} is not allowed"))
                }
                (None, Some(other @ Value::Object(_))) => conforms(doc, other, item)?,
                _ => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for item in items {
            conforms(doc, item_schema, item)?;
        }
    }
    Ok(())
}

/// Requests that reach each kind of answer (missing, unparsable and
/// unsupported bodies, missing and bad credentials, wrong values) get
/// exactly a documented status, with a body of the documented shape.
async fn documented_responses_are_the_real_bodies(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc = app
        .send(app.client.get(app.url("/openapi.json")))
        .await
        .json();
    let (_, access, _) = app.user_with_tokens("alice", "pw12345").await;
    let paths = doc["paths"].as_object().expect("paths").clone();
    for (path, operations) in &paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let method: reqwest::Method = method.to_uppercase().parse().expect("method");
            let bare = path.trim_end_matches('/');
            let mut requests = vec![
                app.client.request(method.clone(), app.url(path)),
                app.client
                    .request(method.clone(), app.url(bare))
                    .bearer_auth("not-a-token"),
                app.client
                    .request(method.clone(), app.url(path))
                    .header("Authorization", "Bearer"),
            ];
            if method == reqwest::Method::GET {
                requests.push(app.client.get(app.url(path)).bearer_auth(&access));
            } else {
                requests.extend([
                    app.client.request(method.clone(), app.url(path)).json(&json!({})),
                    app.client.request(method.clone(), app.url(path)).json(&json!([1])),
                    app.client.request(method.clone(), app.url(path)).json(&json!({"username": "x", "password": "y", "refresh": " ", "token": "x.y.z", "new_password": "a\u{0}"})),
                    app.client
                        .request(method.clone(), app.url(path))
                        .header("Content-Type", "application/json")
                        .body("\u{0}"),
                    app.client
                        .request(method.clone(), app.url(path))
                        .header("Content-Type", "text/plain")
                        .body("x"),
                    app.client
                        .request(method.clone(), app.url(path))
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body("token="),
                ]);
            }
            for request in requests {
                let reply = app.send(request).await;
                let documented = &operation["responses"][reply.status.to_string()];
                assert!(
                    documented.is_object(),
                    "{method} {path} answered {} {}: not documented",
                    reply.status,
                    reply.body
                );
                match documented["content"].as_object() {
                    None => assert_eq!(reply.body, "", "{method} {path}"),
                    Some(content) if content.contains_key("application/json") => {
                        let schema = &content["application/json"]["schema"];
                        conforms(&doc, schema, &reply.json())
                            .unwrap_or_else(|e| panic!("{method} {path} {}: {e}", reply.status));
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// A pattern of the document, as JSON Schema applies it (unanchored).
fn pattern(doc: &Value, schema: &str, field: &str) -> regex::Regex {
    let text = doc["components"]["schemas"][schema]["properties"][field]["pattern"]
        .as_str()
        .unwrap_or_else(|| panic!("{schema}.{field} has a pattern"));
    regex::Regex::new(text).expect("a valid pattern")
}

/// The request schemas say what the server accepts: a value is valid for
/// the document exactly when the server takes it (blank once trimmed, NUL
/// characters, the 150/128 limits, Django's username characters).
async fn request_schemas_accept_what_the_server_accepts(backend: Backend) {
    let app = spawn_app(backend).await;
    let doc = app
        .send(app.client.get(app.url("/openapi.json")))
        .await
        .json();
    let username = pattern(&doc, "Registration", "username");
    let password = pattern(&doc, "Registration", "password");
    let long_name = "n".repeat(150);
    let too_long_name = "m".repeat(151);
    for (i, name) in [
        " alice ",
        "b.o@b+-_",
        "ünïcødé",
        &long_name,
        &too_long_name,
        "",
        "   ",
        "a b",
        "a\u{0}",
        "a!",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app
            .post_json(
                "/api/user/register/",
                json!({"username": name, "password": format!("pw{i}")}),
            )
            .await;
        assert_eq!(
            reply.status == 201,
            username.is_match(name),
            "username {name:?}: {} {}",
            reply.status,
            reply.body
        );
    }
    let long_password = format!(" {} ", "p".repeat(128));
    let too_long_password = "q".repeat(129);
    for (i, secret) in [
        "pw",
        &long_password,
        &too_long_password,
        "",
        "\t\u{3000}",
        "p\u{0}w",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app
            .post_json(
                "/api/user/register/",
                json!({"username": format!("user{i}"), "password": secret}),
            )
            .await;
        assert_eq!(
            reply.status == 201,
            password.is_match(secret),
            "password {secret:?}: {} {}",
            reply.status,
            reply.body
        );
    }
    // RFC 7009 revocation takes any token but a blank one.
    let token = pattern(&doc, "TokenForm", "token");
    for value in ["x", " x ", "\u{0}", "", " "] {
        let reply = app
            .send(
                app.client
                    .post(app.url("/api/token/revoke/"))
                    .form(&[("token", value)]),
            )
            .await;
        assert_eq!(
            reply.status == 200,
            token.is_match(value),
            "token {value:?}: {} {}",
            reply.status,
            reply.body
        );
    }
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

//! Property tests over the HTTP surface: whatever a client sends (bodies of
//! any shape and type, any content type, forged or garbage tokens in bodies
//! and Authorization headers, odd methods), tokend answers with a status
//! below 500 and a JSON body (or an empty one), and keeps serving.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend, TestApp};

/// Every route in both slash forms (from the route table), and unknown paths.
fn paths() -> Vec<String> {
    let mut paths = vec!["/nope".to_owned(), "/api/token/x/".to_owned()];
    for path in tokend::routes::paths() {
        if path.ends_with('/') {
            paths.push(path.trim_end_matches('/').to_owned());
        }
        paths.push(path);
    }
    paths
}

/// Any JSON value, nested up to a few levels, with awkward strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        awkward_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("username".to_owned()),
        Just("password".to_owned()),
        Just("refresh".to_owned()),
        Just("token".to_owned()),
        Just("old_password".to_owned()),
        Just("new_password".to_owned()),
        "[a-z_]{0,12}",
    ]
}

fn awkward_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[\\x00-\\x1f]{0,8}",
        Just("a".repeat(5000)),
        jwt_like(),
        Just("\u{0}".to_owned()),
        Just("ﬀ\u{212B}Å".to_owned()),
    ]
}

/// Three base64url-ish parts, with real-looking headers: alg none, HS256,
/// RS256 with a kid, nonsense.
fn jwt_like() -> impl Strategy<Value = String> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let headers = prop_oneof![
        Just(r#"{"alg":"none"}"#.to_owned()),
        Just(r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()),
        Just(r#"{"alg":"RS256","kid":"x"}"#.to_owned()),
        Just(r#"{"alg":"EdDSA","kid":"../../etc/passwd"}"#.to_owned()),
        ".{0,30}",
    ];
    let payloads = prop_oneof![
        Just(r#"{"token_type":"access","exp":99999999999,"jti":"a","user_id":"1"}"#.to_owned()),
        Just(
            r#"{"token_type":"refresh","exp":-1,"jti":null,"user_id":{"a":1},"sid":7}"#.to_owned()
        ),
        ".{0,30}",
    ];
    (headers, payloads, "[A-Za-z0-9_-]{0,50}")
        .prop_map(move |(h, p, sig)| format!("{}.{}.{}", b64(&h), b64(&p), sig))
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Form(Vec<(String, String)>),
    Raw(String, Vec<u8>),
    None,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        json_value().prop_map(Body::Json),
        prop::collection::vec((field_name(), awkward_string()), 0..5).prop_map(Body::Form),
        (
            prop_oneof![
                Just("application/json".to_owned()),
                Just("application/x-www-form-urlencoded".to_owned()),
                Just("text/plain".to_owned()),
                Just("multipart/form-data; boundary=x".to_owned()),
                ".{0,20}",
            ],
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(ct, bytes)| Body::Raw(ct, bytes)),
        Just(Body::None),
    ]
}

fn authorization() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        jwt_like().prop_map(|t| Some(format!("Bearer {t}"))),
        "[ -~]{0,60}".prop_map(Some),
        Just(Some(format!("Bearer {}", "x".repeat(10_000)))),
        Just(Some("Basic Og==".to_owned())),
    ]
}

fn method() -> impl Strategy<Value = reqwest::Method> {
    prop_oneof![
        4 => Just(reqwest::Method::POST),
        2 => Just(reqwest::Method::GET),
        1 => Just(reqwest::Method::PUT),
        1 => Just(reqwest::Method::DELETE),
        1 => Just(reqwest::Method::OPTIONS),
        1 => Just(reqwest::Method::PATCH),
    ]
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Body,
    auth: Option<String>,
) -> (u16, String) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(auth) = auth {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&auth) {
            request = request.header("Authorization", value);
        }
    }
    request = match body {
        Body::Json(value) => request.json(&value),
        Body::Form(pairs) => request.form(&pairs),
        Body::Raw(content_type, bytes) => {
            match reqwest::header::HeaderValue::from_str(&content_type) {
                Ok(value) => request.header("Content-Type", value).body(bytes),
                Err(_) => request.body(bytes),
            }
        }
        Body::None => request,
    };
    let response = request.send().await.expect("tokend answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[test]
fn no_request_gets_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(spawn_app(Backend::Sqlite));
    // Something real to hit: a user with live tokens.
    let (_, access, refresh) = runtime.block_on(app.user_with_tokens("alice", "pw12345"));
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(400);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        method(),
        prop::sample::select(paths()),
        body(),
        authorization(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(method, path, body, auth, real)| {
            // Now and then, the real tokens in the usual places.
            let (body, auth) = if real {
                (
                    Body::Json(json!({"refresh": refresh, "token": access, "username": "alice", "password": "pw12345"})),
                    Some(format!("Bearer {access}")),
                )
            } else {
                (body, auth)
            };
            let (status, text) = runtime.block_on(send(&app, method.clone(), &path, body, auth));
            prop_assert!(status < 500, "{method} {path} -> {status} {text}");
            if !text.is_empty() && path != "/metrics" {
                prop_assert!(
                    serde_json::from_str::<Value>(&text).is_ok(),
                    "{method} {path} -> {status}: not JSON: {text}"
                );
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // Still serving, and the real session survived the noise unless logged out.
    let health = runtime.block_on(app.send(app.client.get(app.url("/healthz"))));
    assert_eq!(health.status, 200);
}

//! Browser mode (`TOKEND__COOKIE__ENABLED`): the refresh token as an
//! HttpOnly cookie limited to the token paths, taken from the cookie when
//! the body has none, cleared on logout; CORS with credentials for the
//! configured origins only.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend, Reply, TestApp};

const ORIGIN: &str = "http://app.example.test";
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;

async fn cookie_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        &[
            ("TOKEND__COOKIE__ENABLED", "true"),
            ("TOKEND__CORS__ALLOWED_ORIGINS", ORIGIN),
        ],
    )
    .await
}

/// The refresh token in a Set-Cookie header.
fn cookie_token(reply: &Reply) -> String {
    set_cookie(reply)
        .strip_prefix("tokend_refresh=")
        .and_then(|rest| rest.split(';').next())
        .expect("tokend_refresh cookie")
        .to_owned()
}

fn set_cookie(reply: &Reply) -> String {
    reply
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no Set-Cookie in {:?}", reply.headers))
        .to_owned()
}

async fn post_with_cookie(
    app: &TestApp,
    path: &str,
    cookie: &str,
    body: serde_json::Value,
) -> Reply {
    app.send(
        app.client
            .post(app.url(path))
            .header("Origin", ORIGIN)
            .header("Cookie", format!("tokend_refresh={cookie}"))
            .json(&body),
    )
    .await
}

async fn login_and_refresh_set_the_cookie_and_read_it(backend: Backend) {
    let app = cookie_app(backend).await;
    app.register("alice", "pw12345").await;
    let login = app.login("alice", "pw12345").await;
    assert_eq!(login.status, 200, "{}", login.body);
    // Only the access token in the body: the refresh token never reaches
    // page scripts.
    let keys: Vec<String> = login.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["access"]);
    let r1 = cookie_token(&login);
    assert_eq!(
        set_cookie(&login),
        format!("tokend_refresh={r1}; HttpOnly; SameSite=Strict; Secure; Path=/api/token; Max-Age=86400")
    );
    // No body field: the cookie is used, and the rotated token replaces it.
    let rotated = post_with_cookie(&app, "/api/token/refresh/", &r1, json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.json().get("refresh").is_none(), "{}", rotated.body);
    let r2 = cookie_token(&rotated);
    assert_ne!(r1, r2);
    assert!(set_cookie(&rotated).starts_with(&format!("tokend_refresh={r2}; HttpOnly;")));
    // A body field wins over the cookie (here: the spent one, a replay).
    let replay = post_with_cookie(&app, "/api/token/refresh/", &r2, json!({ "refresh": r1 })).await;
    assert_eq!(replay.status, 200, "replay of r1 within the grace window");
    assert_eq!(cookie_token(&replay), r2);
    // Logout from the cookie clears it; the token is dead.
    let logout = post_with_cookie(&app, "/api/token/blacklist/", &r2, json!({})).await;
    logout.assert(200, "{}");
    assert_eq!(
        set_cookie(&logout),
        "tokend_refresh=; HttpOnly; SameSite=Strict; Secure; Path=/api/token; Max-Age=0"
    );
    let refused = post_with_cookie(&app, "/api/token/refresh/", &r2, json!({})).await;
    refused.assert(401, BLACKLISTED);
    // A refused cookie is cleared (scripts cannot delete an HttpOnly one).
    assert_eq!(
        set_cookie(&refused),
        "tokend_refresh=; HttpOnly; SameSite=Strict; Secure; Path=/api/token; Max-Age=0"
    );
    let refused = post_with_cookie(&app, "/api/token/blacklist/", "garbage", json!({})).await;
    assert_eq!(refused.status, 401);
    assert!(set_cookie(&refused).ends_with("Max-Age=0"));
    // A page of another origin cannot use the cookie, nor log in (CORS only
    // hides responses; the origin check refuses the request itself).
    let forged = app
        .send(
            app.client
                .post(app.url("/api/token/refresh/"))
                .header("Origin", "http://evil.example.test")
                .header("Cookie", format!("tokend_refresh={r1}"))
                .form(&[("x", "y")]),
        )
        .await;
    forged.assert(
        403,
        r#"{"detail":"CSRF Failed: Origin checking failed - http://evil.example.test does not match any trusted origins."}"#,
    );
    assert_eq!(forged.header("set-cookie"), None);
    let forged_login = app
        .send(
            app.client
                .post(app.url("/api/token/"))
                .header("Sec-Fetch-Site", "cross-site")
                .form(&[("username", "alice"), ("password", "pw12345")]),
        )
        .await;
    assert_eq!(forged_login.status, 403, "{}", forged_login.body);
    // Neither body nor cookie: DRF's field error, as without cookie mode.
    app.post_json("/api/token/refresh/", json!({}))
        .await
        .assert(400, r#"{"refresh":["This field is required."]}"#);
}

async fn cors_allows_credentials_for_listed_origins_only(backend: Backend) {
    let app = cookie_app(backend).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/token/refresh/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
    };
    let ok = app.send(preflight(ORIGIN)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let other = app.send(preflight("http://evil.example.test")).await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert_eq!(other.header("access-control-allow-credentials"), None);
}

async fn without_cookie_mode_no_cookie_is_set_or_read(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice", "pw12345").await;
    let login = app.login("alice", "pw12345").await;
    assert_eq!(login.header("set-cookie"), None);
    let refresh = login.token("refresh");
    post_with_cookie(&app, "/api/token/refresh/", &refresh, json!({}))
        .await
        .assert(400, r#"{"refresh":["This field is required."]}"#);
}

#[test]
fn cookie_mode_refuses_wildcard_cors() {
    let env: std::collections::HashMap<String, String> = [
        ("TOKEND__COOKIE__ENABLED", "true"),
        ("TOKEND__CORS__ALLOWED_ORIGINS", "*"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let err = tokend::config::Settings::load_from(std::path::Path::new("/nonexistent"), &env)
        .expect_err("refused");
    assert!(err.to_string().contains("explicit origin list"), "{err}");
}

both_backends!(
    login_and_refresh_set_the_cookie_and_read_it,
    cors_allows_credentials_for_listed_origins_only,
    without_cookie_mode_no_cookie_is_set_or_read,
);

//! Accounts: e-mail at registration, dj-rest-auth's user details, address
//! verification (optional and mandatory), password reset by mail. Mails
//! are read from the outbox rows here; their delivery over real SMTP is
//! tested in `outbox.rs` and the end-to-end flow in the e2e test.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

/// The mails queued so far for `to`, oldest first (their JSON payloads).
async fn mails_to(app: &TestApp, to: &'static str) -> Vec<Value> {
    use diesel::prelude::*;
    use tokend::storage::schema::outbox;
    let payloads: Vec<String> = app
        .db
        .run(|conn| {
            Ok(outbox::table
                .filter(outbox::kind.eq("email"))
                .order(outbox::id)
                .select(outbox::payload)
                .load(conn)?)
        })
        .await
        .expect("read outbox");
    payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).expect("mail JSON"))
        .filter(|m| m["to"] == to)
        .collect()
}

/// The value after `name: ` or `name=` / `/…/` in a mail's text: the links
/// below are `https://app.example/verify/{key}` and
/// `https://app.example/reset/{uid}/{token}`.
fn link_parts(mail: &Value, prefix: &str) -> Vec<String> {
    let text = mail["text"].as_str().expect("text");
    let start = text.find(prefix).expect("link in mail") + prefix.len();
    text[start..]
        .split_whitespace()
        .next()
        .expect("link")
        .split('/')
        .map(str::to_owned)
        .collect()
}

const LINKS: [(&str, &str); 2] = [
    (
        "TOKEND__ACCOUNTS__RESET_URL",
        "https://app.example/reset/{uid}/{token}",
    ),
    (
        "TOKEND__ACCOUNTS__VERIFY_URL",
        "https://app.example/verify/{key}",
    ),
];

fn register(
    app: &TestApp,
    body: Value,
) -> impl std::future::Future<Output = crate::helpers::Reply> + '_ {
    app.post_json("/api/user/register/", body)
}

async fn registration_takes_an_optional_unique_email(backend: Backend) {
    let app = spawn_app(backend).await;
    register(
        &app,
        json!({"username": "alice", "password": "pw", "email": "Alice@Example.COM"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    register(
        &app,
        json!({"username": "bob", "password": "pw", "email": "ALICE@example.com"}),
    )
    .await
    .assert(
        400,
        r#"{"email":["A user is already registered with this e-mail address."]}"#,
    );
    register(
        &app,
        json!({"username": "bob", "password": "pw", "email": "not an address"}),
    )
    .await
    .assert(400, r#"{"email":["Enter a valid email address."]}"#);
    // Absent, null and blank: no address.
    for (name, email) in [("bob", json!(null)), ("carol", json!("  "))] {
        register(
            &app,
            json!({"username": name, "password": "pw", "email": email}),
        )
        .await
        .assert(
            201,
            &json!({"id": if name == "bob" { 2 } else { 3 }, "username": name}).to_string(),
        );
    }
    register(&app, json!({"username": "dave", "password": "pw"}))
        .await
        .assert(201, r#"{"id":4,"username":"dave"}"#);
    // simplejwt's /me is unchanged; dj-rest-auth's user details have more.
    let access = app.login("alice", "pw").await.token("access");
    app.get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(200, r#"{"id":1,"username":"alice"}"#);
    let auth = format!("Bearer {access}");
    app.send(
        app.client
            .get(app.url("/api/auth/user/"))
            .header("Authorization", &auth),
    )
    .await
    .assert(
        200,
        r#"{"pk":1,"username":"alice","email":"Alice@example.com","first_name":"","last_name":""}"#,
    );
    let bob = app.login("bob", "pw").await.token("access");
    app.send(
        app.client
            .get(app.url("/api/auth/user/"))
            .header("Authorization", format!("Bearer {bob}")),
    )
    .await
    .assert(
        200,
        r#"{"pk":2,"username":"bob","email":"","first_name":"","last_name":""}"#,
    );
    let anonymous = app.send(app.client.get(app.url("/api/auth/user/"))).await;
    anonymous.assert(
        401,
        r#"{"detail":"Authentication credentials were not provided."}"#,
    );
    // Without verification no mail is queued.
    assert!(mails_to(&app, "Alice@example.com").await.is_empty());
}

async fn optional_verification_mails_a_key(backend: Backend) {
    let mut env = LINKS.to_vec();
    env.push(("TOKEND__ACCOUNTS__EMAIL_VERIFICATION", "optional"));
    let app = spawn_app_with(backend, &env).await;
    register(
        &app,
        json!({"username": "alice", "password": "pw", "email": "alice@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    let mails = mails_to(&app, "alice@example.com").await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["subject"], "Confirm your e-mail address on tokend");
    let html = mails[0]["html"].as_str().expect("html part");
    assert!(
        html.contains("<a href=\"https://app.example/verify/"),
        "{html}"
    );
    let key = link_parts(&mails[0], "https://app.example/verify/")[0].clone();
    assert_eq!(key.len(), 43);
    // Login works before verification in this mode.
    assert_eq!(app.login("alice", "pw").await.status, 200);
    let verify =
        |key: &str| app.post_json("/api/auth/registration/verify-email/", json!({"key": key}));
    verify("no-such-key")
        .await
        .assert(404, r#"{"detail":"Not found."}"#);
    verify(&key).await.assert(200, r#"{"detail":"ok"}"#);
    verify(&key).await.assert(404, r#"{"detail":"Not found."}"#);
    app.post_json("/api/auth/registration/verify-email/", json!({}))
        .await
        .assert(400, r#"{"key":["This field is required."]}"#);
}

async fn mandatory_verification_gates_login(backend: Backend) {
    let mut env = LINKS.to_vec();
    env.push(("TOKEND__ACCOUNTS__EMAIL_VERIFICATION", "mandatory"));
    let app = spawn_app_with(backend, &env).await;
    register(&app, json!({"username": "alice", "password": "pw"}))
        .await
        .assert(400, r#"{"email":["This field is required."]}"#);
    register(
        &app,
        json!({"username": "alice", "password": "pw", "email": "alice@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    // Right password, unverified address: a distinct 401; a wrong password
    // stays the usual one.
    app.login("alice", "pw").await.assert(
        401,
        r#"{"detail":"E-mail is not verified.","code":"email_not_verified"}"#,
    );
    app.login("alice", "wrong").await.assert(
        401,
        r#"{"detail":"No active account found with the given credentials"}"#,
    );
    let key = link_parts(
        &mails_to(&app, "alice@example.com").await[0],
        "https://app.example/verify/",
    )[0]
    .clone();
    app.post_json("/api/auth/registration/verify-email/", json!({"key": key}))
        .await
        .assert(200, r#"{"detail":"ok"}"#);
    assert_eq!(app.login("alice", "pw").await.status, 200);
}

async fn reset_requests_answer_the_same_for_any_address(backend: Backend) {
    let app = spawn_app_with(backend, &LINKS).await;
    register(
        &app,
        json!({"username": "alice", "password": "pw", "email": "alice@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    let reset = |body: Value| app.post_json("/api/auth/password/reset/", body);
    for email in ["alice@example.com", "nobody@example.com"] {
        reset(json!({"email": email}))
            .await
            .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    }
    reset(json!({"email": "nope"}))
        .await
        .assert(400, r#"{"email":["Enter a valid email address."]}"#);
    reset(json!({}))
        .await
        .assert(400, r#"{"email":["This field is required."]}"#);
}

both_backends!(
    registration_takes_an_optional_unique_email,
    optional_verification_mails_a_key,
    mandatory_verification_gates_login,
    reset_requests_answer_the_same_for_any_address,
);

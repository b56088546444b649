//! Accounts: e-mail at registration, dj-rest-auth's user details, address
//! verification (optional and mandatory), password reset by mail. Mails
//! are read from the outbox rows here, kept undelivered by a relay that
//! refuses connections (a delivered mail keeps no body); their delivery
//! over real SMTP is tested in `outbox.rs` and the end-to-end flow in the
//! e2e test.

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
    let text = mail["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {mail}"));
    let start = text.find(prefix).expect("link in mail") + prefix.len();
    text[start..]
        .split_whitespace()
        .next()
        .expect("link")
        .split('/')
        .map(str::to_owned)
        .collect()
}

const LINKS: [(&str, &str); 4] = [
    (
        "TOKEND__ACCOUNTS__RESET_URL",
        "https://app.example/reset/{uid}/{token}",
    ),
    (
        "TOKEND__ACCOUNTS__VERIFY_URL",
        "https://app.example/verify/{key}",
    ),
    // Nothing listens there: the mails stay queued, bodies and all.
    ("TOKEND__EMAIL__SMTP_URL", "smtp://127.0.0.1:1"),
    ("TOKEND__EMAIL__FROM", "tokend tests <noreply@tokend.test>"),
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
    let html = mails[0]["html"]
        .as_str()
        .unwrap_or_else(|| panic!("no html: {mails:?}"));
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
    // Only the one that verified is on record.
    let e = &crate::audit::events(&app, "email_verified", 1).await[0];
    assert_eq!((e.user_id, e.ip.as_deref()), (Some(1), Some("127.0.0.1")));
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

/// Waits for the `n`th mail to `to` (the sender runs reset jobs after the
/// request's answer).
async fn nth_mail(app: &TestApp, to: &'static str, n: usize) -> Value {
    for _ in 0..200 {
        if let Some(mail) = mails_to(app, to).await.into_iter().nth(n - 1) {
            return mail;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no mail #{n} to {to}");
}

async fn a_reset_link_works_once_and_revokes_every_session(backend: Backend) {
    let app = spawn_app_with(backend, &LINKS).await;
    register(
        &app,
        json!({"username": "alice", "password": "old pw", "email": "alice@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"alice"}"#);
    let (refresh, access) = {
        let login = app.login("alice", "old pw").await;
        (login.token("refresh"), login.token("access"))
    };
    app.post_json(
        "/api/auth/password/reset/",
        json!({"email": "ALICE@example.com"}),
    )
    .await
    .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    let mail = nth_mail(&app, "alice@example.com", 1).await;
    assert_eq!(mail["subject"], "Password reset on tokend");
    let parts = link_parts(&mail, "https://app.example/reset/");
    let (uid, token) = (parts[0].clone(), parts[1].clone());
    assert_eq!(uid, "MQ");
    let confirm = |body: Value| app.post_json("/api/auth/password/reset/confirm/", body);
    let body = |uid: &str, token: &str, p1: &str, p2: &str| json!({"uid": uid, "token": token, "new_password1": p1, "new_password2": p2});
    confirm(json!({})).await.assert(
        400,
        r#"{"new_password1":["This field is required."],"new_password2":["This field is required."],"uid":["This field is required."],"token":["This field is required."]}"#,
    );
    // dj-rest-auth's order: uid, token, then the passwords.
    confirm(body("!!", &token, "a", "b"))
        .await
        .assert(400, r#"{"uid":["Invalid value"]}"#);
    confirm(body("Mg", &token, "a", "b"))
        .await
        .assert(400, r#"{"uid":["Invalid value"]}"#);
    confirm(body(&uid, "forged", "a", "b"))
        .await
        .assert(400, r#"{"token":["Invalid value"]}"#);
    confirm(body(&uid, &token, "new pw", "other pw"))
        .await
        .assert(
            400,
            r#"{"new_password2":["The two password fields didn’t match."]}"#,
        );
    // Still valid after those: nothing was spent.
    confirm(body(&uid, &token, "new pw", "new pw"))
        .await
        .assert(
            200,
            r#"{"detail":"Password has been reset with the new password."}"#,
        );
    // Once only.
    confirm(body(&uid, &token, "newer pw", "newer pw"))
        .await
        .assert(400, r#"{"token":["Invalid value"]}"#);
    let e = &crate::audit::events(&app, "password_reset", 1).await[0];
    assert_eq!(
        (e.user_id, e.username.as_deref(), e.ip.as_deref()),
        (Some(1), Some("alice"), Some("127.0.0.1"))
    );
    assert_eq!(e.detail.as_deref(), Some(r#"{"sessions_revoked":1}"#));
    assert_eq!(app.login("alice", "old pw").await.status, 401);
    assert_eq!(app.login("alice", "new pw").await.status, 200);
    // Every session of the user is revoked, its tokens with it.
    assert_eq!(app.refresh(&refresh).await.status, 401);
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        401
    );
}

/// Any password change voids the reset links mailed before it.
async fn a_password_change_voids_reset_links(backend: Backend) {
    let app = spawn_app_with(backend, &LINKS).await;
    register(
        &app,
        json!({"username": "bob", "password": "pw one", "email": "bob@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"bob"}"#);
    app.post_json(
        "/api/auth/password/reset/",
        json!({"email": "bob@example.com"}),
    )
    .await
    .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    let parts = link_parts(
        &nth_mail(&app, "bob@example.com", 1).await,
        "https://app.example/reset/",
    );
    let access = app.login("bob", "pw one").await.token("access");
    app.post_bearer(
        "/api/user/password/",
        &access,
        json!({"old_password": "pw one", "new_password": "pw two"}),
    )
    .await
    .assert(200, "{}");
    app.post_json(
        "/api/auth/password/reset/confirm/",
        json!({"uid": parts[0], "token": parts[1], "new_password1": "x", "new_password2": "x"}),
    )
    .await
    .assert(400, r#"{"token":["Invalid value"]}"#);
    assert_eq!(app.login("bob", "pw two").await.status, 200);
}

/// Expired links are refused; mail requests are limited per recipient.
async fn reset_links_expire_and_requests_are_limited(backend: Backend) {
    let mut env = LINKS.to_vec();
    env.extend([
        ("TOKEND__ACCOUNTS__RESET_TTL_SECS", "1"),
        ("TOKEND__RATE_LIMIT__ENABLED", "true"),
        ("TOKEND__RATE_LIMIT__ACCOUNT_MAIL_PER_ADDRESS_PER_HOUR", "2"),
    ]);
    let app = spawn_app_with(backend, &env).await;
    register(
        &app,
        json!({"username": "carol", "password": "pw", "email": "carol@example.com"}),
    )
    .await
    .assert(201, r#"{"id":1,"username":"carol"}"#);
    let reset = || {
        app.post_json(
            "/api/auth/password/reset/",
            json!({"email": "Carol@Example.com"}),
        )
    };
    reset()
        .await
        .assert(200, r#"{"detail":"Password reset e-mail has been sent."}"#);
    let parts = link_parts(
        &nth_mail(&app, "carol@example.com", 1).await,
        "https://app.example/reset/",
    );
    assert_eq!(reset().await.status, 200);
    let third = reset().await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(third.header("retry-after").is_some());
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.post_json(
        "/api/auth/password/reset/confirm/",
        json!({"uid": parts[0], "token": parts[1], "new_password1": "x", "new_password2": "x"}),
    )
    .await
    .assert(400, r#"{"token":["Invalid value"]}"#);
}

/// A password change whose old password was checked before a concurrent
/// reset (or another change) commits nothing: the reset wins. Driven at the
/// storage level, where the interleaving can be fixed.
async fn a_change_checked_before_a_reset_does_not_undo_it(backend: Backend) {
    use tokend::storage::users::{self, PasswordChange};
    let app = spawn_app(backend).await;
    let (id, _, _) = app.user_with_tokens("frank", "pw one").await;
    let sid = tokend::auth::sessions::new_session_id();
    let (checked, keep) = (
        app.db
            .run(move |conn| Ok(users::find_by_id(conn, id)?.expect("user").password_hash))
            .await
            .expect("hash"),
        sid,
    );
    // The reset lands first: the stored hash is no longer the checked one.
    app.db
        .write(move |conn| users::change_password(conn, id, "reset-hash", None, None, 1))
        .await
        .expect("reset");
    let stale = checked.clone();
    let outcome = app
        .db
        .write(move |conn| {
            users::change_password(conn, id, "attacker-hash", Some(&keep), Some(&stale), 2)
        })
        .await
        .expect("change");
    assert_eq!(outcome, PasswordChange::Superseded);
    let stored = app
        .db
        .run(move |conn| Ok(users::find_by_id(conn, id)?.expect("user").password_hash))
        .await
        .expect("hash");
    assert_eq!(stored, "reset-hash");
    // Same hash, but the session to keep was revoked by the reset: nothing.
    let (_, access, _) = app.user_with_tokens("grace", "pw").await;
    let claims = crate::helpers::claims(&access);
    let (gid, gsid) = (
        claims["user_id"]
            .as_str()
            .expect("id")
            .parse::<i64>()
            .expect("id"),
        claims["sid"].as_str().expect("sid").to_owned(),
    );
    let hash = app
        .db
        .run(move |conn| Ok(users::find_by_id(conn, gid)?.expect("user").password_hash))
        .await
        .expect("hash");
    app.db
        .write(move |conn| {
            tokend::storage::sessions::revoke_all_for_user(
                conn,
                gid,
                None,
                tokend::storage::sessions::RevokeReason::PasswordReset,
                3,
            )
        })
        .await
        .expect("revoke");
    let (h, s2) = (hash.clone(), gsid.clone());
    let outcome = app
        .db
        .write(move |conn| users::change_password(conn, gid, "late-hash", Some(&s2), Some(&h), 4))
        .await
        .expect("change");
    assert_eq!(outcome, PasswordChange::SessionRevoked);
    let stored = app
        .db
        .run(move |conn| Ok(users::find_by_id(conn, gid)?.expect("user").password_hash))
        .await
        .expect("hash");
    assert_eq!(stored, hash, "rolled back");
}

both_backends!(
    a_change_checked_before_a_reset_does_not_undo_it,
    a_reset_link_works_once_and_revokes_every_session,
    a_password_change_voids_reset_links,
    reset_links_expire_and_requests_are_limited,
    registration_takes_an_optional_unique_email,
    optional_verification_mails_a_key,
    mandatory_verification_gates_login,
    reset_requests_answer_the_same_for_any_address,
);

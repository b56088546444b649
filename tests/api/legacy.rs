//! Tokens without a session (`sid`): what the Django/simplejwt service
//! tokend replaces issued with the same key. Nothing here can revoke them
//! and their `user_id` is that service's numbering, so tokend's endpoints
//! refuse them, except (inside `jwt.accept_sessionless_until`) access tokens
//! that only identify users imported with that service's id.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{now, sign, spawn_app_with, Backend, Reply, TestApp};

const INVALID: &str = r#"{"detail":"Token is invalid","code":"token_not_valid"}"#;
const BEARER_INVALID: &str = r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is invalid"}]}"#;
const INTROSPECTION_CLIENT: (&str, &str) = ("TOKEND__INTROSPECTION__CLIENTS", "svc:s3cret");
const UNTIL: &str = "TOKEND__JWT__ACCEPT_SESSIONLESS_UNTIL";

/// What simplejwt signs: no `sid`.
fn legacy(token_type: &str, user_id: i64) -> String {
    sign(&json!({
        "token_type": token_type,
        "exp": now() + 600,
        "iat": now() - 5,
        "jti": format!("{user_id:0>32}"),
        "user_id": user_id.to_string(),
    }))
}

async fn introspect(app: &TestApp, token: &str) -> Reply {
    app.send(
        app.client
            .post(app.url("/api/token/introspect/"))
            .basic_auth("svc", Some("s3cret"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={token}")),
    )
    .await
}

/// The endpoints that act on a session refuse a sessionless token whatever
/// the configuration; the user's real session is untouched.
async fn assert_session_endpoints_refuse(app: &TestApp, token: &str) {
    app.post_bearer("/api/user/logout-all/", token, json!({}))
        .await
        .assert(401, BEARER_INVALID);
    app.post_bearer(
        "/api/user/password/",
        token,
        json!({"old_password": "pw12345", "new_password": "taken over"}),
    )
    .await
    .assert(401, BEARER_INVALID);
    introspect(app, token)
        .await
        .assert(200, r#"{"active":false}"#);
    app.post_raw(
        "/api/token/revoke/",
        "application/x-www-form-urlencoded",
        format!("token={token}"),
    )
    .await
    .assert(200, "");
}

/// Imports `name` with the legacy service's id `id`, as import-django does.
async fn import_legacy_user(app: &TestApp, id: i64, name: &'static str) {
    let hash = tokend::auth::password::hash_password("pw12345", 4).expect("hash");
    // Through the writing connection, as every write of the service: a
    // read-then-write transaction on another connection would fail at once
    // ("database is locked") if the server committed in between.
    let outcome = app
        .db
        .write(move |conn| {
            let user = tokend::storage::users::ImportedUser {
                id,
                username: name,
                password_hash: &hash,
                email: None,
                email_verified: false,
                first_name: "",
                last_name: "",
                is_active: true,
                is_staff: false,
                is_superuser: false,
                last_login: None,
                date_joined: now(),
            };
            tokend::storage::users::import(conn, &user)
        })
        .await
        .expect("import");
    assert_eq!(outcome, tokend::storage::users::ImportUser::Imported);
}

async fn sessionless_tokens_are_refused_by_default(backend: Backend) {
    let app = spawn_app_with(backend, &[INTROSPECTION_CLIENT]).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw12345").await;
    import_legacy_user(&app, 500, "legacy").await;
    for user in [id, 500] {
        let token = legacy("access", user);
        app.get_me(Some(&format!("Bearer {token}")))
            .await
            .assert(401, BEARER_INVALID);
        app.verify(&token).await.assert(401, INVALID);
        assert_session_endpoints_refuse(&app, &token).await;
        let refresh = legacy("refresh", user);
        app.verify(&refresh).await.assert(401, INVALID);
        app.refresh(&refresh).await.assert(401, INVALID);
        app.blacklist(&refresh).await.assert(401, INVALID);
    }
    // Alice's own session survived all of it, password included.
    app.get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(200, &format!(r#"{{"id":{id},"username":"alice"}}"#));
    assert_eq!(app.refresh(&refresh).await.status, 200);
    assert_eq!(app.login("alice", "pw12345").await.status, 200);
}

async fn sessionless_access_tokens_identify_imported_users_inside_the_window(backend: Backend) {
    let until = (now() + 3600).to_string();
    let app = spawn_app_with(backend, &[INTROSPECTION_CLIENT, (UNTIL, &until)]).await;
    let (id, access, _) = app.user_with_tokens("alice", "pw12345").await;
    import_legacy_user(&app, 500, "legacy").await;
    let token = legacy("access", 500);
    app.get_me(Some(&format!("Bearer {token}")))
        .await
        .assert(200, r#"{"id":500,"username":"legacy"}"#);
    app.verify(&token).await.assert(200, "{}");
    // Nothing to act on: still refused.
    assert_session_endpoints_refuse(&app, &token).await;
    // Refresh tokens without a session: never.
    let refresh = legacy("refresh", 500);
    app.verify(&refresh).await.assert(401, INVALID);
    app.refresh(&refresh).await.assert(401, INVALID);
    // A user registered here was never that service's user of this id.
    let foreign = legacy("access", id);
    app.get_me(Some(&format!("Bearer {foreign}")))
        .await
        .assert(401, BEARER_INVALID);
    app.verify(&foreign).await.assert(401, INVALID);
    // An id nobody holds.
    app.verify(&legacy("access", 9999))
        .await
        .assert(401, INVALID);
    // The legacy user's real logins are ordinary sessions.
    let pair = app.login("legacy", "pw12345").await;
    assert_eq!(pair.status, 200, "{}", pair.body);
    assert_eq!(
        app.post_bearer("/api/user/logout-all/", &pair.token("access"), json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
}

async fn sessionless_tokens_are_refused_once_the_window_is_over(backend: Backend) {
    let until = (now() - 1).to_string();
    let app = spawn_app_with(backend, &[INTROSPECTION_CLIENT, (UNTIL, &until)]).await;
    import_legacy_user(&app, 500, "legacy").await;
    let token = legacy("access", 500);
    app.get_me(Some(&format!("Bearer {token}")))
        .await
        .assert(401, BEARER_INVALID);
    app.verify(&token).await.assert(401, INVALID);
    assert_session_endpoints_refuse(&app, &token).await;
}

both_backends!(
    sessionless_tokens_are_refused_by_default,
    sessionless_access_tokens_identify_imported_users_inside_the_window,
    sessionless_tokens_are_refused_once_the_window_is_over,
);

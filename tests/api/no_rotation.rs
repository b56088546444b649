//! `TOKEND__JWT__ROTATE_REFRESH_TOKENS=false`, simplejwt's default: a
//! refresh answers a new access token only, and the refresh token stays
//! usable until it expires or its session is revoked.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{claims, spawn_app, spawn_app_with, Backend, Reply, TestApp};

const OFF: (&str, &str) = ("TOKEND__JWT__ROTATE_REFRESH_TOKENS", "false");
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const BEARER_BLACKLISTED: &str = r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#;

/// A 200 whose body is exactly `{"access": "…"}`; returns the token.
fn access_only(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let access = reply.token("access");
    reply.assert(200, &format!(r#"{{"access":"{access}"}}"#));
    access
}

async fn me_ok(app: &TestApp, access: &str) {
    let me = app.get_me(Some(&format!("Bearer {access}"))).await;
    assert_eq!(me.status, 200, "{}", me.body);
}

async fn the_refresh_token_stays_usable_until_logout(backend: Backend) {
    let app = spawn_app_with(backend, &[OFF]).await;
    let (_, a0, r) = app.user_with_tokens("alice", "pw").await;
    let sid = claims(&r)["sid"].as_str().expect("sid").to_owned();
    let a1 = access_only(&app.refresh(&r).await);
    let a2 = access_only(&app.refresh(&r).await);
    assert_ne!(a1, a2);
    let (c1, c2) = (claims(&a1), claims(&a2));
    assert_ne!(c1["jti"], c2["jti"]);
    assert_ne!(c1["jti"], claims(&a0)["jti"]);
    for c in [&c1, &c2] {
        assert_eq!(c["sid"], json!(sid));
        assert_eq!(c["token_type"], json!("access"));
    }
    me_ok(&app, &a1).await;
    me_ok(&app, &a2).await;
    app.verify(&r).await.assert(200, "{}");
    // Nothing was spent: the session still holds its one row.
    assert_eq!(app.refresh_tokens_of_session(&sid).await, 1);
    app.blacklist(&r).await.assert(200, "{}");
    app.refresh(&r).await.assert(401, BLACKLISTED);
    for access in [&a0, &a1, &a2] {
        app.get_me(Some(&format!("Bearer {access}")))
            .await
            .assert(401, BEARER_BLACKLISTED);
    }
}

async fn logout_everywhere_and_password_change_end_it(backend: Backend) {
    let app = spawn_app_with(backend, &[OFF]).await;
    let (_, a0, r) = app.user_with_tokens("alice", "pw").await;
    access_only(&app.refresh(&r).await);
    app.post_bearer("/api/user/logout-all/", &a0, json!({}))
        .await
        .assert(200, "{}");
    app.refresh(&r).await.assert(401, BLACKLISTED);

    // A password change from another session ends this one.
    let pair = app.login("alice", "pw").await;
    let r = pair.token("refresh");
    let other = app.login("alice", "pw").await.token("access");
    access_only(&app.refresh(&r).await);
    app.post_bearer(
        "/api/user/password/",
        &other,
        json!({"old_password": "pw", "new_password": "new password"}),
    )
    .await
    .assert(200, "{}");
    app.refresh(&r).await.assert(401, BLACKLISTED);

    // So does an RFC 7009 revocation of the session's access token.
    let pair = app.login("alice", "new password").await;
    let (a, r) = (pair.token("access"), pair.token("refresh"));
    access_only(&app.refresh(&r).await);
    let revoked = app
        .send(
            app.client
                .post(app.url("/api/token/revoke/"))
                .form(&[("token", a.as_str())]),
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    app.refresh(&r).await.assert(401, BLACKLISTED);
}

async fn the_session_and_user_checks_still_apply(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[OFF, ("TOKEND__JWT__SESSION_MAX_AGE_SECS", "120")],
    )
    .await;
    let (id, _, r) = app.user_with_tokens("alice", "pw").await;
    // The access token ends with the session, not 30 minutes later.
    let access = claims(&access_only(&app.refresh(&r).await));
    let end = claims(&r)["iat"].as_i64().expect("iat") + 120;
    assert!(access["exp"].as_i64().expect("exp") <= end, "{access}");
    app.set_active(id, false).await;
    app.refresh(&r).await.assert(
        401,
        r#"{"detail":"No active account found for the given token.","code":"no_active_account"}"#,
    );
    app.set_active(id, true).await;
    access_only(&app.refresh(&r).await);
}

async fn cookie_mode_answers_the_access_token_and_keeps_the_cookie(backend: Backend) {
    let origin = "http://app.example.test";
    let app = spawn_app_with(
        backend,
        &[
            OFF,
            ("TOKEND__COOKIE__ENABLED", "true"),
            ("TOKEND__CORS__ALLOWED_ORIGINS", origin),
        ],
    )
    .await;
    app.register("alice", "pw12345").await;
    let login = app.login("alice", "pw12345").await;
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.strip_prefix("tokend_refresh="))
        .and_then(|rest| rest.split(';').next())
        .expect("refresh cookie")
        .to_owned();
    for _ in 0..2 {
        let refreshed = app
            .send(
                app.client
                    .post(app.url("/api/token/refresh/"))
                    .header("Origin", origin)
                    .header("Cookie", format!("tokend_refresh={cookie}"))
                    .json(&json!({})),
            )
            .await;
        access_only(&refreshed);
        assert_eq!(
            refreshed.header("set-cookie"),
            None,
            "the cookie is not re-set"
        );
    }
}

async fn a_grace_longer_than_the_access_lifetime_is_fine_without_rotation(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            OFF,
            ("TOKEND__JWT__ACCESS_TTL_SECS", "5"),
            ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "10"),
        ],
    )
    .await;
    let (_, _, r) = app.user_with_tokens("alice", "pw").await;
    access_only(&app.refresh(&r).await);
}

async fn a_token_spent_while_rotation_was_on_stays_refused(backend: Backend) {
    let rotating = spawn_app(backend).await;
    let (_, _, r1) = rotating.user_with_tokens("alice", "pw").await;
    let r2 = rotating.refresh(&r1).await.token("refresh");
    // The same database, after switching rotation off.
    let app = rotating.spawn_replica_with(&[OFF]).await;
    app.refresh(&r1).await.assert(401, BLACKLISTED);
    // Not theft: nothing is spent any more, so the session lives on.
    access_only(&app.refresh(&r2).await);
    access_only(&app.refresh(&r2).await);
    assert_eq!(app.session_count_live().await, 1);
}

both_backends!(
    a_token_spent_while_rotation_was_on_stays_refused,
    the_refresh_token_stays_usable_until_logout,
    logout_everywhere_and_password_change_end_it,
    the_session_and_user_checks_still_apply,
    cookie_mode_answers_the_access_token_and_keeps_the_cookie,
    a_grace_longer_than_the_access_lifetime_is_fine_without_rotation,
);

//! Sessions (token families): replay inside the grace window, reuse
//! detection, logout scopes, password change, absolute lifetime.

use futures::future::join_all;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{claims, spawn_app, spawn_app_with, Backend, TestApp};

const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const NO_GRACE: (&str, &str) = ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "0");

fn bearer_blacklisted() -> &'static str {
    r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#
}

/// Asserts that an access/refresh pair is dead everywhere.
async fn assert_pair_dead(app: &TestApp, access: &str, refresh: &str) {
    app.get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(401, bearer_blacklisted());
    app.verify(access).await.assert(401, BLACKLISTED);
    app.verify(refresh).await.assert(401, BLACKLISTED);
    app.refresh(refresh).await.assert(401, BLACKLISTED);
}

async fn assert_pair_alive(app: &TestApp, access: &str, refresh: &str) {
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    app.verify(access).await.assert(200, "{}");
    app.verify(refresh).await.assert(200, "{}");
}

async fn replay_inside_the_grace_window_gives_the_same_pair(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, r1) = app.user_with_tokens("alice", "pw").await;
    let first = app.refresh(&r1).await;
    assert_eq!(first.status, 200);
    // A second tab, or a retried request, presents R1 again.
    let second = app.refresh(&r1).await;
    second.assert(200, &first.body);
    let (a2, r2) = (first.token("access"), first.token("refresh"));
    assert_pair_alive(&app, &a2, &r2).await;
    // The session goes on from R2.
    let next = app.refresh(&r2).await;
    assert_eq!(next.status, 200);
    assert_eq!(app.session_count_live().await, 1);
}

async fn theft_after_the_grace_window_revokes_the_session(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "1")]).await;
    let (_, a1, r1) = app.user_with_tokens("alice", "pw").await;
    let other = app.login("alice", "pw").await;
    let (other_access, other_refresh) = (other.token("access"), other.token("refresh"));
    let rotated = app.refresh(&r1).await;
    let (a2, r2) = (rotated.token("access"), rotated.token("refresh"));
    // The thief (or the victim) presents R1 again after the grace window
    // (1 s here; instants are whole seconds): theft evidence.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.refresh(&r1).await.assert(401, BLACKLISTED);
    assert_pair_dead(&app, &a2, &r2).await;
    app.get_me(Some(&format!("Bearer {a1}")))
        .await
        .assert(401, bearer_blacklisted());
    // The user's other session is untouched.
    assert_pair_alive(&app, &other_access, &other_refresh).await;
}

async fn an_older_ancestor_is_always_theft(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, r1) = app.user_with_tokens("alice", "pw").await;
    let r2 = app.refresh(&r1).await.token("refresh");
    let rotated = app.refresh(&r2).await;
    let (a3, r3) = (rotated.token("access"), rotated.token("refresh"));
    // R1 is within the grace window, but it is not the parent of the current
    // token any more.
    app.refresh(&r1).await.assert(401, BLACKLISTED);
    assert_pair_dead(&app, &a3, &r3).await;
}

/// However fast a session rotates, it keeps at most two rows (its current
/// token and the one just spent), and reuse of any older ancestor, whose row
/// is gone, is still theft.
async fn a_session_keeps_two_rows_and_still_detects_ancestor_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, first) = app.user_with_tokens("alice", "pw").await;
    let other = app.login("alice", "pw").await;
    let sid = claims(&first)["sid"].as_str().expect("sid").to_owned();
    let (mut access, mut current) = (String::new(), first.clone());
    let mut ancestors = vec![first.clone()];
    for i in 0..50 {
        let rotated = app.refresh(&current).await;
        assert_eq!(rotated.status, 200, "rotation {i}: {}", rotated.body);
        (access, current) = (rotated.token("access"), rotated.token("refresh"));
        ancestors.push(current.clone());
        let rows = app.refresh_tokens_of_session(&sid).await;
        assert!(rows <= 2, "rotation {i}: {rows} rows for one session");
    }
    assert_eq!(ancestors.len(), 51);
    // Gone from the table, old ancestors answer as spent tokens did, and
    // neither verify nor blacklist of one touches the session.
    for old in [&ancestors[0], &ancestors[25]] {
        app.verify(old).await.assert(401, BLACKLISTED);
        app.blacklist(old).await.assert(401, BLACKLISTED);
    }
    assert_pair_alive(&app, &access, &current).await;
    // Reuse of the very first token (inside the grace window of nothing):
    // theft, the session is revoked and its current pair is dead.
    app.refresh(&ancestors[0]).await.assert(401, BLACKLISTED);
    assert_pair_dead(&app, &access, &current).await;
    app.verify(&ancestors[0]).await.assert(401, BLACKLISTED);
    app.refresh(&ancestors[0]).await.assert(401, BLACKLISTED);
    app.blacklist(&ancestors[0]).await.assert(401, BLACKLISTED);
    let metrics = app.send(app.client.get(app.url("/metrics"))).await;
    assert!(
        metrics
            .body
            .contains("tokend_refresh_reuse_detections_total 1\n"),
        "{}",
        metrics.body
    );
    // The user's other session is untouched.
    assert_pair_alive(&app, &other.token("access"), &other.token("refresh")).await;
    assert_eq!(app.session_count_live().await, 1);
}

/// A middle ancestor (its row deleted long ago) is theft too; afterwards the
/// current token is refused.
async fn reuse_of_a_middle_ancestor_is_theft(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, r1) = app.user_with_tokens("alice", "pw").await;
    let mut chain = vec![r1];
    for _ in 0..5 {
        let next = app.refresh(&chain[chain.len() - 1]).await.token("refresh");
        chain.push(next);
    }
    app.refresh(&chain[2]).await.assert(401, BLACKLISTED);
    app.refresh(&chain[5]).await.assert(401, BLACKLISTED);
    app.verify(&chain[5]).await.assert(401, BLACKLISTED);
    assert_eq!(app.session_count_live().await, 0);
}

async fn racing_rotation_and_reuse_leave_no_live_token(backend: Backend) {
    let app = spawn_app_with(backend, &[NO_GRACE]).await;
    let (_, _, r1) = app.user_with_tokens("alice", "pw").await;
    let r2 = app.refresh(&r1).await.token("refresh");
    // Ten rotations of the current token race ten reuses of the spent one.
    let requests = (0..20).map(|i| {
        let client = reqwest::Client::new();
        let url = app.url("/api/token/refresh/");
        let token = if i % 2 == 0 { r2.clone() } else { r1.clone() };
        async move {
            let response = client
                .post(url)
                .json(&json!({ "refresh": token }))
                .send()
                .await
                .expect("sent");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    });
    let replies = join_all(requests).await;
    assert!(
        replies.iter().all(|(s, _)| *s == 200 || *s == 401),
        "{replies:?}"
    );
    assert!(
        replies.iter().filter(|(s, _)| *s == 200).count() <= 1,
        "{replies:?}"
    );
    // Whatever won, the session is revoked and every pair it handed out is dead.
    for (_, body) in replies.iter().filter(|(s, _)| *s == 200) {
        let pair: serde_json::Value = serde_json::from_str(body).unwrap();
        let (access, refresh) = (
            pair["access"].as_str().unwrap(),
            pair["refresh"].as_str().unwrap(),
        );
        assert_pair_dead(&app, access, refresh).await;
    }
    assert_eq!(app.session_count_live().await, 0);
}

async fn logout_revokes_the_session_and_its_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let other = app.login("alice", "pw").await;
    app.blacklist(&refresh).await.assert(200, "{}");
    assert_pair_dead(&app, &access, &refresh).await;
    assert_pair_alive(&app, &other.token("access"), &other.token("refresh")).await;
}

async fn logout_everywhere_revokes_every_session_of_the_user_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, a1, r1) = app.user_with_tokens("alice", "pw").await;
    let second = app.login("alice", "pw").await;
    let (_, bob_access, bob_refresh) = app.user_with_tokens("bob", "pw").await;
    let path = "/api/user/logout-all/";
    app.send(app.client.post(app.url(path))).await.assert(
        401,
        r#"{"detail":"Authentication credentials were not provided."}"#,
    );
    app.send(
        app.client
            .post(app.url(path))
            .header("Authorization", format!("Bearer {a1}")),
    )
    .await
    .assert(200, "{}");
    assert_pair_dead(&app, &a1, &r1).await;
    assert_pair_dead(&app, &second.token("access"), &second.token("refresh")).await;
    assert_pair_alive(&app, &bob_access, &bob_refresh).await;
    // Logging in again works.
    assert_eq!(app.login("alice", "pw").await.status, 200);
}

async fn password_change_keeps_this_session_and_revokes_the_others(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, a1, r1) = app.user_with_tokens("alice", "old password").await;
    let other = app.login("alice", "old password").await;
    let (_, bob_access, bob_refresh) = app.user_with_tokens("bob", "pw").await;
    let change = |body: serde_json::Value| {
        app.send(
            app.client
                .post(app.url("/api/user/password/"))
                .header("Authorization", format!("Bearer {a1}"))
                .json(&body),
        )
    };
    change(json!({})).await.assert(
        400,
        r#"{"old_password":["This field is required."],"new_password":["This field is required."]}"#,
    );
    change(json!({"old_password": "wrong", "new_password": "new password"}))
        .await
        .assert(400, r#"{"old_password":["Wrong password."]}"#);
    change(json!({"old_password": "old password", "new_password": "p".repeat(129)}))
        .await
        .assert(
            400,
            r#"{"new_password":["Ensure this field has no more than 128 characters."]}"#,
        );
    change(json!({"old_password": "old password", "new_password": "new password"}))
        .await
        .assert(200, "{}");
    assert_pair_alive(&app, &a1, &r1).await;
    assert_pair_dead(&app, &other.token("access"), &other.token("refresh")).await;
    assert_pair_alive(&app, &bob_access, &bob_refresh).await;
    assert_eq!(app.login("alice", "old password").await.status, 401);
    assert_eq!(app.login("alice", "new password").await.status, 200);
}

async fn disabled_users_lose_every_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    app.set_active(id, false).await;
    app.get_me(Some(&format!("Bearer {access}"))).await.assert(
        401,
        r#"{"detail":"User is inactive","code":"user_inactive"}"#,
    );
    app.refresh(&refresh).await.assert(
        401,
        r#"{"detail":"No active account found for the given token.","code":"no_active_account"}"#,
    );
}

async fn sessions_have_an_absolute_lifetime(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__SESSION_MAX_AGE_SECS", "120")]).await;
    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let (a, r) = (claims(&access), claims(&refresh));
    let end = r["iat"].as_i64().unwrap() + 120;
    assert_eq!(
        r["exp"].as_i64(),
        Some(end),
        "refresh token capped by the session"
    );
    assert_eq!(
        a["exp"].as_i64(),
        Some(end),
        "access token capped by the session"
    );
    // Rotations never extend it.
    let rotated = app.refresh(&refresh).await;
    assert_eq!(claims(&rotated.token("refresh"))["exp"].as_i64(), Some(end));
}

/// A row lost without a later token in its session (a purge on a replica
/// whose clock runs ahead, a restored backup) is not taken for an ancestor:
/// the token is unknown, and its owner keeps the session.
async fn a_lost_row_without_a_later_token_is_not_theft(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let jti = claims(&refresh)["jti"].as_str().expect("jti").to_owned();
    app.db
        .run(move |conn| {
            use diesel::prelude::*;
            use tokend::storage::schema::refresh_tokens;
            diesel::delete(refresh_tokens::table.filter(refresh_tokens::jti.eq(jti)))
                .execute(conn)?;
            Ok(())
        })
        .await
        .expect("delete the row");
    app.refresh(&refresh).await.assert(
        401,
        r#"{"detail":"Token is invalid","code":"token_not_valid"}"#,
    );
    app.get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(200, r#"{"id":1,"username":"alice"}"#);
    assert_eq!(app.session_count_live().await, 1, "the session lives on");
}

both_backends!(
    a_lost_row_without_a_later_token_is_not_theft,
    replay_inside_the_grace_window_gives_the_same_pair,
    theft_after_the_grace_window_revokes_the_session,
    an_older_ancestor_is_always_theft,
    a_session_keeps_two_rows_and_still_detects_ancestor_reuse,
    reuse_of_a_middle_ancestor_is_theft,
    racing_rotation_and_reuse_leave_no_live_token,
    logout_revokes_the_session_and_its_access_tokens,
    logout_everywhere_revokes_every_session_of_the_user_only,
    password_change_keeps_this_session_and_revokes_the_others,
    disabled_users_lose_every_token,
    sessions_have_an_absolute_lifetime,
);

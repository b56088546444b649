//! Races with real parallel requests.

use futures::future::join_all;

use crate::both_backends;
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};

const RACERS: usize = 20;

/// `RACERS` simultaneous refreshes of one token, each on its own connection
/// so that the requests truly overlap.
async fn race_refresh(app: &TestApp, refresh: &str) -> Vec<(u16, String)> {
    let requests = (0..RACERS).map(|_| {
        let client = reqwest::Client::new();
        let url = app.url("/api/token/refresh/");
        let body = serde_json::json!({ "refresh": refresh });
        async move {
            let response = client.post(url).json(&body).send().await.expect("sent");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    });
    join_all(requests).await
}

/// Without a grace window (simplejwt's semantics): one rotation wins, every
/// other request is refused, and the token was spent exactly once.
async fn one_refresh_token_is_spent_exactly_once(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "0")]).await;
    let (_, _, refresh) = app.user_with_tokens("alice", "pw").await;
    let replies = race_refresh(&app, &refresh).await;
    let winners: Vec<&(u16, String)> = replies.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one rotation must win: {replies:?}"
    );
    for (status, body) in replies.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, body.as_str()),
            (
                401,
                r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#
            )
        );
    }
    // Every loser presented a spent token: theft evidence, so the session
    // is revoked and the winner's pair is dead too. No live branch remains.
    let successor: serde_json::Value = serde_json::from_str(&winners[0].1).unwrap();
    app.refresh(successor["refresh"].as_str().unwrap())
        .await
        .assert(
            401,
            r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
        );
    assert_eq!(app.session_count_live().await, 0);
}

/// With the default grace window: one rotation happens, and every racer
/// gets that same successor pair (a replay), so no second branch exists.
async fn racing_refreshes_share_one_rotation(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, refresh) = app.user_with_tokens("alice", "pw").await;
    let replies = race_refresh(&app, &refresh).await;
    let first = &replies[0];
    assert_eq!(first.0, 200, "{replies:?}");
    assert!(
        replies.iter().all(|r| r == first),
        "all racers get the same pair: {replies:?}"
    );
    let pair: serde_json::Value = serde_json::from_str(&first.1).unwrap();
    let successor = pair["refresh"].as_str().unwrap();
    assert_eq!(
        app.refresh_tokens_recorded().await,
        2,
        "the login's token and one successor"
    );
    assert_eq!(app.refresh(successor).await.status, 200);
}

/// In many sessions at once, rotations of the current token race reuse of
/// its parent (theft: no grace) and a logout: whatever wins, each session
/// ends revoked with no token row left live in it, and the winner's refresh
/// token is refused by refresh and by logout.
async fn rotation_reuse_and_logout_races_leave_no_live_token(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "0")]).await;
    const SESSIONS: usize = 16;
    app.register("alice", "pw").await;
    let mut chains = Vec::new();
    for _ in 0..SESSIONS {
        let r1 = app.login("alice", "pw").await.token("refresh");
        let r2 = app.refresh(&r1).await.token("refresh");
        chains.push((r1, r2));
    }
    let requests = chains.iter().flat_map(|(r1, r2)| {
        [
            ("/api/token/refresh/", r2),
            ("/api/token/refresh/", r1),
            ("/api/token/blacklist/", r2),
            ("/api/token/refresh/", r2),
            ("/api/token/refresh/", r1),
        ]
        .map(|(path, token)| {
            let client = reqwest::Client::new();
            let url = app.url(path);
            let body = serde_json::json!({ "refresh": token });
            async move {
                let response = client.post(url).json(&body).send().await.expect("sent");
                (
                    response.status().as_u16(),
                    response.text().await.expect("body"),
                )
            }
        })
    });
    let replies = join_all(requests).await;
    assert!(
        replies.iter().all(|(s, _)| *s == 200 || *s == 401),
        "{replies:?}"
    );
    assert_eq!(app.session_count_live().await, 0, "{replies:?}");
    assert_eq!(app.live_tokens_in_revoked_sessions().await, 0);
    let blacklisted = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
    for (_, body) in replies.iter().filter(|(s, b)| *s == 200 && b != "{}") {
        let pair: serde_json::Value = serde_json::from_str(body).expect("pair");
        let refresh = pair["refresh"].as_str().expect("refresh");
        app.refresh(refresh).await.assert(401, blacklisted);
        app.blacklist(refresh).await.assert(401, blacklisted);
    }
}

async fn one_username_is_registered_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let requests = (0..RACERS).map(|i| {
        let client = reqwest::Client::new();
        let url = app.url("/api/user/register/");
        let body = serde_json::json!({ "username": "racer", "password": format!("pw{i}") });
        async move {
            let response = client.post(url).json(&body).send().await.expect("sent");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    });
    let replies = join_all(requests).await;
    assert_eq!(
        replies.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{replies:?}"
    );
    for (status, body) in replies.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, body.as_str()),
            (
                400,
                r#"{"username":["A user with that username already exists."]}"#
            )
        );
    }
}

both_backends!(
    one_refresh_token_is_spent_exactly_once,
    racing_refreshes_share_one_rotation,
    rotation_reuse_and_logout_races_leave_no_live_token,
    one_username_is_registered_exactly_once,
);

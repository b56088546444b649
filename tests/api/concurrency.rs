//! Races with real parallel requests.

use futures::future::join_all;

use crate::both_backends;
use crate::helpers::{spawn_app, Backend};

const RACERS: usize = 20;

async fn one_refresh_token_is_spent_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, _, refresh) = app.user_with_tokens("alice", "pw").await;
    // Separate clients: separate connections, so the requests truly overlap.
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
    let replies = join_all(requests).await;
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
    // The winner's new refresh token is the only live branch.
    let successor: serde_json::Value = serde_json::from_str(&winners[0].1).unwrap();
    let successor = successor["refresh"].as_str().unwrap();
    assert_eq!(app.refresh(successor).await.status, 200);
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
    one_username_is_registered_exactly_once
);

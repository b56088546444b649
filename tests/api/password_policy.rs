//! The password policy (`password.min_length`, `…min_strength`,
//! `…reject_username`) at registration, password change and on the command
//! line, with DRF-shaped field errors.

use serde_json::json;

use crate::both_backends;
use crate::cli::tokend;
use crate::helpers::{spawn_app_with, Backend};

const STRICT: [(&str, &str); 3] = [
    ("TOKEND__PASSWORD__MIN_LENGTH", "8"),
    ("TOKEND__PASSWORD__MIN_STRENGTH", "2"),
    ("TOKEND__PASSWORD__REJECT_USERNAME", "true"),
];
const TOO_SIMILAR: &str = "The password is too similar to the username.";
const TOO_SHORT: &str = "This password is too short. It must contain at least 8 characters.";
const TOO_WEAK: &str =
    "This password is too easy to guess. Add more words or characters that are less common.";
const GOOD: &str = "correct horse battery staple";

async fn the_policy_guards_every_new_password(backend: Backend) {
    let app = spawn_app_with(backend, &STRICT).await;
    let register = |username: &str, password: &str| {
        app.post_json(
            "/api/user/register/",
            json!({"username": username, "password": password}),
        )
    };
    register("alice", "Alice1").await.assert(
        400,
        &json!({"password": [TOO_SIMILAR, TOO_SHORT, TOO_WEAK]}).to_string(),
    );
    register("alice", "password123")
        .await
        .assert(400, &json!({"password": [TOO_WEAK]}).to_string());
    // Field errors together, as DRF reports them; nothing was created.
    register("bad name", "x").await.assert(
        400,
        &json!({
            "username": ["Enter a valid username. This value may contain only letters, numbers, and @/./+/-/_ characters."],
            "password": [TOO_SHORT, TOO_WEAK],
        })
        .to_string(),
    );
    assert_eq!(register("alice", GOOD).await.status, 201);
    let access = app.login("alice", GOOD).await.token("access");
    let change = |new: &str| {
        app.post_bearer(
            "/api/user/password/",
            &access,
            json!({"old_password": GOOD, "new_password": new}),
        )
    };
    change("my alice pass phrase")
        .await
        .assert(400, &json!({"new_password": [TOO_SIMILAR]}).to_string());
    change("qwertyuiop")
        .await
        .assert(400, &json!({"new_password": [TOO_WEAK]}).to_string());
    change("vivid otter juggles umbrellas")
        .await
        .assert(200, "{}");

    // The command line applies the same policy.
    let (ok, out) = tokend(&app, &["users", "create", "bob"], "bob12345\n");
    assert!(
        !ok && out.contains(&format!("password: {TOO_SIMILAR} {TOO_WEAK}")),
        "{out}"
    );
    let (ok, out) = tokend(&app, &["users", "set-password", "alice"], "short\n");
    assert!(!ok && out.contains(TOO_SHORT), "{out}");
}

/// The default profile accepts any password, as simplejwt.
async fn no_policy_by_default(backend: Backend) {
    let app = spawn_app_with(backend, &[]).await;
    assert_eq!(app.register("carol", "carol").await.status, 201);
    assert_eq!(app.register("dave", "1").await.status, 201);
}

both_backends!(the_policy_guards_every_new_password, no_policy_by_default);

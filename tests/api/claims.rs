//! `jwt.extra_claims`: Django's user fields and groups in access tokens,
//! managed with the command line, recomputed at every refresh; replays
//! inside the grace window give the exact token of the rotation.

use std::process::Command;

use serde_json::{json, Value};

use crate::both_backends;
use crate::cli::tokend;
use crate::helpers::{claims, spawn_app, spawn_app_with, Backend, TestApp};

const ALL: &str = "username,email,is_staff,is_superuser,groups";

/// The claims of an access token after tokend's own.
fn extra(token: &str) -> Value {
    let mut c = claims(token);
    let map = c.as_object_mut().expect("claims object");
    for own in ["token_type", "exp", "iat", "jti", "user_id", "sid"] {
        assert!(map.remove(own).is_some(), "{own} missing");
    }
    c
}

fn cli_ok(app: &TestApp, args: &[&str]) -> String {
    let (ok, out) = tokend(app, args, "");
    assert!(ok, "tokend {args:?}: {out}");
    out
}

fn cli_fails(app: &TestApp, args: &[&str], message: &str) {
    let (ok, out) = tokend(app, args, "");
    assert!(!ok && out.contains(message), "tokend {args:?}: {out}");
}

async fn extra_claims_follow_groups_and_flags(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__EXTRA_CLAIMS", ALL)]).await;
    assert_eq!(app.register("alice", "pw12345").await.status, 201);
    let login = app.login("alice", "pw12345").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let access = login.token("access");
    // Written after simplejwt's claims, in the configured order.
    let keys: Vec<String> = claims(&access)
        .as_object()
        .expect("claims")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        [
            "token_type",
            "exp",
            "iat",
            "jti",
            "user_id",
            "sid",
            "username",
            "email",
            "is_staff",
            "is_superuser",
            "groups"
        ]
    );
    assert_eq!(
        extra(&access),
        json!({"username": "alice", "email": "", "is_staff": false,
               "is_superuser": false, "groups": []})
    );
    // Refresh tokens stay simplejwt's.
    assert!(claims(&login.token("refresh")).get("username").is_none());

    cli_ok(&app, &["groups", "create", "ops"]);
    cli_ok(&app, &["groups", "create", "editors"]);
    cli_fails(&app, &["groups", "create", "ops"], "already exists");
    cli_fails(&app, &["groups", "create", " ops"], "spaces");
    cli_ok(&app, &["users", "add-group", "alice", "ops"]);
    let out = cli_ok(&app, &["users", "add-group", "alice", "ops"]);
    assert!(out.contains("alice is already in ops"), "{out}");
    cli_ok(&app, &["users", "add-group", "alice", "editors"]);
    cli_fails(
        &app,
        &["users", "add-group", "alice", "nobody"],
        "no group named \"nobody\"",
    );
    cli_fails(&app, &["users", "add-group", "zoe", "ops"], "no user named");
    cli_ok(&app, &["users", "set-staff", "alice", "true"]);
    cli_fails(
        &app,
        &["users", "set-staff", "alice", "yes"],
        "invalid value",
    );
    let out = cli_ok(&app, &["groups", "list"]);
    assert_eq!(out, "editors\t1\nops\t1\n");

    // The next refresh shows the change; the token issued before keeps its.
    let rotated = app.refresh(&login.token("refresh")).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(
        extra(&rotated.token("access")),
        json!({"username": "alice", "email": "", "is_staff": true,
               "is_superuser": false, "groups": ["editors", "ops"]})
    );
    assert_eq!(extra(&access)["groups"], json!([]));

    // A replay inside the grace window is the rotation's exact pair, even
    // though the groups changed since.
    cli_ok(&app, &["users", "remove-group", "alice", "ops"]);
    let replay = app.refresh(&login.token("refresh")).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body, rotated.body);

    cli_ok(&app, &["groups", "delete", "editors"]);
    cli_fails(&app, &["groups", "delete", "editors"], "no group named");
    cli_ok(&app, &["users", "set-staff", "alice", "false"]);
    cli_ok(&app, &["users", "set-superuser", "alice", "true"]);
    let next = app.refresh(&rotated.token("refresh")).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        extra(&next.token("access")),
        json!({"username": "alice", "email": "", "is_staff": false,
               "is_superuser": true, "groups": []})
    );
    assert_eq!(cli_ok(&app, &["groups", "list"]), "ops\t0\n");
    // Verify and /me accept such tokens as any other.
    app.verify(&next.token("access")).await.assert(200, "{}");
    app.get_me(Some(&format!("Bearer {}", next.token("access"))))
        .await
        .assert(200, r#"{"id":1,"username":"alice"}"#);
}

/// Without rotation the renewed access token carries the claims of now.
async fn extra_claims_without_rotation(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TOKEND__JWT__EXTRA_CLAIMS", "groups,is_staff"),
            ("TOKEND__JWT__ROTATE_REFRESH_TOKENS", "false"),
        ],
    )
    .await;
    let (_, access, refresh) = app.user_with_tokens("bob", "pw12345").await;
    assert_eq!(extra(&access), json!({"groups": [], "is_staff": false}));
    cli_ok(&app, &["groups", "create", "billing"]);
    cli_ok(&app, &["users", "add-group", "bob", "billing"]);
    let renewed = app.refresh(&refresh).await;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(
        renewed
            .json()
            .as_object()
            .expect("body")
            .keys()
            .collect::<Vec<_>>(),
        ["access"]
    );
    assert_eq!(
        extra(&renewed.token("access")),
        json!({"groups": ["billing"], "is_staff": false})
    );
}

/// Default: simplejwt's exact claims, nothing read per login.
async fn no_extra_claims_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, access, refresh) = app.user_with_tokens("carol", "pw12345").await;
    assert_eq!(extra(&access), json!({}));
    let rotated = app.refresh(&refresh).await;
    assert_eq!(extra(&rotated.token("access")), json!({}));
}

/// Claims too large for a header are refused with the fixed 500 body (the
/// cause, with the user and the size, goes to the log), never issued.
async fn oversized_claims_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, &[("TOKEND__JWT__EXTRA_CLAIMS", "groups")]).await;
    assert_eq!(app.register("dave", "pw12345").await.status, 201);
    let id = app.login("dave", "pw12345").await.json();
    assert!(id.get("access").is_some());
    app.db
        .run(|conn| {
            for n in 0..40 {
                let name = format!("{n:03}-{}", "g".repeat(140));
                tokend::storage::groups::create(conn, &name)?;
                tokend::storage::groups::add_member(conn, 1, &name)?;
            }
            Ok(())
        })
        .await
        .expect("groups");
    app.login("dave", "pw12345")
        .await
        .assert(500, r#"{"detail":"A server error occurred."}"#);
}

both_backends!(
    oversized_claims_are_refused,
    extra_claims_follow_groups_and_flags,
    extra_claims_without_rotation,
    no_extra_claims_by_default,
);

/// Unknown names, repeats and a clash with the user id claim stop the
/// server at start-up with a clear message.
#[test]
fn bad_extra_claims_are_refused_at_start_up() {
    for (env, message) in [
        (
            vec![("TOKEND__JWT__EXTRA_CLAIMS", "username,password")],
            "jwt.extra_claims: `password` is not one of username, email, is_staff, is_superuser, groups",
        ),
        (
            vec![("TOKEND__JWT__EXTRA_CLAIMS", "groups, groups")],
            "jwt.extra_claims: `groups` is listed twice",
        ),
        (
            vec![
                ("TOKEND__JWT__EXTRA_CLAIMS", "email"),
                ("TOKEND__JWT__USER_ID_CLAIM", "email"),
            ],
            "jwt.extra_claims: `email` is the user id claim",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("check-config")
            .env("TOKEND_CONFIG_DIR", "/nonexistent")
            .envs(env.iter().copied())
            .output()
            .expect("run tokend");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(message),
            "{env:?}: {stderr}"
        );
    }
}

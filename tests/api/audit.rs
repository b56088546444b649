//! The audit trail: the events requests leave, on both backends, read back
//! from the table and through `tokend audit`; the retention purge.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::cli::tokend;
use crate::helpers::{now, spawn_app, Backend, Reply, TestApp};
use tokend::storage::audit::{self, AuditEvent, AuditQuery, NewAuditEvent};

const UA: &str = "audit-test/1.0 (+checks)";

/// Events are written in batches (every 200 ms by default): poll until
/// `count` events named `event` are there, newest first.
pub(crate) async fn events(app: &TestApp, event: &str, count: usize) -> Vec<AuditEvent> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q = AuditQuery {
            event: Some(event.to_owned()),
            limit: 100,
            ..Default::default()
        };
        let found = app
            .db
            .run(move |conn| audit::list(conn, &q))
            .await
            .expect("audit listing")
            .events;
        if found.len() >= count {
            assert_eq!(found.len(), count, "{found:#?}");
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{count} {event} event(s) expected, found {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(app: &TestApp, path: &str, bearer: Option<&str>, body: Value) -> Reply {
    let mut request = app
        .client
        .post(app.url(path))
        .header("User-Agent", UA)
        .json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    app.send(request).await
}

fn request_id(reply: &Reply) -> Option<String> {
    let id = reply.header("x-request-id").map(str::to_owned);
    assert!(id.is_some(), "no X-Request-Id");
    id
}

#[track_caller]
fn assert_origin(e: &AuditEvent, reply: &Reply) {
    assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(e.user_agent.as_deref(), Some(UA));
    assert_eq!(e.request_id, request_id(reply));
    assert!((e.at - now()).abs() <= 5, "{}", e.at);
}

async fn logins_are_on_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, _) = app.user_with_tokens("alice", "right pw").await;
    // Wrong password of an existing user; a user that does not exist.
    let wrong = post(
        &app,
        "/api/token/",
        None,
        json!({"username": "alice", "password": "wrong pw"}),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let failed = events(&app, "login_failed", 1).await;
    let e = &failed[0];
    assert_origin(e, &wrong);
    assert_eq!(
        (e.user_id, e.username.as_deref(), e.detail.as_deref()),
        (
            Some(id),
            Some("alice"),
            Some(r#"{"reason":"bad_credentials"}"#)
        )
    );
    assert_eq!(e.session_id, None);
    let long_name = "m".repeat(400);
    let unknown = post(
        &app,
        "/api/token/",
        None,
        json!({"username": long_name, "password": "secret-guess"}),
    )
    .await;
    assert_eq!(unknown.status, 401);
    let failed = events(&app, "login_failed", 2).await;
    let e = &failed[0];
    assert_origin(e, &unknown);
    assert_eq!(e.user_id, None);
    assert_eq!(e.username.as_deref(), Some("m".repeat(150).as_str()));
    // Never the password, anywhere in the row.
    assert!(!format!("{e:?}").contains("secret-guess"));

    // Inactive: the right password of a disabled account.
    app.set_active(id, false).await;
    let inactive = post(
        &app,
        "/api/token/",
        None,
        json!({"username": "alice", "password": "right pw"}),
    )
    .await;
    assert_eq!(inactive.status, 401);
    let e = &events(&app, "login_failed", 3).await[0];
    assert_origin(e, &inactive);
    assert_eq!(e.detail.as_deref(), Some(r#"{"reason":"inactive"}"#));
    app.set_active(id, true).await;

    let ok = post(
        &app,
        "/api/token/",
        None,
        json!({"username": "alice", "password": "right pw"}),
    )
    .await;
    assert_eq!(ok.status, 200);
    let sid = crate::helpers::claims(&ok.token("refresh"))["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    // user_with_tokens logged in once before.
    let succeeded = events(&app, "login_succeeded", 2).await;
    let e = &succeeded[0];
    assert_origin(e, &ok);
    assert_eq!(
        (e.user_id, e.username.as_deref(), e.session_id.as_deref()),
        (Some(id), Some("alice"), Some(sid.as_str()))
    );
    // The server's signing key, recorded once at startup.
    let key = &events(&app, "key_set_at_startup", 1).await[0];
    let detail: Value = serde_json::from_str(key.detail.as_deref().unwrap()).unwrap();
    assert_eq!(detail["algorithm"], "HS256");

    // tokend audit --json: filtered by user (name or id), event and time.
    let lines = |out: &str| -> Vec<Value> {
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let (ok, out) = tokend(&app, &["audit", "--json", "--user", "alice"], "");
    assert!(ok, "{out}");
    let names: Vec<String> = lines(&out)
        .iter()
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "login_succeeded",
            "login_failed",
            "login_failed",
            "login_succeeded",
            "registered"
        ]
    );
    let (ok, out) = tokend(
        &app,
        &[
            "audit",
            "--json",
            "--user",
            &id.to_string(),
            "--event",
            "login_failed",
        ],
        "",
    );
    assert!(ok, "{out}");
    let rows = lines(&out);
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0]["detail"], r#"{"reason":"inactive"}"#);
    assert_eq!(rows[0]["ip"], "127.0.0.1");
    assert_eq!(rows[0]["user_agent"], UA);
    let future = (now() + 3600).to_string();
    let (ok, out) = tokend(&app, &["audit", "--json", "--since", &future], "");
    assert!(ok && out.trim().is_empty(), "{out}");
    let (ok, out) = tokend(
        &app,
        &[
            "audit",
            "--json",
            "--since",
            "2000-01-01T00:00:00Z",
            "--limit",
            "1",
        ],
        "",
    );
    assert!(ok && lines(&out).len() == 1, "{out}");
    let (ok, out) = tokend(&app, &["audit", "--event", "login_succeeded"], "");
    assert!(
        ok && out.contains("login_succeeded") && out.contains("name=alice"),
        "{out}"
    );
    let (ok, out) = tokend(&app, &["audit", "--event", "logged_in"], "");
    assert!(!ok && out.contains("unknown event `logged_in`"), "{out}");
}

async fn refresh_reuse_and_replays_are_on_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, r1) = app.user_with_tokens("bob", "pw").await;
    let sid = crate::helpers::claims(&r1)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = post(&app, "/api/token/refresh/", None, json!({"refresh": r1})).await;
    assert_eq!(first.status, 200);
    // Again inside the grace window: the same successor.
    let replay = post(&app, "/api/token/refresh/", None, json!({"refresh": r1})).await;
    assert_eq!(replay.status, 200);
    let e = &events(&app, "grace_replay_served", 1).await[0];
    assert_origin(e, &replay);
    assert_eq!(
        (e.user_id, e.session_id.as_deref()),
        (Some(id), Some(sid.as_str()))
    );
    // The successor is spent too: the first token is now plain reuse.
    let r2 = first.token("refresh");
    assert_eq!(
        post(&app, "/api/token/refresh/", None, json!({"refresh": r2}))
            .await
            .status,
        200
    );
    let reuse = post(&app, "/api/token/refresh/", None, json!({"refresh": r1})).await;
    assert_eq!(reuse.status, 401);
    let e = &events(&app, "refresh_reuse_detected", 1).await[0];
    assert_origin(e, &reuse);
    assert_eq!(
        (e.user_id, e.session_id.as_deref()),
        (Some(id), Some(sid.as_str()))
    );
    assert_eq!(e.detail, None);
}

async fn password_changes_and_logouts_are_on_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, _) = app.user_with_tokens("carol", "old pw").await;
    let other_refresh = app.login("carol", "old pw").await.token("refresh");
    let sid = crate::helpers::claims(&access)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let changed = post(
        &app,
        "/api/user/password/",
        Some(&access),
        json!({"old_password": "old pw", "new_password": "a new pw"}),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let e = &events(&app, "password_changed", 1).await[0];
    assert_origin(e, &changed);
    assert_eq!(
        (e.user_id, e.username.as_deref(), e.session_id.as_deref()),
        (Some(id), Some("carol"), Some(sid.as_str()))
    );
    assert_eq!(e.detail.as_deref(), Some(r#"{"sessions_revoked":1}"#));
    assert_eq!(
        post(
            &app,
            "/api/token/refresh/",
            None,
            json!({"refresh": other_refresh})
        )
        .await
        .status,
        401
    );

    let refresh = app.login("carol", "a new pw").await.token("refresh");
    let out = post(
        &app,
        "/api/token/blacklist/",
        None,
        json!({"refresh": refresh}),
    )
    .await;
    assert_eq!(out.status, 200);
    let e = &events(&app, "logout", 1).await[0];
    assert_origin(e, &out);
    assert_eq!(e.user_id, Some(id));
    let everywhere = post(&app, "/api/user/logout-all/", Some(&access), json!({})).await;
    assert_eq!(everywhere.status, 200);
    let e = &events(&app, "logout_all", 1).await[0];
    assert_origin(e, &everywhere);
    assert_eq!(e.user_id, Some(id));

    // RFC 7009 revocation of a refresh token: its session.
    let refresh = app.login("carol", "a new pw").await.token("refresh");
    let sid = crate::helpers::claims(&refresh)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = app
        .send(
            app.client
                .post(app.url("/api/token/revoke/"))
                .header("User-Agent", UA)
                .form(&[("token", refresh.as_str())]),
        )
        .await;
    assert_eq!(revoked.status, 200);
    let e = &events(&app, "session_revoked", 1).await[0];
    assert_origin(e, &revoked);
    assert_eq!(
        (e.user_id, e.session_id.as_deref(), e.detail.as_deref()),
        (
            Some(id),
            Some(sid.as_str()),
            Some(r#"{"reason":"revocation_endpoint"}"#)
        )
    );
}

async fn the_purge_deletes_events_past_their_retention(backend: Backend) {
    let app = spawn_app(backend).await;
    let row = |at: i64, event: &str| NewAuditEvent {
        at,
        event: event.to_owned(),
        user_id: Some(7),
        username: None,
        session_id: None,
        client_id: None,
        ip: None,
        user_agent: None,
        request_id: None,
        detail: None,
    };
    let day = 86_400;
    let rows = vec![
        row(now() - 91 * day, "logout"),
        row(now() - 90 * day - 60, "logout"),
        row(now() - 89 * day, "logout_all"),
        row(now(), "logout_all"),
    ];
    app.db
        .write(move |conn| audit::insert_batch(conn, &tokend::webhooks::Targets::none(), &rows))
        .await
        .unwrap();
    let (ok, out) = tokend(&app, &["purge"], "");
    assert!(ok && out.contains(", 2 audit event(s) removed"), "{out}");
    assert_eq!(events(&app, "logout", 0).await.len(), 0);
    assert_eq!(events(&app, "logout_all", 2).await.len(), 2);
    // A shorter retention, from the environment.
    let mut app = app;
    app.extra
        .push(("TOKEND__AUDIT__RETENTION_DAYS".into(), "30".into()));
    let (ok, out) = tokend(&app, &["purge"], "");
    assert!(ok && out.contains(", 1 audit event(s) removed"), "{out}");
    let left = events(&app, "logout_all", 1).await;
    assert!(left[0].at >= now() - 5);
}

/// Administration from the command line is written with the change itself.
async fn administration_is_on_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ok, out) = tokend(&app, &["clients", "create", "billing", "--scope", "x"], "");
    assert!(ok, "{out}");
    let created: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let (ok, out) = tokend(&app, &["clients", "disable", "billing"], "");
    assert!(ok, "{out}");
    let (ok, out) = tokend(&app, &["users", "create", "dave"], "pw\n");
    assert!(ok, "{out}");
    let (id, _, _) = app.user_with_tokens("erin", "pw").await;
    // Written by the server's batches, so before the command line's rows.
    events(&app, "login_succeeded", 1).await;
    let (ok, out) = tokend(&app, &["users", "disable", "erin"], "");
    assert!(ok, "{out}");
    let (ok, out) = tokend(&app, &["users", "delete", "erin"], "");
    assert!(ok, "{out}");
    let (ok, out) = tokend(&app, &["audit", "--json", "--user", &id.to_string()], "");
    assert!(ok, "{out}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "user_deleted",
            "user_disabled",
            "login_succeeded",
            "registered"
        ]
    );
    assert_eq!(rows[0]["detail"], r#"{"actor":"cli"}"#);
    assert_eq!(rows[1]["detail"], r#"{"sessions_revoked":1,"actor":"cli"}"#);
    // The command line's rows have no origin.
    assert_eq!(rows[1]["ip"], Value::Null);
    let e = &events(&app, "client_created", 1).await[0];
    assert_eq!(e.client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(
        e.detail.as_deref(),
        Some(r#"{"name":"billing","scopes":"x","actor":"cli"}"#)
    );
    let e = &events(&app, "client_disabled", 1).await[0];
    assert_eq!(e.client_id.as_deref(), Some(client_id.as_str()));
    assert_eq!(e.detail.as_deref(), Some(r#"{"actor":"cli"}"#));
    // `users create` from the command line is on record too.
    let e = &events(&app, "admin_action", 1).await[0];
    assert_eq!(
        e.detail.as_deref(),
        Some(
            r#"{"action":"user_created","username":"dave","is_staff":false,"is_superuser":false,"actor":"cli"}"#
        )
    );
}

both_backends!(
    administration_is_on_record,
    logins_are_on_record,
    refresh_reuse_and_replays_are_on_record,
    password_changes_and_logouts_are_on_record,
    the_purge_deletes_events_past_their_retention,
);

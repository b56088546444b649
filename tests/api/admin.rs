//! The admin API (`/api/admin/`): who may call it (staff users, superusers
//! for destructive actions, service tokens with `tokend:admin`), what it
//! does (the same use cases as the command line) and the audit rows it
//! leaves, on both backends.

use serde_json::{json, Value};

use crate::audit::events;
use crate::both_backends;
use crate::clients::{client_token, create as create_client};
use crate::helpers::{now, spawn_app, Backend, Reply, TestApp};
use tokend::storage::users::{self, Flag};

const DENIED: &str = r#"{"detail":"You do not have permission to perform this action."}"#;
const NOT_FOUND: &str = r#"{"detail":"Not found."}"#;
const UA: &str = "admin-test/1.0";

async fn flag(app: &TestApp, id: i64, flag: Flag, value: bool) {
    let set = app
        .db
        .run(move |conn| users::set_flag(conn, id, flag, value))
        .await
        .expect("set flag");
    assert!(set);
}

/// A user with `is_staff` (and `is_superuser` when `superuser`) and an
/// access token: (id, access).
async fn admin_user(app: &TestApp, name: &str, superuser: bool) -> (i64, String) {
    let (id, access, _) = app.user_with_tokens(name, "pw admin").await;
    flag(app, id, Flag::Staff, true).await;
    if superuser {
        flag(app, id, Flag::Superuser, true).await;
    }
    (id, access)
}

async fn call(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let mut request = app
        .client
        .request(method.parse().expect("method"), app.url(path))
        .header("User-Agent", UA)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    app.send(request).await
}

async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    call(app, "GET", path, token, None).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    call(app, "POST", path, token, Some(body)).await
}

async fn delete(app: &TestApp, path: &str, token: &str) -> Reply {
    call(app, "DELETE", path, token, None).await
}

fn detail(e: &tokend::storage::audit::AuditEvent) -> Value {
    serde_json::from_str(e.detail.as_deref().expect("detail")).expect("JSON detail")
}

async fn anonymous_and_non_staff_callers_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (alice, access, _) = app.user_with_tokens("alice", "pw").await;
    for path in [
        "/api/admin/users/",
        "/api/admin/audit/",
        "/api/admin/clients",
    ] {
        let reply = app.send(app.client.get(app.url(path))).await;
        reply.assert(
            401,
            r#"{"detail":"Authentication credentials were not provided."}"#,
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="api""#)
        );
        get(&app, path, &access).await.assert(403, DENIED);
    }
    let bad = get(&app, "/api/admin/users/", "not-a-token").await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    // A non-staff user changes nothing.
    post(&app, "/api/admin/users/1/disable/", &access, json!({}))
        .await
        .assert(403, DENIED);
    // Staff rights apply, and end, at once: read from the database.
    flag(&app, alice, Flag::Staff, true).await;
    assert_eq!(get(&app, "/api/admin/users/", &access).await.status, 200);
    flag(&app, alice, Flag::Staff, false).await;
    get(&app, "/api/admin/users/", &access)
        .await
        .assert(403, DENIED);
    // A staff user's token ends with the user's account.
    flag(&app, alice, Flag::Staff, true).await;
    app.set_active(alice, false).await;
    get(&app, "/api/admin/users/", &access).await.assert(
        401,
        r#"{"detail":"User is inactive","code":"user_inactive"}"#,
    );
}

async fn staff_list_search_and_page_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let (staff, token) = admin_user(&app, "admin", false).await;
    for name in ["bob", "Bobby", "carol", "dave"] {
        assert_eq!(app.register(name, "pw").await.status, 201);
    }
    let names = |reply: &Reply| -> Vec<String> {
        reply.json()["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|u| u["username"].as_str().expect("username").to_owned())
            .collect()
    };
    // Five users, two a page: 2, 2, 1, and no cursor after the last.
    let mut pages = Vec::new();
    let mut path = "/api/admin/users/?limit=2".to_owned();
    loop {
        let reply = get(&app, &path, &token).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        pages.push(names(&reply));
        match reply.json()["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/admin/users/?limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages.len() < 5, "{pages:?}");
    }
    assert_eq!(
        pages,
        [vec!["admin", "bob"], vec!["Bobby", "carol"], vec!["dave"]]
    );
    let reply = get(&app, "/api/admin/users/?limit=2&cursor=", &token).await;
    assert_eq!(names(&reply), ["admin", "bob"]);
    // Any case, part of the name; `%` and `_` are plain characters.
    let reply = get(&app, "/api/admin/users/?search=BOB", &token).await;
    assert_eq!(names(&reply), ["bob", "Bobby"]);
    assert_eq!(reply.json()["next_cursor"], Value::Null);
    let reply = get(&app, "/api/admin/users/?search=%25", &token).await;
    assert_eq!(names(&reply), Vec::<String>::new());
    get(&app, "/api/admin/users/?limit=0&cursor=x", &token)
        .await
        .assert(
            400,
            r#"{"limit":["A whole number from 1 to 200 is required."],"cursor":["Invalid cursor."]}"#,
        );
    get(&app, "/api/admin/users/?limit=201", &token)
        .await
        .assert(
            400,
            r#"{"limit":["A whole number from 1 to 200 is required."]}"#,
        );
    // One user; unknown ids and non-ids are not found.
    let reply = get(&app, &format!("/api/admin/users/{staff}/"), &token).await;
    let user = reply.json();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        (
            &user["username"],
            &user["is_staff"],
            &user["is_superuser"],
            &user["groups"]
        ),
        (&json!("admin"), &json!(true), &json!(false), &json!([]))
    );
    get(&app, "/api/admin/users/999999/", &token)
        .await
        .assert(404, NOT_FOUND);
    get(&app, "/api/admin/users/abc", &token)
        .await
        .assert(404, NOT_FOUND);
}

async fn staff_create_and_disable_superusers_delete_and_set_passwords(backend: Backend) {
    let app = spawn_app(backend).await;
    let (staff, token) = admin_user(&app, "staff", false).await;
    let (root, root_token) = admin_user(&app, "root", true).await;

    let created = post(
        &app,
        "/api/admin/users/",
        &token,
        json!({"username": "erin", "password": "erin pw 1", "email": "Erin@Example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let mut body = created.json();
    let id = body["id"].as_i64().expect("id");
    let joined = body["date_joined"]
        .as_str()
        .expect("date_joined")
        .to_owned();
    assert!(joined.ends_with('Z') && joined.len() == 20, "{joined}");
    body["date_joined"] = json!("T");
    assert_eq!(
        body,
        json!({"id": id, "username": "erin", "email": "Erin@example.com", "first_name": "",
            "last_name": "", "is_active": true, "is_staff": false, "is_superuser": false,
            "date_joined": "T", "last_login": null, "email_verified": false, "groups": []})
    );
    let e = &events(&app, "admin_action", 1).await[0];
    assert_eq!(e.user_id, Some(id));
    assert_eq!(
        detail(e),
        json!({"action": "user_created", "username": "erin", "is_staff": false,
            "is_superuser": false, "actor": format!("user:{staff}")})
    );
    assert_eq!(
        (e.ip.as_deref(), e.user_agent.as_deref()),
        (Some("127.0.0.1"), Some(UA))
    );
    assert_eq!(e.request_id.as_deref(), created.header("x-request-id"));
    // Registration's checks.
    post(
        &app,
        "/api/admin/users/",
        &token,
        json!({"username": "erin", "password": "x", "email": "erin@example.com"}),
    )
    .await
    .assert(
        400,
        r#"{"username":["A user with that username already exists."],"email":["A user is already registered with this e-mail address."]}"#,
    );
    // Granting staff rights is a superuser's.
    post(
        &app,
        "/api/admin/users/",
        &token,
        json!({"username": "fred", "password": "pw", "is_staff": true}),
    )
    .await
    .assert(403, DENIED);
    let reply = post(
        &app,
        "/api/admin/users/",
        &root_token,
        json!({"username": "fred", "password": "pw", "is_staff": "true"}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json()["is_staff"], true);

    // Disable: the user's refresh token dies with the sessions.
    let pair = app.login("erin", "erin pw 1").await;
    let refresh = pair.token("refresh");
    let reply = post(
        &app,
        &format!("/api/admin/users/{id}/disable/"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["is_active"], false);
    assert_eq!(app.refresh(&refresh).await.status, 401);
    let e = &events(&app, "user_disabled", 1).await[0];
    assert_eq!(e.user_id, Some(id));
    assert_eq!(
        detail(e),
        json!({"sessions_revoked": 1, "actor": format!("user:{staff}")})
    );
    assert_eq!(e.request_id.as_deref(), reply.header("x-request-id"));
    let reply = post(
        &app,
        &format!("/api/admin/users/{id}/enable/"),
        &token,
        json!({}),
    )
    .await;
    assert_eq!(reply.json()["is_active"], true, "{}", reply.body);
    assert_eq!(app.login("erin", "erin pw 1").await.status, 200);

    // Staff may not delete, set passwords, or touch a superuser.
    delete(&app, &format!("/api/admin/users/{id}/"), &token)
        .await
        .assert(403, DENIED);
    post(
        &app,
        &format!("/api/admin/users/{id}/password/"),
        &token,
        json!({"password": "new erin pw"}),
    )
    .await
    .assert(403, DENIED);
    post(
        &app,
        &format!("/api/admin/users/{root}/disable/"),
        &token,
        json!({}),
    )
    .await
    .assert(403, DENIED);

    // A superuser may.
    let refresh = app.login("erin", "erin pw 1").await.token("refresh");
    post(
        &app,
        &format!("/api/admin/users/{id}/password/"),
        &root_token,
        json!({"password": ""}),
    )
    .await
    .assert(400, r#"{"password":["This field may not be blank."]}"#);
    post(
        &app,
        &format!("/api/admin/users/{id}/password/"),
        &root_token,
        json!({"password": "new erin pw"}),
    )
    .await
    .assert(200, "{}");
    assert_eq!(app.refresh(&refresh).await.status, 401);
    assert_eq!(app.login("erin", "erin pw 1").await.status, 401);
    assert_eq!(app.login("erin", "new erin pw").await.status, 200);
    let rows = events(&app, "admin_action", 4).await;
    assert_eq!(
        detail(&rows[0]),
        json!({"action": "password_set", "sessions_revoked": 2, "actor": format!("user:{root}")})
    );
    // Flags: a superuser's too; a granted right applies at once.
    post(
        &app,
        &format!("/api/admin/users/{id}/flags/"),
        &token,
        json!({"is_staff": true}),
    )
    .await
    .assert(403, DENIED);
    post(
        &app,
        &format!("/api/admin/users/{id}/flags/"),
        &root_token,
        json!({"is_staff": "maybe"}),
    )
    .await
    .assert(400, r#"{"is_staff":["Must be a valid boolean."]}"#);
    let reply = post(
        &app,
        &format!("/api/admin/users/{id}/flags/"),
        &root_token,
        json!({"is_staff": true}),
    )
    .await;
    assert_eq!(
        (
            reply.json()["is_staff"].clone(),
            reply.json()["is_superuser"].clone()
        ),
        (json!(true), json!(false)),
        "{}",
        reply.body
    );
    let erin = app.login("erin", "new erin pw").await.token("access");
    assert_eq!(get(&app, "/api/admin/users/", &erin).await.status, 200);
    let e = &events(&app, "admin_action", 5).await[0];
    assert_eq!(
        detail(e),
        json!({"action": "flag_set", "is_staff": true, "actor": format!("user:{root}")})
    );
    delete(&app, &format!("/api/admin/users/{id}/"), &root_token)
        .await
        .assert(200, "{}");
    get(&app, &format!("/api/admin/users/{id}/"), &token)
        .await
        .assert(404, NOT_FOUND);
    delete(&app, &format!("/api/admin/users/{id}/"), &root_token)
        .await
        .assert(404, NOT_FOUND);
    let e = &events(&app, "user_deleted", 1).await[0];
    assert_eq!(
        (e.user_id, detail(e)),
        (Some(id), json!({"actor": format!("user:{root}")}))
    );
}

async fn service_tokens_need_the_admin_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ops_id, ops_secret) = create_client(&app, &["ops", "--scope", "tokend:admin"]);
    let (other_id, other_secret) = create_client(&app, &["billing", "--scope", "orders:read"]);
    let ops = client_token(&app, &ops_id, &ops_secret).await;
    let other = client_token(&app, &other_id, &other_secret).await;
    assert_eq!(app.register("alice", "pw").await.status, 201);
    let reply = get(&app, "/api/admin/users/", &ops).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["results"][0]["username"], "alice");
    get(&app, "/api/admin/users/", &other)
        .await
        .assert(403, DENIED);

    // A client made through the API: its secret is shown once and works.
    let reply = post(
        &app,
        "/api/admin/clients/",
        &ops,
        json!({"name": "reports", "scopes": ["reports:read"], "ttl_secs": 600}),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let made = reply.json();
    let (id, secret) = (
        made["client_id"].as_str().expect("id").to_owned(),
        made["client_secret"].as_str().expect("secret").to_owned(),
    );
    client_token(&app, &id, &secret).await;
    let e = &events(&app, "client_created", 3).await[0];
    assert_eq!(e.client_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        detail(e),
        json!({"name": "reports", "scopes": "reports:read", "actor": format!("client:{ops_id}")})
    );
    // Listed and read without any secret.
    let reply = get(&app, &format!("/api/admin/clients/{id}/"), &ops).await;
    let mut body = reply.json();
    body["created"] = json!("T");
    assert_eq!(
        body,
        json!({"client_id": id, "name": "reports", "scopes": ["reports:read"], "audience": null,
            "ttl_secs": 600, "private_key_jwt": false, "disabled": false, "created": "T"})
    );
    let listed = get(&app, "/api/admin/clients/", &ops).await;
    assert!(!listed.body.contains(&secret) && !listed.body.contains("digest"));
    assert_eq!(listed.json().as_array().map(Vec::len), Some(3));
    post(
        &app,
        "/api/admin/clients/",
        &ops,
        json!({"name": "reports", "scopes": "x"}),
    )
    .await
    .assert(
        400,
        r#"{"name":["A client with that name already exists."]}"#,
    );
    post(
        &app,
        "/api/admin/clients/",
        &ops,
        json!({"name": "x", "scopes": []}),
    )
    .await
    .assert(400, r#"{"scopes":["give the client at least one scope"]}"#);

    // Client writes are a superuser's: a staff user may only read.
    let (_, staff) = admin_user(&app, "staff", false).await;
    assert_eq!(get(&app, "/api/admin/clients/", &staff).await.status, 200);
    post(
        &app,
        &format!("/api/admin/clients/{id}/disable/"),
        &staff,
        json!({}),
    )
    .await
    .assert(403, DENIED);
    let reply = post(
        &app,
        &format!("/api/admin/clients/{id}/rotate-secret/"),
        &ops,
        json!({}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rotated = reply.json()["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    client_token(&app, &id, &rotated).await;
    let reply = post(
        &app,
        &format!("/api/admin/clients/{id}/disable/"),
        &ops,
        json!({}),
    )
    .await;
    assert_eq!(reply.json()["disabled"], true, "{}", reply.body);
    delete(&app, &format!("/api/admin/clients/{id}/"), &ops)
        .await
        .assert(200, "{}");
    get(&app, &format!("/api/admin/clients/{id}/"), &ops)
        .await
        .assert(404, NOT_FOUND);
    // A disabled admin client loses its rights at once.
    let (ok, out) = crate::cli::tokend(&app, &["clients", "disable", "ops"], "");
    assert!(ok, "{out}");
    assert_eq!(get(&app, "/api/admin/users/", &ops).await.status, 401);
}

async fn admins_list_and_end_a_users_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let (staff, token) = admin_user(&app, "staff", false).await;
    let (alice, _, first) = app.user_with_tokens("alice", "pw").await;
    let second = app.login("alice", "pw").await.token("refresh");
    let reply = get(&app, &format!("/api/admin/users/{alice}/sessions/"), &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let listed = reply.json();
    let listed = listed.as_array().expect("sessions");
    assert_eq!(listed.len(), 2);
    let keys: Vec<&String> = listed[0].as_object().expect("session").keys().collect();
    assert_eq!(
        keys,
        ["id", "created", "last_used", "expires", "user_agent", "ip"]
    );
    let sid = tokend_sid(&second);
    let mut ids: Vec<&Value> = listed.iter().map(|s| &s["id"]).collect();
    ids.sort_by_key(|id| id.as_str());
    let mut expected = [json!(tokend_sid(&first)), json!(sid)];
    expected.sort_by_key(|id| id.as_str().map(str::to_owned));
    assert_eq!(ids, expected.iter().collect::<Vec<_>>());
    delete(
        &app,
        &format!("/api/admin/users/{alice}/sessions/{sid}/"),
        &token,
    )
    .await
    .assert(200, "{}");
    assert_eq!(app.refresh(&second).await.status, 401);
    delete(
        &app,
        &format!("/api/admin/users/{alice}/sessions/{sid}/"),
        &token,
    )
    .await
    .assert(404, NOT_FOUND);
    // Another user's session is not found under this one.
    delete(
        &app,
        &format!("/api/admin/users/{staff}/sessions/{}/", tokend_sid(&first)),
        &token,
    )
    .await
    .assert(404, NOT_FOUND);
    let first = app.refresh(&first).await;
    assert_eq!(first.status, 200, "{}", first.body);
    post(
        &app,
        &format!("/api/admin/users/{alice}/sessions/revoke-all/"),
        &token,
        json!({}),
    )
    .await
    .assert(200, r#"{"revoked":1}"#);
    assert_eq!(app.refresh(&first.token("refresh")).await.status, 401);
    let rows = events(&app, "session_revoked", 2).await;
    for e in &rows {
        assert_eq!(e.user_id, Some(alice));
        assert_eq!(
            detail(e),
            json!({"reason": "admin", "actor": format!("user:{staff}")})
        );
    }
    assert_eq!(rows[1].session_id.as_deref(), Some(sid.as_str()));
    get(&app, "/api/admin/users/999999/sessions/", &token)
        .await
        .assert(404, NOT_FOUND);
}

/// The session id of a token.
fn tokend_sid(token: &str) -> String {
    crate::helpers::claims(token)["sid"]
        .as_str()
        .expect("sid")
        .to_owned()
}

async fn groups_are_administered(backend: Backend) {
    let app = spawn_app(backend).await;
    let (staff, staff_token) = admin_user(&app, "staff", false).await;
    // Groups become claims downstream roles are granted by: staff may read
    // them, only a superuser hands them out (to others or to themself).
    post(
        &app,
        "/api/admin/groups/",
        &staff_token,
        json!({"name": "support"}),
    )
    .await
    .assert(403, DENIED);
    let (root, token) = admin_user(&app, "root", true).await;
    let reply = post(
        &app,
        "/api/admin/groups/",
        &token,
        json!({"name": "support"}),
    )
    .await;
    reply.assert(201, r#"{"name":"support","members":0}"#);
    post(
        &app,
        "/api/admin/groups/",
        &token,
        json!({"name": "support"}),
    )
    .await
    .assert(
        400,
        r#"{"name":["A group with that name already exists."]}"#,
    );
    let reply = post(
        &app,
        &format!("/api/admin/users/{staff}/groups/"),
        &token,
        json!({"group": "support"}),
    )
    .await;
    assert_eq!(reply.json()["groups"], json!(["support"]), "{}", reply.body);
    post(
        &app,
        &format!("/api/admin/users/{staff}/groups/"),
        &token,
        json!({"group": "nope"}),
    )
    .await
    .assert(400, r#"{"group":["No group with that name."]}"#);
    post(
        &app,
        &format!("/api/admin/users/{staff}/groups/"),
        &staff_token,
        json!({"group": "support"}),
    )
    .await
    .assert(403, DENIED);
    delete(&app, "/api/admin/groups/support/", &staff_token)
        .await
        .assert(403, DENIED);
    get(&app, "/api/admin/groups/", &token)
        .await
        .assert(200, r#"[{"name":"support","members":1}]"#);
    delete(
        &app,
        &format!("/api/admin/users/{staff}/groups/support/"),
        &token,
    )
    .await
    .assert(200, "{}");
    delete(
        &app,
        &format!("/api/admin/users/{staff}/groups/support/"),
        &token,
    )
    .await
    .assert(404, NOT_FOUND);
    delete(&app, "/api/admin/groups/support/", &token)
        .await
        .assert(200, "{}");
    delete(&app, "/api/admin/groups/support/", &token)
        .await
        .assert(404, NOT_FOUND);
    let actions: Vec<Value> = events(&app, "admin_action", 4)
        .await
        .iter()
        .map(detail)
        .collect();
    let actor = format!("user:{root}");
    assert_eq!(
        actions,
        [
            json!({"action": "group_deleted", "group": "support", "actor": actor}),
            json!({"action": "group_removed", "group": "support", "actor": actor}),
            json!({"action": "group_added", "group": "support", "actor": actor}),
            json!({"action": "group_created", "group": "support", "actor": actor}),
        ]
    );
}

async fn the_audit_trail_is_queried_with_filters_and_a_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, token) = admin_user(&app, "staff", false).await;
    let (alice, _, _) = app.user_with_tokens("alice", "pw").await;
    for _ in 0..3 {
        assert_eq!(app.login("alice", "wrong").await.status, 401);
    }
    events(&app, "login_failed", 3).await;
    events(&app, "login_succeeded", 2).await;
    // Three failures, two a page, newest first.
    let reply = get(&app, "/api/admin/audit/?event=login_failed&limit=2", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let page = reply.json();
    let results = page["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    let first = &results[0];
    assert_eq!(
        (
            &first["event"],
            &first["user_id"],
            &first["username"],
            &first["detail"]
        ),
        (
            &json!("login_failed"),
            &json!(alice),
            &json!("alice"),
            &json!({"reason": "bad_credentials"})
        )
    );
    assert!(first["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let ids: Vec<i64> = results
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids[0] > ids[1]);
    let reply = get(
        &app,
        &format!("/api/admin/audit/?event=login_failed&limit=2&cursor={cursor}"),
        &token,
    )
    .await;
    let page = reply.json();
    assert_eq!(page["results"].as_array().map(Vec::len), Some(1));
    assert!(page["results"][0]["id"].as_i64() < Some(ids[1]));
    assert_eq!(page["next_cursor"], Value::Null);
    // By user (a name or an id), and since.
    let reply = get(
        &app,
        "/api/admin/audit/?user=alice&event=login_succeeded",
        &token,
    )
    .await;
    assert_eq!(reply.json()["results"].as_array().map(Vec::len), Some(1));
    let reply = get(&app, &format!("/api/admin/audit/?user={alice}"), &token).await;
    assert_eq!(reply.json()["results"].as_array().map(Vec::len), Some(5));
    let later = now() + 3600;
    let reply = get(&app, &format!("/api/admin/audit/?since={later}"), &token).await;
    reply.assert(200, r#"{"results":[],"next_cursor":null}"#);
    let reply = get(
        &app,
        "/api/admin/audit/?since=2000-01-01T00:00:00Z&user=alice",
        &token,
    )
    .await;
    assert_eq!(reply.json()["results"].as_array().map(Vec::len), Some(5));
    let reply = get(&app, "/api/admin/audit/?event=nope&since=yesterday", &token).await;
    assert_eq!(reply.status, 400);
    let errors = reply.json();
    assert!(
        errors["event"][0]
            .as_str()
            .is_some_and(|m| m.starts_with("unknown event `nope`; one of: login_succeeded")),
        "{errors}"
    );
    assert_eq!(
        errors["since"],
        json!(["`yesterday` is neither a unix timestamp nor an RFC 3339 time"])
    );
}

both_backends!(
    anonymous_and_non_staff_callers_are_refused,
    staff_list_search_and_page_users,
    staff_create_and_disable_superusers_delete_and_set_passwords,
    service_tokens_need_the_admin_scope,
    admins_list_and_end_a_users_sessions,
    groups_are_administered,
    the_audit_trail_is_queried_with_filters_and_a_cursor,
);

/// Tokens the admin API must not honour, however well signed: with an
/// HS256 key every service that checks tokens can sign any claims, and a
/// token issued for another service is that service's.
mod forged {
    use super::*;
    use crate::helpers::{now, sign};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_service_token_signed_by_another_key_holder_opens_nothing() {
        let app = spawn_app(Backend::Sqlite).await;
        let (ops_id, _secret) = create_client(&app, &["ops", "--scope", "tokend:admin"]);
        let iat = now();
        let forged = sign(
            &json!({"token_type": "access", "exp": iat + 300, "iat": iat,
            "jti": "forged-by-downstream", "client_id": ops_id, "scope": "tokend:admin"}),
        );
        let reply = post(
            &app,
            "/api/admin/users/",
            &forged,
            json!({"username": "mallory",
            "password": "a long passphrase 42", "is_superuser": true, "is_staff": true}),
        )
        .await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_superusers_token_re_signed_with_a_later_expiry_opens_nothing() {
        let app = spawn_app(Backend::Sqlite).await;
        let (_root, access) = admin_user(&app, "root", true).await;
        get(&app, "/api/admin/clients/", &access)
            .await
            .assert(200, "[]");
        let mut claims = crate::helpers::claims(&access);
        claims["exp"] = json!(now() + 30 * 86_400);
        let reply = get(&app, "/api/admin/clients/", &sign(&claims)).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        claims["jti"] = json!("minted-downstream");
        let reply = get(&app, "/api/admin/clients/", &sign(&claims)).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admin_clients_token_for_another_audience_is_refused() {
        let app = spawn_app(Backend::Sqlite).await;
        let (id, secret) = create_client(
            &app,
            &[
                "ops",
                "--scope",
                "tokend:admin",
                "--scope",
                "orders:read",
                "--audience",
                "orders-api",
            ],
        );
        let token = client_token(&app, &id, &secret).await;
        assert_eq!(crate::helpers::claims(&token)["aud"], "orders-api");
        get(&app, "/api/admin/users/", &token)
            .await
            .assert(403, DENIED);
    }
}

//! "Your devices": GET /api/user/sessions/, DELETE /api/user/sessions/{id}/,
//! POST /api/user/sessions/revoke-others/.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{claims, now, sign, spawn_app, Backend, Reply, TestApp};

const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const NOT_FOUND: &str = r#"{"detail":"Not found."}"#;
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const PHONE: &str = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/131.0 Mobile";
/// tokend's default `jwt.session_max_age_secs`.
const SESSION_MAX_AGE: i64 = 30 * 86_400;

/// (access, refresh) of a new login, sending `user_agent` if any.
async fn login_from(app: &TestApp, user: &str, user_agent: Option<&str>) -> (String, String) {
    let mut request = app
        .client
        .post(app.url("/api/token/"))
        .json(&json!({"username": user, "password": "pw12345"}));
    if let Some(ua) = user_agent {
        request = request.header("User-Agent", ua);
    }
    let reply = app.send(request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    (reply.token("access"), reply.token("refresh"))
}

async fn register(app: &TestApp, user: &str) {
    let reply = app.register(user, "pw12345").await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

fn sid(token: &str) -> String {
    claims(token)["sid"].as_str().expect("sid").to_owned()
}

async fn list(app: &TestApp, access: &str) -> Reply {
    app.send(
        app.client
            .get(app.url("/api/user/sessions/"))
            .header("Authorization", format!("Bearer {access}")),
    )
    .await
}

/// The listed sessions, asserting a 200.
async fn devices(app: &TestApp, access: &str) -> Vec<Value> {
    let reply = list(app, access).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json().as_array().expect("array").clone()
}

fn ids(devices: &[Value]) -> Vec<&str> {
    devices
        .iter()
        .map(|d| d["id"].as_str().expect("id"))
        .collect()
}

async fn delete(app: &TestApp, access: &str, id: &str) -> Reply {
    app.send(
        app.client
            .delete(app.url(&format!("/api/user/sessions/{id}/")))
            .header("Authorization", format!("Bearer {access}")),
    )
    .await
}

async fn revoke_others(app: &TestApp, access: &str) -> Reply {
    app.post_bearer("/api/user/sessions/revoke-others/", access, json!({}))
        .await
}

/// `YYYY-MM-DDTHH:MM:SSZ` as unix seconds, counted day by day (not the
/// server's arithmetic); panics on anything else.
fn parse_utc(text: &str) -> i64 {
    let re = regex::Regex::new(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$").expect("regex");
    let c = re
        .captures(text)
        .unwrap_or_else(|| panic!("not RFC 3339 UTC: {text}"));
    let n = |i: usize| c[i].parse::<i64>().expect("digits");
    let (year, month, day) = (n(1), n(2), n(3));
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0;
    for y in 1970..year {
        days += if leap(y) { 366 } else { 365 };
    }
    let lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    for (m, length) in lengths.iter().enumerate().take((month - 1) as usize) {
        days += length + i64::from(m == 1 && leap(year));
    }
    days += day - 1;
    days * 86_400 + n(4) * 3_600 + n(5) * 60 + n(6)
}

/// Sets columns of session `sid` directly (unix seconds).
async fn set_session_times(
    app: &TestApp,
    sid: &str,
    created_at: Option<i64>,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
) {
    use diesel::prelude::*;
    use tokend::storage::schema::sessions;
    let sid = sid.to_owned();
    app.db
        .run(move |conn| {
            let target = sessions::table.filter(sessions::id.eq(&sid));
            if let Some(t) = created_at {
                diesel::update(target)
                    .set(sessions::created_at.eq(t))
                    .execute(conn)?;
            }
            if let Some(t) = last_used_at {
                diesel::update(target)
                    .set(sessions::last_used_at.eq(Some(t)))
                    .execute(conn)?;
            }
            if let Some(t) = expires_at {
                diesel::update(target)
                    .set(sessions::expires_at.eq(t))
                    .execute(conn)?;
            }
            Ok(())
        })
        .await
        .expect("set session times");
}

async fn two_logins_are_two_devices(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "alice").await;
    register(&app, "bob").await;
    let before = now();
    let (laptop, _) = login_from(&app, "alice", Some(FIREFOX)).await;
    let (phone, _) = login_from(&app, "alice", Some(PHONE)).await;
    let after = now();
    let (bob, _) = login_from(&app, "bob", Some(FIREFOX)).await;
    // Newest first: the laptop's login is made older.
    set_session_times(&app, &sid(&laptop), Some(before - 60), None, None).await;

    let listed = devices(&app, &laptop).await;
    assert_eq!(ids(&listed), [sid(&phone), sid(&laptop)], "{listed:?}");
    let (p, l) = (&listed[0], &listed[1]);
    for d in &listed {
        let mut keys: Vec<&str> = d
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created",
                "current",
                "expires",
                "id",
                "ip",
                "last_used",
                "user_agent"
            ]
        );
        assert_eq!(d["ip"], "127.0.0.1");
    }
    assert_eq!(
        (&p["user_agent"], &l["user_agent"]),
        (&json!(PHONE), &json!(FIREFOX))
    );
    assert_eq!(
        (&p["current"], &l["current"]),
        (&json!(false), &json!(true))
    );
    let created = parse_utc(p["created"].as_str().expect("created"));
    assert!(
        (before..=after).contains(&created),
        "{before} <= {created} <= {after}"
    );
    assert_eq!(p["last_used"], p["created"], "a login is a use");
    assert_eq!(
        parse_utc(p["expires"].as_str().expect("expires")),
        created + SESSION_MAX_AGE
    );
    assert_eq!(
        parse_utc(l["created"].as_str().expect("created")),
        before - 60
    );

    // Asked with the other token, the other one is current.
    let listed = devices(&app, &phone).await;
    assert_eq!(ids(&listed), [sid(&phone), sid(&laptop)]);
    assert_eq!(
        (&listed[0]["current"], &listed[1]["current"]),
        (&json!(true), &json!(false))
    );

    // Bob sees his own only.
    let listed = devices(&app, &bob).await;
    assert_eq!(ids(&listed), [sid(&bob)]);
    assert_eq!(listed[0]["current"], true);

    // No User-Agent: null. Ended and revoked sessions are not listed.
    let (bare, bare_refresh) = login_from(&app, "alice", None).await;
    let listed = devices(&app, &laptop).await;
    assert_eq!(listed.len(), 3);
    let d = listed
        .iter()
        .find(|d| d["id"] == sid(&bare).as_str())
        .expect("listed");
    assert_eq!(d["user_agent"], Value::Null);
    app.blacklist(&bare_refresh).await.assert(200, "{}");
    set_session_times(&app, &sid(&phone), None, None, Some(now() - 1)).await;
    assert_eq!(ids(&devices(&app, &laptop).await), [sid(&laptop)]);
}

async fn revoking_a_device_ends_it_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "alice").await;
    register(&app, "bob").await;
    let (laptop, laptop_refresh) = login_from(&app, "alice", Some(FIREFOX)).await;
    let (phone, phone_refresh) = login_from(&app, "alice", Some(PHONE)).await;
    let (bob, _) = login_from(&app, "bob", None).await;
    // The phone's session is live in this process's cache.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {phone}"))).await.status,
        200
    );
    app.verify(&phone).await.assert(200, "{}");

    // Bob cannot end (or see) Alice's session: as unknown as a made-up id.
    delete(&app, &bob, &sid(&phone))
        .await
        .assert(404, NOT_FOUND);
    delete(&app, &laptop, "0123456789abcdef0123456789abcdef")
        .await
        .assert(404, NOT_FOUND);
    assert_eq!(
        app.get_me(Some(&format!("Bearer {phone}"))).await.status,
        200
    );

    delete(&app, &laptop, &sid(&phone)).await.assert(200, "{}");
    // At once, cache or not: its access and refresh tokens are refused.
    app.get_me(Some(&format!("Bearer {phone}")))
        .await
        .assert(401, &me_blacklisted());
    app.verify(&phone).await.assert(401, BLACKLISTED);
    app.refresh(&phone_refresh).await.assert(401, BLACKLISTED);
    list(&app, &phone).await.assert(401, &me_blacklisted());
    // Gone from the list; ending it again: not found.
    assert_eq!(ids(&devices(&app, &laptop).await), [sid(&laptop)]);
    delete(&app, &laptop, &sid(&phone))
        .await
        .assert(404, NOT_FOUND);
    // Bob's session and the laptop's are untouched.
    assert_eq!(ids(&devices(&app, &bob).await), [sid(&bob)]);
    let rotated = app.refresh(&laptop_refresh).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let laptop = rotated.token("access");

    // One's own current session, without the trailing slash.
    let reply = app
        .send(
            app.client
                .delete(app.url(&format!("/api/user/sessions/{}", sid(&laptop))))
                .header("Authorization", format!("Bearer {laptop}")),
        )
        .await;
    reply.assert(200, "{}");
    app.get_me(Some(&format!("Bearer {laptop}")))
        .await
        .assert(401, &me_blacklisted());
    app.refresh(&rotated.token("refresh"))
        .await
        .assert(401, BLACKLISTED);
    assert_eq!(app.live_tokens_in_revoked_sessions().await, 0);
}

/// simplejwt's Bearer answer for a blacklisted access token.
fn me_blacklisted() -> String {
    json!({
        "detail": "Given token not valid for any token type",
        "code": "token_not_valid",
        "messages": [{
            "token_class": "AccessToken",
            "token_type": "access",
            "message": "Token is blacklisted",
        }],
    })
    .to_string()
}

async fn revoke_others_keeps_the_current_session(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "alice").await;
    register(&app, "bob").await;
    let (laptop, laptop_refresh) = login_from(&app, "alice", Some(FIREFOX)).await;
    let (phone, phone_refresh) = login_from(&app, "alice", Some(PHONE)).await;
    let (tablet, tablet_refresh) = login_from(&app, "alice", None).await;
    let (bob, bob_refresh) = login_from(&app, "bob", None).await;
    // An ended session is not counted.
    let (old, _) = login_from(&app, "alice", None).await;
    set_session_times(&app, &sid(&old), None, None, Some(now() - 1)).await;
    for token in [&phone, &tablet, &bob] {
        assert_eq!(
            app.get_me(Some(&format!("Bearer {token}"))).await.status,
            200
        );
    }

    revoke_others(&app, &laptop)
        .await
        .assert(200, r#"{"revoked":2}"#);
    for (access, refresh) in [(&phone, &phone_refresh), (&tablet, &tablet_refresh)] {
        app.get_me(Some(&format!("Bearer {access}")))
            .await
            .assert(401, &me_blacklisted());
        app.refresh(refresh).await.assert(401, BLACKLISTED);
    }
    let listed = devices(&app, &laptop).await;
    assert_eq!(ids(&listed), [sid(&laptop)]);
    assert_eq!(listed[0]["current"], true);
    revoke_others(&app, &laptop)
        .await
        .assert(200, r#"{"revoked":0}"#);
    // The current session and other users' are untouched.
    assert_eq!(app.refresh(&laptop_refresh).await.status, 200);
    assert_eq!(app.get_me(Some(&format!("Bearer {bob}"))).await.status, 200);
    assert_eq!(app.refresh(&bob_refresh).await.status, 200);
    assert_eq!(app.live_tokens_in_revoked_sessions().await, 0);
}

async fn last_used_moves_with_refreshes_only(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "alice").await;
    let (access, refresh) = login_from(&app, "alice", Some(FIREFOX)).await;
    let (other, _) = login_from(&app, "alice", Some(PHONE)).await;
    let long_ago = 1_000_000_000;
    set_session_times(&app, &sid(&access), None, Some(long_ago), None).await;
    set_session_times(&app, &sid(&other), None, Some(long_ago), None).await;
    let last_used = |listed: &[Value], token: &str| -> String {
        let d = listed
            .iter()
            .find(|d| d["id"] == sid(token).as_str())
            .expect("listed");
        d["last_used"].as_str().expect("last_used").to_owned()
    };

    // Requests with the access token are not uses.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    app.verify(&access).await.assert(200, "{}");
    let listed = devices(&app, &access).await;
    assert_eq!(last_used(&listed, &access), "2001-09-09T01:46:40Z");

    let before = now();
    let rotated = app.refresh(&refresh).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let after = now();
    let listed = devices(&app, &rotated.token("access")).await;
    let used = parse_utc(&last_used(&listed, &access));
    assert!(
        (before..=after).contains(&used),
        "{before} <= {used} <= {after}"
    );
    // Only that session's.
    assert_eq!(last_used(&listed, &other), "2001-09-09T01:46:40Z");

    // A refused refresh changes nothing: a refresh token of a revoked
    // session.
    set_session_times(&app, &sid(&access), None, Some(long_ago), None).await;
    let refresh = rotated.token("refresh");
    delete(&app, &other, &sid(&access)).await.assert(200, "{}");
    app.refresh(&refresh).await.assert(401, BLACKLISTED);
    let stored = {
        use diesel::prelude::*;
        use tokend::storage::schema::sessions;
        let id = sid(&access);
        app.db
            .run(move |conn| {
                Ok(sessions::table
                    .filter(sessions::id.eq(id))
                    .select(sessions::last_used_at)
                    .first::<Option<i64>>(conn)?)
            })
            .await
            .expect("read last_used_at")
    };
    assert_eq!(stored, Some(long_ago));
}

/// A service token of a new OAuth client (client credentials grant).
async fn service_token(app: &TestApp) -> String {
    let (ok, out) = crate::cli::tokend(
        app,
        &["clients", "create", "billing", "--scope", "orders:read"],
        "",
    );
    assert!(ok, "{out}");
    let client: Value = serde_json::from_str(out.lines().next().expect("line")).expect("JSON");
    let reply = app
        .send(
            app.client
                .post(app.url("/api/oauth/token/"))
                .basic_auth(
                    client["client_id"].as_str().expect("client_id"),
                    client["client_secret"].as_str(),
                )
                .form(&[("grant_type", "client_credentials")]),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Every Bearer refusal is /api/user/me/'s, body and header alike: no or
/// malformed credentials, bad tokens, a refresh token, a service (client)
/// token that names no user, a deleted user.
async fn bearer_errors_are_those_of_me(backend: Backend) {
    let app = spawn_app(backend).await;
    register(&app, "alice").await;
    register(&app, "carol").await;
    let (access, refresh) = login_from(&app, "alice", None).await;
    let (carol, _) = login_from(&app, "carol", None).await;
    let service = service_token(&app).await;
    let t = now();
    let expired = {
        let mut c = claims(&access);
        c["exp"] = json!(t - 100);
        sign(&c)
    };
    let carol_id = claims(&carol)["user_id"]
        .as_str()
        .map(|s| s.parse::<i64>().expect("id"))
        .or_else(|| claims(&carol)["user_id"].as_i64())
        .expect("user_id");
    app.delete_user(carol_id).await;
    // A service token names no user: refused as simplejwt refuses one.
    app.get_me(Some(&format!("Bearer {service}"))).await.assert(
        401,
        r#"{"detail":"Token contained no recognizable user identification","code":"token_not_valid"}"#,
    );
    let headers = vec![
        None,
        Some("Bearer".to_owned()),
        Some("Bearer a b".to_owned()),
        Some("Token abc".to_owned()),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {refresh}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {service}")),
        Some(format!(
            "Bearer {}",
            sign(&json!({
                "token_type": "access", "exp": t + 300, "iat": t, "jti": "no-user-jti",
            }))
        )),
        Some(format!("Bearer {carol}")),
    ];
    for header in headers {
        let me = app.get_me(header.as_deref()).await;
        assert_eq!(me.status, 401, "{header:?}: {}", me.body);
        let with = |request: reqwest::RequestBuilder| match &header {
            Some(h) => request.header("Authorization", h),
            None => request,
        };
        let requests = [
            with(app.client.get(app.url("/api/user/sessions/"))),
            with(
                app.client
                    .delete(app.url(&format!("/api/user/sessions/{}/", sid(&access)))),
            ),
            with(
                app.client
                    .post(app.url("/api/user/sessions/revoke-others/"))
                    .json(&json!({})),
            ),
        ];
        for request in requests {
            let reply = app.send(request).await;
            assert_eq!(
                (reply.status, &reply.body, reply.header("www-authenticate")),
                (me.status, &me.body, me.header("www-authenticate")),
                "{header:?}"
            );
        }
    }
    // None of that ended Alice's session.
    assert_eq!(ids(&devices(&app, &access).await), [sid(&access)]);
}

both_backends!(
    two_logins_are_two_devices,
    revoking_a_device_ends_it_at_once,
    revoke_others_keeps_the_current_session,
    last_used_moves_with_refreshes_only,
    bearer_errors_are_those_of_me,
);

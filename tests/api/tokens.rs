use serde_json::json;

use crate::both_backends;
use crate::helpers::{claims, now, sign, spawn_app, spawn_app_with, Backend};

const BAD_CREDENTIALS: &str = r#"{"detail":"No active account found with the given credentials"}"#;
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;
const INVALID: &str = r#"{"detail":"Token is invalid","code":"token_not_valid"}"#;
const EXPIRED: &str = r#"{"detail":"Token is expired","code":"token_not_valid"}"#;
const WRONG_TYPE: &str = r#"{"detail":"Token has wrong type","code":"token_not_valid"}"#;
const NO_ACCOUNT: &str =
    r#"{"detail":"No active account found for the given token.","code":"no_active_account"}"#;

fn bearer_error(message: &str) -> String {
    format!(
        r#"{{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{{"token_class":"AccessToken","token_type":"access","message":"{message}"}}]}}"#
    )
}

async fn login_issues_a_simplejwt_pair(backend: Backend) {
    let app = spawn_app(backend).await;
    app.register("alice", "pw12345").await;
    let reply = app.login("alice", "pw12345").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let keys: Vec<String> = reply.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["refresh", "access"]);
    let (access, refresh) = (
        claims(&reply.token("access")),
        claims(&reply.token("refresh")),
    );
    for (c, kind, ttl) in [(&access, "access", 1800), (&refresh, "refresh", 86400)] {
        let names: Vec<&String> = c.as_object().unwrap().keys().collect();
        // simplejwt's claims, plus the session id.
        assert_eq!(names, ["token_type", "exp", "iat", "jti", "user_id", "sid"]);
        assert_eq!(c["sid"].as_str().map(str::len), Some(32));
        assert_eq!(c["token_type"], kind);
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), ttl);
        assert!(c["iat"].as_i64().unwrap() <= now());
        assert!(c["user_id"].is_string(), "user_id must be a string: {c}");
        let jti = c["jti"].as_str().unwrap();
        assert!(
            jti.len() == 32 && jti.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')),
            "{jti}"
        );
    }
    assert_ne!(access["jti"], refresh["jti"]);
    assert_eq!(access["sid"], refresh["sid"]);
    let again = app.login("alice", "pw12345").await;
    assert_ne!(
        claims(&again.token("refresh"))["sid"],
        refresh["sid"],
        "each login starts a session"
    );
}

async fn bad_credentials_are_401_with_one_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, _) = app.user_with_tokens("alice", "pw12345").await;
    for (user, password) in [
        ("alice", "wrong"),
        ("nobody", "pw12345"),
        ("ALICE", "pw12345"),
    ] {
        let reply = app.login(user, password).await;
        reply.assert(401, BAD_CREDENTIALS);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="api""#)
        );
    }
    app.post_json("/api/token/", json!({"password": ""})).await.assert(
        400,
        r#"{"username":["This field is required."],"password":["This field may not be blank."]}"#,
    );
    // An inactive user cannot log in, with the same answer.
    app.set_active(id, false).await;
    app.login("alice", "pw12345")
        .await
        .assert(401, BAD_CREDENTIALS);
}

async fn me_returns_the_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw12345").await;
    let me = app.get_me(Some(&format!("Bearer {access}"))).await;
    me.assert(200, &format!(r#"{{"id":{id},"username":"alice"}}"#));
    let no_creds = app.get_me(None).await;
    no_creds.assert(
        401,
        r#"{"detail":"Authentication credentials were not provided."}"#,
    );
    assert_eq!(
        no_creds.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    app.get_me(Some(&format!("Token {access}"))).await.assert(
        401,
        r#"{"detail":"Authentication credentials were not provided."}"#,
    );
    for header in ["Bearer", "Bearer a b"] {
        app.get_me(Some(header)).await.assert(
            401,
            r#"{"detail":"Authorization header must contain two space-delimited values","code":"bad_authorization_header"}"#,
        );
    }
    app.get_me(Some(&format!("Bearer {refresh}")))
        .await
        .assert(401, &bearer_error("Token has wrong type"));
    app.get_me(Some("Bearer garbage"))
        .await
        .assert(401, &bearer_error("Token is invalid"));
    let expired = sign(
        &json!({"token_type":"access","exp":now()-10,"iat":now()-100,"jti":"a".repeat(32),"user_id":id.to_string()}),
    );
    app.get_me(Some(&format!("Bearer {expired}")))
        .await
        .assert(401, &bearer_error("Token is expired"));
    let huge = format!("Bearer {}", "x".repeat(10_000));
    app.get_me(Some(&huge))
        .await
        .assert(401, &bearer_error("Token is invalid"));
    // Deleted from outside this process (as `tokend users delete` does):
    // seen within the cache bound.
    app.delete_user(id).await;
    app.me_becomes(
        &access,
        401,
        r#"{"detail":"User not found","code":"user_not_found"}"#,
    )
    .await;
}

async fn me_rejects_inactive_users(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, _) = app.user_with_tokens("alice", "pw").await;
    // Seen once (and cached) before the change, as in real use.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    app.set_active(id, false).await;
    app.me_becomes(
        &access,
        401,
        r#"{"detail":"User is inactive","code":"user_inactive"}"#,
    )
    .await;
}

async fn refresh_rotates_and_spends(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, r1) = app.user_with_tokens("alice", "pw").await;
    // Access tokens are never refresh tokens.
    let reply = app.refresh(&access).await;
    reply.assert(401, WRONG_TYPE);
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer realm="api""#)
    );
    let rotated = app.refresh(&r1).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let keys: Vec<String> = rotated
        .json()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["access", "refresh"]);
    let (a2, r2) = (rotated.token("access"), rotated.token("refresh"));
    assert_ne!(r1, r2);
    assert_eq!(claims(&r2)["user_id"], id.to_string());
    assert_eq!(
        claims(&r2)["sid"],
        claims(&r1)["sid"],
        "rotation stays in the session"
    );
    // The spent token is refused by verify and blacklist (refresh: see
    // tests/api/sessions.rs for replays and reuse detection).
    app.verify(&r1).await.assert(401, BLACKLISTED);
    app.blacklist(&r1).await.assert(401, BLACKLISTED);
    // The new pair works.
    assert_eq!(app.get_me(Some(&format!("Bearer {a2}"))).await.status, 200);
    assert_eq!(app.refresh(&r2).await.status, 200);
}

async fn refresh_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, refresh) = app.user_with_tokens("alice", "pw").await;
    app.refresh("garbage").await.assert(401, INVALID);
    let expired = sign(
        &json!({"token_type":"refresh","exp":now()-1,"iat":now()-100,"jti":"b".repeat(32),"user_id":id.to_string()}),
    );
    app.refresh(&expired).await.assert(401, EXPIRED);
    // Validly signed, but never issued by this service.
    let foreign = sign(
        &json!({"token_type":"refresh","exp":now()+100,"iat":now(),"jti":"c".repeat(32),"user_id":id.to_string()}),
    );
    app.refresh(&foreign).await.assert(401, INVALID);
    app.post_json("/api/token/refresh/", json!({}))
        .await
        .assert(400, r#"{"refresh":["This field is required."]}"#);
    // A deleted user's token: 401, never a 500.
    app.delete_user(id).await;
    app.refresh(&refresh).await.assert(401, NO_ACCOUNT);
}

async fn refresh_of_an_inactive_user_is_refused_without_spending(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, refresh) = app.user_with_tokens("alice", "pw").await;
    app.set_active(id, false).await;
    app.refresh(&refresh).await.assert(401, NO_ACCOUNT);
    app.set_active(id, true).await;
    assert_eq!(app.refresh(&refresh).await.status, 200);
}

async fn verify_accepts_both_types_and_checks_revocation(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let ok = app.verify(&access).await;
    ok.assert(200, "{}");
    app.verify(&refresh).await.assert(200, "{}");
    app.verify("garbage").await.assert(401, INVALID);
    app.post_json("/api/token/verify/", json!({"token": 123}))
        .await
        .assert(401, INVALID);
    let expired = sign(
        &json!({"token_type":"access","exp":now()-10,"iat":now()-100,"jti":"a".repeat(32),"user_id":id.to_string()}),
    );
    app.verify(&expired).await.assert(401, EXPIRED);
    let no_exp = sign(&json!({"token_type":"access","jti":"a".repeat(32),"user_id":"1"}));
    app.verify(&no_exp).await.assert(
        401,
        r#"{"detail":"Token has no 'exp' claim","code":"token_not_valid"}"#,
    );
    let no_jti = sign(&json!({"token_type":"access","exp":now()+60,"user_id":"1"}));
    app.verify(&no_jti).await.assert(
        401,
        r#"{"detail":"Token has no id","code":"token_not_valid"}"#,
    );
    app.post_json("/api/token/verify/", json!({}))
        .await
        .assert(400, r#"{"token":["This field is required."]}"#);
    app.blacklist(&refresh).await.assert(200, "{}");
    app.verify(&refresh).await.assert(401, BLACKLISTED);
}

async fn blacklist_revokes_a_refresh_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    app.blacklist(&access).await.assert(401, WRONG_TYPE);
    app.blacklist(&refresh).await.assert(200, "{}");
    app.blacklist(&refresh).await.assert(401, BLACKLISTED);
    app.refresh(&refresh).await.assert(401, BLACKLISTED);
    app.post_json("/api/token/blacklist/", json!({}))
        .await
        .assert(400, r#"{"refresh":["This field is required."]}"#);
    // Other sessions of the user are untouched.
    let other = app.login("alice", "pw").await.token("refresh");
    assert_eq!(app.refresh(&other).await.status, 200);
    // A deleted user's token: nothing left to revoke, answered as simplejwt does.
    let last = app.login("alice", "pw").await.token("refresh");
    app.delete_user(id).await;
    app.blacklist(&last).await.assert(200, "{}");
}

async fn tokens_signed_with_another_key_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, _, _) = app.user_with_tokens("alice", "pw").await;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"token_type":"access","exp":now()+600,"iat":now(),"jti":"d".repeat(32),"user_id":id.to_string()}),
        &jsonwebtoken::EncodingKey::from_secret(b"not the key"),
    )
    .unwrap();
    app.verify(&forged).await.assert(401, INVALID);
    app.get_me(Some(&format!("Bearer {forged}")))
        .await
        .assert(401, &bearer_error("Token is invalid"));
}

async fn issuer_and_audience_when_configured(backend: Backend) {
    let app = spawn_app_with(
        backend,
        &[
            ("TOKEND__JWT__ISSUER", "https://auth.example"),
            ("TOKEND__JWT__AUDIENCE", "api"),
        ],
    )
    .await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let c = claims(&access);
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str()),
        (Some("https://auth.example"), Some("api"))
    );
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    assert_eq!(app.refresh(&refresh).await.status, 200);
    // Same key, but no iss/aud: refused.
    let plain = sign(
        &json!({"token_type":"access","exp":now()+60,"iat":now(),"jti":"f".repeat(32),"user_id":id.to_string()}),
    );
    app.verify(&plain).await.assert(401, INVALID);
}

const USER_ID_CLAIM_SUB: (&str, &str) = ("TOKEND__JWT__USER_ID_CLAIM", "sub");

/// `jwt.user_id_claim = "sub"`: tokens carry the id as `sub` (and no
/// `user_id`), in simplejwt's place, and every endpoint reads it there.
async fn user_id_claim_names_the_claim_written_and_read(backend: Backend) {
    let app = spawn_app_with(backend, &[USER_ID_CLAIM_SUB]).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    for token in [&access, &refresh] {
        let c = claims(token);
        let names: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, ["token_type", "exp", "iat", "jti", "sub", "sid"]);
        assert_eq!(c["sub"], id.to_string());
    }
    let me = format!(r#"{{"id":{id},"username":"alice"}}"#);
    app.get_me(Some(&format!("Bearer {access}")))
        .await
        .assert(200, &me);
    app.verify(&access).await.assert(200, "{}");
    app.verify(&refresh).await.assert(200, "{}");
    let rotated = app.refresh(&refresh).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let (a2, r2) = (rotated.token("access"), rotated.token("refresh"));
    assert_eq!(claims(&r2)["sub"], id.to_string());
    assert_eq!(claims(&r2).get("user_id"), None);
    app.get_me(Some(&format!("Bearer {a2}")))
        .await
        .assert(200, &me);
    app.blacklist(&r2).await.assert(200, "{}");
    app.refresh(&r2).await.assert(401, BLACKLISTED);
}

/// With `sub` configured, a token of the same key with the id as `user_id`
/// names no user: each endpoint answers exactly what it answers for a token
/// without any id claim, and nothing is spent or revoked.
async fn a_token_with_the_id_under_another_name_names_no_user(backend: Backend) {
    let app = spawn_app_with(backend, &[USER_ID_CLAIM_SUB]).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let resign = |token: &str, rename: bool| {
        let mut c = claims(token);
        let object = c.as_object_mut().unwrap();
        let value = object.shift_remove("sub").unwrap();
        if rename {
            object.insert("user_id".into(), value);
        }
        sign(&c)
    };
    let (a_other, a_none) = (resign(&access, true), resign(&access, false));
    let (r_other, r_none) = (resign(&refresh, true), resign(&refresh, false));
    let bearer = |t: &str| format!("Bearer {t}");
    let me = app.get_me(Some(&bearer(&a_other))).await;
    me.assert(
        401,
        r#"{"detail":"Token contained no recognizable user identification","code":"token_not_valid"}"#,
    );
    let none = app.get_me(Some(&bearer(&a_none))).await;
    assert_eq!((me.status, me.body), (none.status, none.body));
    for (other, none) in [(&a_other, &a_none), (&r_other, &r_none)] {
        let reply = app.verify(other).await;
        let expected = app.verify(none).await;
        assert_eq!(
            (reply.status, &reply.body),
            (expected.status, &expected.body)
        );
    }
    app.verify(&r_other).await.assert(401, INVALID);
    for path in ["/api/token/refresh/", "/api/token/blacklist/"] {
        let reply = app.post_json(path, json!({ "refresh": r_other })).await;
        let expected = app.post_json(path, json!({ "refresh": r_none })).await;
        assert_eq!(
            (reply.status, &reply.body),
            (expected.status, &expected.body),
            "{path}"
        );
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
    }
    // The genuine pair is untouched.
    app.get_me(Some(&bearer(&access)))
        .await
        .assert(200, &format!(r#"{{"id":{id},"username":"alice"}}"#));
    assert_eq!(app.refresh(&refresh).await.status, 200);
}

/// A fault that is not an outage (here a table gone) is a 500 with DRF's
/// fixed body: the cause (the database's message, table names) goes to the
/// log, never to the client.
async fn internal_errors_answer_one_fixed_body(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.register("alice", "pw").await.status, 201);
    app.db
        .run(|conn| {
            use diesel::connection::SimpleConnection;
            Ok(conn.batch_execute("DROP TABLE refresh_tokens")?)
        })
        .await
        .expect("drop a table");
    app.login("alice", "pw")
        .await
        .assert(500, r#"{"detail":"A server error occurred."}"#);
}

both_backends!(
    user_id_claim_names_the_claim_written_and_read,
    a_token_with_the_id_under_another_name_names_no_user,
    internal_errors_answer_one_fixed_body,
    issuer_and_audience_when_configured,
    login_issues_a_simplejwt_pair,
    bad_credentials_are_401_with_one_body,
    me_returns_the_user,
    me_rejects_inactive_users,
    refresh_rotates_and_spends,
    refresh_errors,
    refresh_of_an_inactive_user_is_refused_without_spending,
    verify_accepts_both_types_and_checks_revocation,
    blacklist_revokes_a_refresh_token,
    tokens_signed_with_another_key_are_refused,
);

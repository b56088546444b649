//! Differential test against a real Django/simplejwt service, the reference
//! app in tests/reference-django (the peer): one scripted sequence of requests
//! goes to the peer and to tokend, and status, content type,
//! `WWW-Authenticate` and body are compared, with token strings masked. Every
//! deliberate difference is listed in `DIFFERENCES` with its reason, and
//! pinned on both sides.
//!
//! The peer is started by its own run.sh, with the virtualenv cached in
//! target/tmp and its database, pidfile and log in a temporary directory.

use crate::helpers::free_port;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use serde_json::{json, Value};

use crate::helpers::{now, python_venv, run, sign, spawn_app, Backend, TestApp, SIGNING_KEY};

/// Steps where tokend deliberately answers differently: (step, reason,
/// peer's status, tokend's exact status and body).
const DIFFERENCES: &[(&str, &str, u16, u16, &str)] = &[
    (
        "refresh spent token",
        "docs/sessions.md: re-presenting the just-spent token inside the grace window \
         (TOKEND__JWT__REFRESH_REUSE_GRACE_SECS, default 10 s; two tabs, a retry) replays the \
         rotation: the same successor pair, no second branch. simplejwt refuses it",
        401,
        200,
        r#"{"access":"<jwt>","refresh":"<jwt>"}"#,
    ),
    (
        "me after logout",
        "docs/sessions.md: blacklisting a refresh token logs its session out, so the session's access \
         tokens stop working at once; simplejwt leaves them valid until they expire",
        200,
        401,
        r#"{"detail":"Given token not valid for any token type","code":"token_not_valid","messages":[{"token_class":"AccessToken","token_type":"access","message":"Token is blacklisted"}]}"#,
    ),
    (
        "verify a blacklisted refresh token",
        "docs/api.md: every token error of refresh/verify/blacklist is 401 token_not_valid; \
         simplejwt's verify view alone raises a plain ValidationError (400 non_field_errors) here",
        400,
        401,
        r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
    ),
    (
        "refresh for a deleted user",
        "simplejwt 5.5 crashes (500) when the token's user is gone; docs/api.md: never a 500, \
         tokend answers simplejwt's own no_active_account error",
        500,
        401,
        r#"{"detail":"No active account found for the given token.","code":"no_active_account"}"#,
    ),
    (
        "unknown path",
        "Django answers its HTML 404 page; docs/api.md: unknown paths are 404 JSON",
        404,
        404,
        r#"{"detail":"Not found."}"#,
    ),
    (
        "path without trailing slash",
        "Django redirects (301) and the client loses its POST body; tokend serves the path as is",
        301,
        400,
        r#"{"username":["This field is required."],"password":["This field is required."]}"#,
    ),
];

struct Step {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    /// `{NAME}` is replaced by a saved value of the side being driven.
    body: &'static str,
    authorization: Option<&'static str>,
    /// Save these response fields under these names.
    save: &'static [(&'static str, &'static str)],
}

const JSON: Option<&str> = Some("application/json");
const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

const fn post(name: &'static str, path: &'static str, body: &'static str) -> Step {
    Step {
        name,
        method: "POST",
        path,
        content_type: JSON,
        body,
        authorization: None,
        save: &[],
    }
}

const fn me(name: &'static str, authorization: Option<&'static str>) -> Step {
    Step {
        name,
        method: "GET",
        path: "/api/user/me/",
        content_type: None,
        body: "",
        authorization,
        save: &[],
    }
}

fn script() -> Vec<Step> {
    let reg = "/api/user/register/";
    let tok = "/api/token/";
    let refresh = "/api/token/refresh/";
    let verify = "/api/token/verify/";
    let blacklist = "/api/token/blacklist/";
    vec![
        post(
            "register",
            reg,
            r#"{"username":"alice","password":"pw12345"}"#,
        ),
        post(
            "register duplicate",
            reg,
            r#"{"username":"alice","password":"other"}"#,
        ),
        post(
            "register duplicate, blank password",
            reg,
            r#"{"username":"alice","password":" "}"#,
        ),
        post("register empty", reg, "{}"),
        post(
            "register blank and null",
            reg,
            r#"{"username":" ","password":null}"#,
        ),
        post(
            "register bad characters",
            reg,
            r#"{"username":"a!b\u0000","password":true}"#,
        ),
        post("register non-dict", reg, "[1,2]"),
        post("register null body", reg, "null"),
        post(
            "register numbers",
            reg,
            r#"{"username":123,"password":1.5}"#,
        ),
        Step {
            content_type: FORM,
            ..post("register form", reg, "username=bob&password=pw")
        },
        post(
            "register carol",
            reg,
            r#"{"username":"carol","password":"pw"}"#,
        ),
        post(
            "login wrong password",
            tok,
            r#"{"username":"alice","password":"wrong"}"#,
        ),
        post(
            "login unknown user",
            tok,
            r#"{"username":"nobody","password":"pw12345"}"#,
        ),
        post("login missing fields", tok, r#"{"password":""}"#),
        post("login NUL", tok, r#"{"username":"a\u0000","password":"x"}"#),
        Step {
            save: &[("access", "A1"), ("refresh", "R1")],
            ..post("login", tok, r#"{"username":"alice","password":"pw12345"}"#)
        },
        Step {
            content_type: FORM,
            save: &[("access", "AB")],
            ..post("login form", tok, "username=bob&password=pw")
        },
        Step {
            save: &[("refresh", "RC")],
            ..post(
                "login carol",
                tok,
                r#"{"username":"carol","password":"pw"}"#,
            )
        },
        me("me", Some("Bearer {A1}")),
        me("me without credentials", None),
        me("me other scheme", Some("Token {A1}")),
        me("me with a refresh token", Some("Bearer {R1}")),
        me("me garbage", Some("Bearer garbage")),
        me("me three parts", Some("Bearer a b")),
        me("me expired", Some("Bearer {EXPIRED}")),
        Step {
            save: &[("refresh", "R2")],
            ..post("refresh", refresh, r#"{"refresh":"{R1}"}"#)
        },
        post("refresh spent token", refresh, r#"{"refresh":"{R1}"}"#),
        post(
            "refresh with access token",
            refresh,
            r#"{"refresh":"{A1}"}"#,
        ),
        post("refresh garbage", refresh, r#"{"refresh":"garbage"}"#),
        post(
            "refresh expired",
            refresh,
            r#"{"refresh":"{EXPIRED_REFRESH}"}"#,
        ),
        post("refresh empty", refresh, "{}"),
        post("verify access", verify, r#"{"token":"{A1}"}"#),
        post("verify refresh", verify, r#"{"token":"{R2}"}"#),
        post("verify garbage", verify, r#"{"token":"garbage"}"#),
        post("verify number", verify, r#"{"token":123}"#),
        post("verify expired", verify, r#"{"token":"{EXPIRED}"}"#),
        post("verify empty", verify, "{}"),
        post("blacklist", blacklist, r#"{"refresh":"{R2}"}"#),
        post("blacklist again", blacklist, r#"{"refresh":"{R2}"}"#),
        post("blacklist access token", blacklist, r#"{"refresh":"{A1}"}"#),
        me("me after logout", Some("Bearer {A1}")),
        post(
            "verify a blacklisted refresh token",
            verify,
            r#"{"token":"{R2}"}"#,
        ),
        post("malformed JSON", tok, "{bad"),
        Step {
            content_type: Some("text/plain"),
            ..post("unsupported media type", tok, "x")
        },
        Step {
            method: "GET",
            content_type: None,
            ..post("wrong method", tok, "")
        },
        Step {
            method: "PUT",
            ..post("wrong method PUT", verify, "")
        },
        Step {
            method: "DELETE",
            ..me("wrong method on me", None)
        },
        Step {
            method: "DELETE",
            ..me("wrong method on me, authenticated", Some("Bearer {AB}"))
        },
        Step {
            content_type: Some("application/json; charset=utf-8"),
            ..post("JSON with charset", verify, r#"{"token":"x"}"#)
        },
        post("unknown path", "/api/nope/", "{}"),
        post("path without trailing slash", "/api/token", "{}"),
        Step {
            method: "DELETE_CAROL",
            ..post("delete carol", "", "")
        },
        post(
            "refresh for a deleted user",
            refresh,
            r#"{"refresh":"{RC}"}"#,
        ),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct Observed {
    status: u16,
    content_type: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

fn mask(value: &mut Value) {
    match value {
        Value::String(s) if s.starts_with("eyJ") && s.matches('.').count() == 2 => {
            *s = "<jwt>".into()
        }
        Value::String(s) if s.starts_with("JSON parse error - ") => {
            *s = "JSON parse error - <python/serde message>".into()
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::Object(map) => map.values_mut().for_each(mask),
        _ => {}
    }
}

fn substitute(template: &str, vars: &HashMap<String, String>) -> String {
    vars.iter()
        .fold(template.to_owned(), |text, (name, value)| {
            text.replace(&format!("{{{name}}}"), value)
        })
}

struct Side<'a> {
    base: String,
    vars: HashMap<String, String>,
    delete_carol: Box<dyn Fn() + 'a>,
}

async fn run_step(client: &reqwest::Client, side: &mut Side<'_>, step: &Step) -> Option<Observed> {
    if step.method == "DELETE_CAROL" {
        (side.delete_carol)();
        return None;
    }
    let method = reqwest::Method::from_bytes(step.method.as_bytes()).expect("method");
    let mut request = client.request(method, format!("{}{}", side.base, step.path));
    if let Some(ct) = step.content_type {
        request = request.header("Content-Type", ct);
    }
    if let Some(auth) = step.authorization {
        request = request.header("Authorization", substitute(auth, &side.vars));
    }
    if !step.body.is_empty() {
        request = request.body(substitute(step.body, &side.vars));
    }
    let response = request.send().await.expect("request sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, content_type, www_authenticate) = (
        response.status().as_u16(),
        header("content-type"),
        header("www-authenticate"),
    );
    let text = response.text().await.expect("body");
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(mut value) => {
            for (field, name) in step.save {
                if let Some(v) = value[*field].as_str() {
                    side.vars.insert((*name).to_owned(), v.to_owned());
                }
            }
            mask(&mut value);
            value.to_string()
        }
        Err(_) => text,
    };
    Some(Observed {
        status,
        content_type,
        www_authenticate,
        body,
    })
}

/// The reference Django/simplejwt app, part of the repository.
pub(crate) fn reference_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference-django")
}

pub(crate) struct Peer {
    dir: tempfile::TempDir,
    pub(crate) port: u16,
}

impl Peer {
    fn start() -> Peer {
        Self::start_with(
            None,
            &[("PEER_HASHER", "bcrypt"), ("PEER_BCRYPT_ROUNDS", "4")],
        )
    }

    /// The peer on `database` (a SQLite file; default: its own), with extra
    /// environment (e.g. `PEER_HASHER`).
    pub(crate) fn start_with(database: Option<&Path>, env: &[(&str, &str)]) -> Peer {
        let app = reference_app();
        let venv = python_venv("reference-django-venv", &app.join("requirements.txt"));
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let database = database.map_or_else(|| dir.path().join("db.sqlite3"), Path::to_path_buf);
        let mut command = Command::new("bash");
        command
            .arg(app.join("run.sh"))
            .arg(port.to_string())
            .env("PEER_VENV", venv)
            .env("PEER_RUN_DIR", dir.path())
            .env("PEER_SQLITE_PATH", database)
            .env("PEER_SIGNING_KEY", SIGNING_KEY)
            .env("PEER_WORKERS", "2");
        for (name, value) in env {
            command.env(name, value);
        }
        run(&mut command);
        Peer { dir, port }
    }

    fn delete_user(&self, username: &str) {
        let path = self.dir.path().join("db.sqlite3");
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).expect("peer database");
        let user = format!("(SELECT id FROM auth_user WHERE username = '{username}')");
        for sql in [
            format!("DELETE FROM token_blacklist_blacklistedtoken WHERE token_id IN (SELECT id FROM token_blacklist_outstandingtoken WHERE user_id = {user})"),
            format!("DELETE FROM token_blacklist_outstandingtoken WHERE user_id = {user}"),
            format!("DELETE FROM auth_user WHERE username = '{username}'"),
        ] {
            diesel::sql_query(sql).execute(&mut conn).expect("delete in peer database");
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(reference_app().join("stop.sh"))
            .arg(self.port.to_string())
            .env("PEER_RUN_DIR", self.dir.path())
            .status();
    }
}

fn tokend_delete_user(app: &TestApp, username: &'static str) {
    let db = app.db.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        handle.block_on(async {
            db.run(move |conn| {
                let user = tokend::storage::users::find_by_username(conn, username)?;
                if let Some(user) = user {
                    tokend::storage::users::delete(conn, user.id)?;
                }
                Ok(())
            })
            .await
            .expect("delete in tokend database")
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_simplejwt_peer() {
    let peer = tokio::task::spawn_blocking(Peer::start)
        .await
        .expect("peer start");
    let app = spawn_app(Backend::Sqlite).await;

    let expired_claims = |kind: &str| json!({"token_type": kind, "exp": now() - 10, "iat": now() - 100, "jti": "e".repeat(32), "user_id": "1"});
    let shared: HashMap<String, String> = [
        ("EXPIRED".to_owned(), sign(&expired_claims("access"))),
        (
            "EXPIRED_REFRESH".to_owned(),
            sign(&expired_claims("refresh")),
        ),
    ]
    .into();
    let mut theirs = Side {
        base: format!("http://127.0.0.1:{}", peer.port),
        vars: shared.clone(),
        delete_carol: Box::new(|| peer.delete_user("carol")),
    };
    let mut ours = Side {
        base: app.address.clone(),
        vars: shared,
        delete_carol: Box::new(|| tokend_delete_user(&app, "carol")),
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let mut mismatches = Vec::new();
    let steps = script();
    for step in &steps {
        let peer_reply = run_step(&client, &mut theirs, step).await;
        let our_reply = run_step(&client, &mut ours, step).await;
        let (Some(peer_reply), Some(our_reply)) = (peer_reply, our_reply) else {
            continue;
        };
        if let Some((_, reason, peer_status, our_status, our_body)) =
            DIFFERENCES.iter().find(|d| d.0 == step.name)
        {
            assert_eq!(
                peer_reply.status, *peer_status,
                "{}: the peer changed ({reason})",
                step.name
            );
            assert_eq!(
                (our_reply.status, our_reply.body.as_str()),
                (*our_status, *our_body),
                "{}: {reason}",
                step.name
            );
            continue;
        }
        if peer_reply != our_reply {
            mismatches.push(format!(
                "{}:\n  peer:   {peer_reply:?}\n  tokend: {our_reply:?}",
                step.name
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "tokend differs from simplejwt in {} of {} steps:\n{}",
        mismatches.len(),
        steps.len(),
        mismatches.join("\n")
    );
    eprintln!(
        "differential test: {} steps compared, {} deliberate differences",
        steps.len(),
        DIFFERENCES.len()
    );
}

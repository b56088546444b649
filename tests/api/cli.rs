//! The command line (`tokend users …`, `tokend purge`) against the same
//! database as a running server, and the purge itself.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::both_backends;
use crate::helpers::{now, spawn_app, Backend, TestApp};

/// Runs the tokend binary on the app's database, with the app's settings;
/// returns (success, stdout+stderr).
pub(crate) fn tokend(app: &TestApp, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(args)
        .envs(app.extra.iter().map(|(k, v)| (k, v)))
        .env("TOKEND__DATABASE__URL", &app.database_url)
        .env("TOKEND__PASSWORD__BCRYPT_COST", "4")
        .env("TOKEND__JWT__SIGNING_KEY", crate::helpers::SIGNING_KEY)
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tokend");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("tokend output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn users_commands_manage_accounts(backend: Backend) {
    let app = spawn_app(backend).await;
    let (ok, out) = tokend(&app, &["users", "create", "carol"], "s3cret pass\n");
    assert!(ok, "{out}");
    assert_eq!(app.login("carol", "s3cret pass").await.status, 200);
    let (ok, out) = tokend(&app, &["users", "create", "carol"], "other\n");
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = tokend(&app, &["users", "create", "dave"], "");
    assert!(!ok && out.contains("no password"), "{out}");
    let (ok, out) = tokend(&app, &["users", "list"], "");
    assert!(ok && out.contains("carol\tactive"), "{out}");

    let (_, access, refresh) = app.user_with_tokens("alice", "pw").await;
    let (_, bob_access, bob_refresh) = app.user_with_tokens("bob", "pw").await;
    let (ok, out) = tokend(&app, &["users", "disable", "alice"], "");
    assert!(ok && out.contains("1 session(s) revoked"), "{out}");
    // Every token of the user fails, wherever it is checked.
    app.get_me(Some(&format!("Bearer {access}"))).await.assert(
        401,
        r#"{"detail":"User is inactive","code":"user_inactive"}"#,
    );
    app.verify(&access).await.assert(
        401,
        r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#,
    );
    assert_eq!(app.refresh(&refresh).await.status, 401);
    assert_eq!(app.login("alice", "pw").await.status, 401);
    // Other users are unaffected.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {bob_access}")))
            .await
            .status,
        200
    );
    assert_eq!(app.refresh(&bob_refresh).await.status, 200);
    let (ok, _) = tokend(&app, &["users", "enable", "alice"], "");
    assert!(ok);
    assert_eq!(app.login("alice", "pw").await.status, 200);
    assert_eq!(
        app.refresh(&refresh).await.status,
        401,
        "old sessions stay revoked"
    );

    let (ok, out) = tokend(&app, &["users", "set-password", "alice"], "new pw\n");
    assert!(ok, "{out}");
    assert_eq!(app.login("alice", "pw").await.status, 401);
    let pair = app.login("alice", "new pw").await;
    assert_eq!(pair.status, 200);
    let (ok, _) = tokend(&app, &["users", "delete", "alice"], "");
    assert!(ok);
    assert_eq!(app.refresh(&pair.token("refresh")).await.status, 401);
    let (ok, out) = tokend(&app, &["users", "delete", "nobody"], "");
    assert!(!ok && out.contains("no user named"), "{out}");
}

/// Thousands of dead rows go in bounded batches; live sessions stay.
async fn purge_removes_dead_rows_in_batches(backend: Backend) {
    let app = spawn_app(backend).await;
    let (id, access, refresh) = app.user_with_tokens("alice", "pw").await;
    app.insert_dead_sessions(id, 5_000).await;
    // A session revoked long ago whose token has not expired: deleted with
    // its session, and counted.
    {
        use diesel::prelude::*;
        use tokend::storage::schema::{refresh_tokens, sessions};
        let at = now() - 3600;
        app.db
            .run(move |conn| {
                diesel::insert_into(sessions::table)
                    .values((
                        sessions::id.eq("revoked-long-ago"),
                        sessions::user_id.eq(id),
                        sessions::created_at.eq(at),
                        sessions::expires_at.eq(at + 86_400),
                        sessions::revoked_at.eq(at),
                    ))
                    .execute(conn)?;
                diesel::insert_into(refresh_tokens::table)
                    .values((
                        refresh_tokens::jti.eq("revoked-long-ago"),
                        refresh_tokens::user_id.eq(id),
                        refresh_tokens::issued_at.eq(at),
                        refresh_tokens::expires_at.eq(at + 86_400),
                        refresh_tokens::revoked_at.eq(at),
                        refresh_tokens::session_id.eq("revoked-long-ago"),
                    ))
                    .execute(conn)?;
                Ok(())
            })
            .await
            .expect("insert a revoked session");
    }
    let mut batches = 0;
    let past = now() - 1;
    let purged = app
        .db
        .purge(now(), past, past, past, 1000, |batch| {
            batches += 1;
            // Expired tokens, and the tokens of the dead sessions (two at
            // most each).
            assert!(
                batch.sessions <= 1000 && batch.refresh_tokens <= 3000,
                "{batch:?}"
            );
        })
        .await
        .expect("purge");
    assert_eq!((purged.sessions, purged.refresh_tokens), (5_001, 5_001));
    assert!(batches >= 5, "{batches} batches");
    // The live session still works, and a second run finds nothing.
    assert_eq!(
        app.get_me(Some(&format!("Bearer {access}"))).await.status,
        200
    );
    assert_eq!(app.refresh(&refresh).await.status, 200);
    let (ok, out) = tokend(&app, &["purge"], "");
    assert!(
        ok && out.contains("purge done: 0 refresh token(s), 0 session(s)"),
        "{out}"
    );
}

both_backends!(
    users_commands_manage_accounts,
    purge_removes_dead_rows_in_batches
);

/// `tokend keys …`: a generated EdDSA key, its public half and the JWKS of a
/// configuration using it agree on the kid; the served JWKS is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_commands_agree_with_the_server() {
    let run = |args: &[&str], env: &[(&str, &str)], stdin: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tokend"));
        command
            .args(args)
            .env("TOKEND_CONFIG_DIR", "/nonexistent")
            .env(
                "TOKEND__DATABASE__URL",
                "sqlite:///nonexistent/never-opened.sqlite3",
            )
            .env_remove("TOKEND__JWT__SIGNING_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("run tokend");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success(), "{args:?}: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (hs, _) = run(&["keys", "generate"], &[], "");
    assert_eq!(hs.trim().len(), 64, "{hs}");
    // The key a production configuration still lacks can be generated.
    let (prod, _) = run(
        &["keys", "generate", "--algorithm", "HS256"],
        &[("TOKEND_PROFILE", "production")],
        "",
    );
    assert_eq!(prod.trim().len(), 64, "{prod}");
    let (private, stderr) = run(&["keys", "generate", "--algorithm", "EdDSA"], &[], "");
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    let kid = stderr
        .trim()
        .strip_prefix("kid: ")
        .expect("kid on stderr")
        .to_owned();
    let (public, stderr) = run(&["keys", "public"], &[], &private);
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    assert_eq!(stderr.trim(), format!("kid: {kid}"));
    let env = [
        ("TOKEND__JWT__ALGORITHM", "EdDSA"),
        ("TOKEND__JWT__SIGNING_KEY", private.as_str()),
    ];
    let (jwks, _) = run(&["keys", "jwks"], &env, "");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("JSON");
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    let (config, _) = run(&["check-config"], &env, "");
    assert!(
        config.contains(&format!("signing key: EdDSA kid={kid}")),
        "{config}"
    );
    assert!(
        !config.contains("PRIVATE KEY"),
        "the key is masked: {config}"
    );
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, &env).await;
    let served = app
        .send(app.client.get(app.url("/.well-known/jwks.json")))
        .await;
    assert_eq!(served.json(), jwks);
    // A wrong algorithm name is a clear error, exit non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["keys", "generate", "--algorithm", "none"])
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HS256, EdDSA or RS256"));
}

/// A replay grace as long as the access lifetime would hand out expired
/// access tokens: the server refuses to start, saying what to change.
#[test]
fn the_server_refuses_a_grace_not_shorter_than_the_access_lifetime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .env(
            "TOKEND__DATABASE__URL",
            format!("sqlite://{}", dir.path().join("t.sqlite3").display()),
        )
        .env("TOKEND__SERVER__PORT", "0")
        .env("TOKEND__JWT__SIGNING_KEY", crate::helpers::SIGNING_KEY)
        .env("TOKEND__JWT__ACCESS_TTL_SECS", "5")
        .env("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tokend");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tokend started with an access lifetime shorter than the replay grace");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "TOKEND__JWT__ACCESS_TTL_SECS (5) must be longer than \
             TOKEND__JWT__REFRESH_REUSE_GRACE_SECS (10)"
        ) && stderr.contains("or set it to 0"),
        "{stderr}"
    );
}

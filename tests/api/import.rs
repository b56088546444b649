//! `tokend users import-django` against a database made by a real Django, the
//! reference app (tests/reference-django): users registered there with
//! Django's default PBKDF2 hasher and with BCryptSHA256 log in to tokend with
//! their old passwords, keep their ids, and are re-hashed to tokend's bcrypt.

use std::process::Command;

use crate::both_backends;
use crate::compat::Peer;
use crate::helpers::{claims, spawn_app, Backend, TestApp};

fn register_on_peer(peer: &Peer, username: &str, password: &str) {
    let status = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(serde_json::json!({"username": username, "password": password}).to_string())
        .arg(format!("http://127.0.0.1:{}/api/user/register/", peer.port))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "201",
        "register {username} on the peer"
    );
}

fn import(app: &TestApp, from: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["users", "import-django", "--from", from, "--batch", "2"])
        .env("TOKEND__DATABASE__URL", &app.database_url)
        .env("TOKEND__PASSWORD__BCRYPT_COST", "4")
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("run tokend");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn stored_hash(app: &TestApp, username: &'static str) -> String {
    app.db
        .run(move |conn| tokend::storage::users::find_by_username(conn, username))
        .await
        .expect("query")
        .expect("user")
        .password_hash
}

async fn django_users_log_in_with_their_old_passwords(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let django_db = dir.path().join("django.sqlite3");
    {
        // Django's default hasher (PBKDF2, 1,000,000 iterations).
        let peer = Peer::start_with(Some(&django_db), &[]);
        register_on_peer(&peer, "alice", "alice's old password");
        register_on_peer(&peer, "bob", "bob's old password");
    }
    {
        let peer = Peer::start_with(
            Some(&django_db),
            &[("PEER_HASHER", "bcrypt"), ("PEER_BCRYPT_ROUNDS", "4")],
        );
        register_on_peer(&peer, "carol", "carol's old password");
    }

    let app = spawn_app(backend).await;
    let from = format!("sqlite://{}", django_db.display());
    let (ok, out) = import(&app, &from);
    assert!(ok, "{out}");
    assert!(out.contains("import-django: 2/3 read"), "progress: {out}");
    assert!(
        out.contains(
            "import-django done: 3 read, 3 imported with their ids, 0 with new ids, 0 skipped"
        ),
        "{out}"
    );
    assert!(stored_hash(&app, "alice")
        .await
        .starts_with("pbkdf2_sha256$1000000$"));
    assert!(stored_hash(&app, "carol")
        .await
        .starts_with("bcrypt_sha256$$2b$04$"));

    // Old passwords work, ids are Django's, and PBKDF2 is replaced by
    // tokend's bcrypt on the first successful login.
    for (id, name, password) in [
        (1, "alice", "alice's old password"),
        (2, "bob", "bob's old password"),
        (3, "carol", "carol's old password"),
    ] {
        let reply = app.login(name, password).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(claims(&reply.token("access"))["user_id"], id.to_string());
    }
    assert!(stored_hash(&app, "alice")
        .await
        .starts_with("bcrypt_sha256$$2b$04$"));
    assert_eq!(app.login("alice", "alice's old password").await.status, 200);
    assert_eq!(app.login("bob", "wrong").await.status, 401);
    // New users continue after the imported ids (PostgreSQL's sequence too).
    let dave = app.register("dave", "pw12345").await;
    assert_eq!(dave.status, 201, "{}", dave.body);
    assert_eq!(dave.json()["id"], 4);
    // Re-running skips everyone: idempotent.
    let (ok, out) = import(&app, &from);
    assert!(
        ok && out.contains("0 imported with their ids, 0 with new ids, 3 skipped"),
        "{out}"
    );
    // Into a tokend that already has a user with id 1: that Django user
    // gets an id above all of Django's, everyone else keeps theirs, and
    // later registrations come after them too.
    let busy = spawn_app(backend).await;
    assert_eq!(busy.register("admin", "pw12345").await.json()["id"], 1);
    let (ok, out) = import(&busy, &from);
    assert!(
        ok && out.contains("2 imported with their ids, 1 with new ids"),
        "{out}"
    );
    for (name, password, id) in [
        ("alice", "alice's old password", 4),
        ("bob", "bob's old password", 2),
        ("carol", "carol's old password", 3),
    ] {
        let reply = busy.login(name, password).await;
        assert_eq!(
            claims(&reply.token("access"))["user_id"],
            id.to_string(),
            "{name}"
        );
    }
    assert_eq!(busy.register("erin", "pw12345").await.json()["id"], 5);
    // A missing source is a clear error, exit non-zero.
    let (ok, out) = import(&app, "sqlite:///nonexistent/django.sqlite3");
    assert!(
        !ok && out.contains("cannot open the Django database"),
        "{out}"
    );
}

both_backends!(django_users_log_in_with_their_old_passwords);

//! `tokend users import-django` against a database made by a real Django, the
//! reference app (tests/reference-django): users registered there with
//! Django's default PBKDF2 hasher and with BCryptSHA256 log in to tokend with
//! their old passwords, keep their ids, and are re-hashed to tokend's bcrypt.

use std::process::Command;

use crate::both_backends;
use crate::compat::Peer;
use crate::helpers::{claims, now, sign, spawn_app, spawn_app_with, Backend, TestApp};

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
            "import-django done: 3 read, 3 imported with their ids, 0 skipped (username exists), \
             0 refused (id belongs to another user), 0 refused (invalid username)"
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
        ok && out.contains("0 imported with their ids, 3 skipped (username exists)"),
        "{out}"
    );
    // Into a tokend that already has a user with id 1: that Django user is
    // refused (never renumbered), everyone else keeps their id, and later
    // registrations come after Django's ids.
    let busy = spawn_app(backend).await;
    assert_eq!(busy.register("admin", "pw12345").await.json()["id"], 1);
    let (ok, out) = import(&busy, &from);
    assert!(
        !ok && out.contains("2 imported with their ids, 0 skipped (username exists), 1 refused (id belongs to another user)"),
        "{out}"
    );
    assert_eq!(
        busy.login("alice", "alice's old password").await.status,
        401
    );
    for (name, password, id) in [
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
    assert_eq!(busy.register("erin", "pw12345").await.json()["id"], 4);
    // A missing source is a clear error, exit non-zero.
    let (ok, out) = import(&app, "sqlite:///nonexistent/django.sqlite3");
    assert!(
        !ok && out.contains("cannot open the Django database"),
        "{out}"
    );
}

/// A Django `auth_user` table (the columns Django creates) holding `rows`
/// of (id, username, password hash), in a new SQLite file.
fn django_database(path: &std::path::Path, rows: &[(i64, &str, &str)]) {
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("sqlite");
    diesel::sql_query(
        "CREATE TABLE auth_user (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
         password varchar(128) NOT NULL, last_login datetime NULL, is_superuser bool NOT NULL, \
         username varchar(150) NOT NULL UNIQUE, last_name varchar(150) NOT NULL, \
         email varchar(254) NOT NULL, is_staff bool NOT NULL, is_active bool NOT NULL, \
         date_joined datetime NOT NULL, first_name varchar(150) NOT NULL)",
    )
    .execute(&mut conn)
    .expect("create auth_user");
    for table in [
        "CREATE TABLE auth_group (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
         name varchar(150) NOT NULL UNIQUE)",
        "CREATE TABLE auth_user_groups (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, \
         user_id integer NOT NULL, group_id integer NOT NULL)",
    ] {
        diesel::sql_query(table)
            .execute(&mut conn)
            .expect("create Django group tables");
    }
    for (id, username, hash) in rows {
        diesel::sql_query(
            "INSERT INTO auth_user (id, password, is_superuser, username, last_name, email, \
             is_staff, is_active, date_joined, first_name) \
             VALUES (?, ?, 0, ?, '', '', 0, 1, '2025-01-01 00:00:00', '')",
        )
        .bind::<diesel::sql_types::BigInt, _>(id)
        .bind::<diesel::sql_types::Text, _>(hash)
        .bind::<diesel::sql_types::Text, _>(username)
        .execute(&mut conn)
        .expect("insert Django user");
    }
}

/// A Django id held here by someone else is refused, never renumbered, so
/// the old service's tokens for that id never name another user; usernames
/// registration would refuse are refused too. Both are reported without
/// hashes, the rest imported, and the exit status says rows were refused.
async fn import_refuses_id_clashes_and_invalid_usernames(backend: Backend) {
    let until = (now() + 3600).to_string();
    let app = spawn_app_with(
        backend,
        &[("TOKEND__JWT__ACCEPT_SESSIONLESS_UNTIL", until.as_str())],
    )
    .await;
    assert_eq!(
        app.register("admin", "admin password").await.json()["id"],
        1
    );
    let alice = tokend::auth::password::hash_password("alice password", 4).expect("hash");
    let carol = tokend::auth::password::hash_password("carol password", 4).expect("hash");
    let long = "x".repeat(151);
    let dir = tempfile::tempdir().expect("temp dir");
    let django_db = dir.path().join("django.sqlite3");
    django_database(
        &django_db,
        &[
            (1, "alice", &alice),
            (2, "bob\nroot 1 true", &carol),
            (3, "carol", &carol),
            (4, "", &carol),
            (5, &long, &carol),
            (6, "admin", &carol),
            (7, "eve il", &carol),
        ],
    );
    let (ok, out) = import(&app, &format!("sqlite://{}", django_db.display()));
    assert!(!ok, "refused rows must fail the command: {out}");
    assert!(
        out.contains(
            "import-django done: 7 read, 1 imported with their ids, 1 skipped (username exists), \
             1 refused (id belongs to another user), 4 refused (invalid username)"
        ),
        "{out}"
    );
    assert!(
        out.contains("id 1 refused: it belongs to another user here"),
        "{out}"
    );
    assert!(
        out.contains(r#"id 2 refused: invalid username "bob\nroot 1 true""#),
        "{out}"
    );
    assert!(
        !out.contains(&alice) && !out.contains(&carol) && !out.contains("$2b$"),
        "no hashes in the output: {out}"
    );
    // Only carol came in, with her id; the admin is still user 1.
    let names: Vec<(i64, String)> = app
        .db
        .run(tokend::storage::users::list)
        .await
        .expect("list")
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    assert_eq!(names, [(1, "admin".to_owned()), (3, "carol".to_owned())]);
    assert_eq!(app.login("alice", "alice password").await.status, 401);
    let carol_login = app.login("carol", "carol password").await;
    assert_eq!(claims(&carol_login.token("access"))["user_id"], "3");
    // Inside the legacy window, the old service's token for its user 1
    // (alice) does not act as tokend's user 1; its token for carol does.
    let legacy = |id: i64| {
        sign(
            &serde_json::json!({"token_type":"access","exp":now()+600,"iat":now(),
            "jti":"l".repeat(32),"user_id":id.to_string()}),
        )
    };
    assert_eq!(
        app.get_me(Some(&format!("Bearer {}", legacy(1))))
            .await
            .status,
        401
    );
    app.get_me(Some(&format!("Bearer {}", legacy(3))))
        .await
        .assert(200, r#"{"id":3,"username":"carol"}"#);
    // New registrations come after Django's ids.
    assert_eq!(app.register("dave", "pw12345").await.json()["id"], 8);
}

/// Django's `last_login` (SQLite text, UTC) comes over as unix seconds;
/// NULL stays NULL.
async fn import_brings_last_login_over(backend: Backend) {
    use diesel::prelude::*;
    use tokend::storage::schema::users;
    let app = spawn_app(backend).await;
    let hash = tokend::auth::password::hash_password("pw12345", 4).expect("hash");
    let dir = tempfile::tempdir().expect("temp dir");
    let django_db = dir.path().join("django.sqlite3");
    django_database(&django_db, &[(1, "alice", &hash), (2, "bob", &hash)]);
    let mut conn = SqliteConnection::establish(&django_db.display().to_string()).expect("sqlite");
    diesel::sql_query(
        "UPDATE auth_user SET last_login = '2025-03-04 05:06:07.123456' WHERE id = 1",
    )
    .execute(&mut conn)
    .expect("set Django's last_login");
    let (ok, out) = import(&app, &format!("sqlite://{}", django_db.display()));
    assert!(ok, "{out}");
    let recorded: Vec<(i64, Option<i64>)> = app
        .db
        .run(|conn| {
            Ok(users::table
                .select((users::id, users::last_login))
                .order(users::id)
                .load(conn)?)
        })
        .await
        .expect("read users");
    assert_eq!(recorded, [(1, Some(1_741_064_767)), (2, None)]);
}

/// Runs Django's `manage.py` of the reference app on the SQLite file `db`.
fn django_manage(db: &std::path::Path, args: &[&str]) {
    let app = crate::compat::reference_app();
    let venv = crate::helpers::python_venv("reference-django-venv", &app.join("requirements.txt"));
    crate::helpers::run(
        Command::new(venv.join("bin/python"))
            .arg("manage.py")
            .args(args)
            .current_dir(&app)
            .env("DJANGO_SETTINGS_MODULE", "backend.settings")
            .env("PEER_SQLITE_PATH", db)
            .env("PEER_SIGNING_KEY", crate::helpers::SIGNING_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
}

/// Groups, memberships, is_staff, is_superuser, email and date_joined made
/// by Django itself come over; with `jwt.extra_claims` they are in the
/// access tokens. A namesake registered here gets no Django groups.
async fn import_brings_groups_and_flags_from_django(backend: Backend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let django_db = dir.path().join("django.sqlite3");
    django_manage(&django_db, &["migrate", "--noinput", "-v", "0"]);
    let script = r#"
from datetime import datetime, timezone
from django.contrib.auth.models import Group, User
carol = User.objects.create_user("carol", "", "carol pw")
editors = Group.objects.create(name="editors")
ops = Group.objects.create(name="ops team")
alice = User.objects.create_user("alice", "alice@example.com", "alice pw", is_staff=True,
                                 first_name="Alice", last_name="Liddell")
alice.date_joined = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
alice.save()
alice.groups.add(editors, ops)
bob = User.objects.create_superuser("bob", "", "bob pw")
bob.groups.add(ops)
carol.groups.add(editors)
# Addresses are unique in tokend, not in Django.
User.objects.create_user("dave", "ALICE@example.com", "dave pw")
# Django stores any text: one tokend would refuse.
User.objects.create_user("erin", "erin at example", "erin pw")
# django-allauth's table of addresses: alice's is verified.
from django.db import connection
with connection.cursor() as c:
    c.execute("CREATE TABLE account_emailaddress (id integer PRIMARY KEY AUTOINCREMENT, "
              "email varchar(254) NOT NULL, verified bool NOT NULL, \"primary\" bool NOT NULL, "
              "user_id integer NOT NULL)")
    c.execute("INSERT INTO account_emailaddress (email, verified, \"primary\", user_id) "
              "VALUES ('alice@example.com', 1, 1, %s)", [alice.id])
"#;
    django_manage(&django_db, &["shell", "-c", script]);

    let app = spawn_app_with(
        backend,
        &[(
            "TOKEND__JWT__EXTRA_CLAIMS",
            "username,email,is_staff,is_superuser,groups",
        )],
    )
    .await;
    // carol registered here before the import, with the same id as
    // Django's carol: a namesake, not imported, and no Django groups.
    assert_eq!(app.register("carol", "tokend pw").await.json()["id"], 1);
    let (ok, out) = import(&app, &format!("sqlite://{}", django_db.display()));
    assert!(ok, "{out}");
    assert!(
        out.contains("4 imported with their ids, 1 skipped (username exists)"),
        "{out}"
    );
    assert!(
        out.contains(
            "import-django: id 4 imported without its e-mail address: another user here has it"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "import-django: id 5 imported without its e-mail address: not a valid address"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "groups: 2 created, 0 refused (invalid name); 3 memberships of imported users"
        ),
        "{out}"
    );
    let extra = |token: &str| {
        let c = claims(token);
        serde_json::json!([c["email"], c["is_staff"], c["is_superuser"], c["groups"]])
    };
    let alice = app.login("alice", "alice pw").await;
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(
        extra(&alice.token("access")),
        serde_json::json!(["alice@example.com", true, false, ["editors", "ops team"]])
    );
    let bob = app.login("bob", "bob pw").await;
    assert_eq!(
        extra(&bob.token("access")),
        serde_json::json!(["", true, true, ["ops team"]])
    );
    let carol = app.login("carol", "tokend pw").await;
    assert_eq!(
        claims(&carol.token("access"))["groups"],
        serde_json::json!([])
    );
    // date_joined is tokend's created_at, in unix seconds.
    let joined = app
        .db
        .run(|conn| {
            use diesel::prelude::*;
            use tokend::storage::schema::users;
            Ok(users::table
                .filter(users::username.eq("alice"))
                .select(users::created_at)
                .first::<i64>(conn)?)
        })
        .await
        .expect("read alice");
    assert_eq!(joined, 1_704_164_645);
    // Names, the address and allauth's verified flag.
    let auth = format!("Bearer {}", alice.token("access"));
    app.send(app.client.get(app.url("/api/auth/user/")).header("Authorization", auth))
        .await
        .assert(
            200,
            r#"{"pk":2,"username":"alice","email":"alice@example.com","first_name":"Alice","last_name":"Liddell"}"#,
        );
    let verified: Vec<(String, Option<String>, bool)> = app
        .db
        .run(|conn| {
            use diesel::prelude::*;
            use tokend::storage::schema::users;
            Ok(users::table
                .filter(users::username.eq_any(["alice", "bob", "dave"]))
                .order(users::id)
                .select((users::username, users::email, users::email_verified))
                .load(conn)?)
        })
        .await
        .expect("read users");
    assert_eq!(
        verified,
        [
            ("alice".into(), Some("alice@example.com".into()), true),
            ("bob".into(), None, false),
            ("dave".into(), None, false),
        ]
    );
    // A re-run creates nothing twice and adds nothing new.
    let (_, out) = import(&app, &format!("sqlite://{}", django_db.display()));
    assert!(
        out.contains(
            "groups: 0 created, 0 refused (invalid name); 0 memberships of imported users"
        ),
        "{out}"
    );
}

both_backends!(
    import_brings_groups_and_flags_from_django,
    import_brings_last_login_over,
    django_users_log_in_with_their_old_passwords,
    import_refuses_id_clashes_and_invalid_usernames,
);

//! Every query of the request paths can be served by an index on
//! PostgreSQL: with sequential scans priced out (`enable_seqscan = off` for
//! the server's database), a table is still read sequentially only when no
//! index fits the query. The server runs as a process and is stopped before
//! the counters are read: an exiting backend flushes its statistics.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::{free_port, Backend, TestDatabase, SIGNING_KEY};

#[derive(diesel::QueryableByName, Debug)]
struct TableScans {
    #[diesel(sql_type = diesel::sql_types::Text)]
    relname: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq_scan: i64,
}

fn seq_scans(url: &str) -> Vec<(String, i64)> {
    let mut conn = PgConnection::establish(url).expect("connect to test db");
    diesel::sql_query(
        "SELECT relname::text AS relname, seq_scan FROM pg_stat_user_tables \
         WHERE seq_scan > 0 ORDER BY relname",
    )
    .load::<TableScans>(&mut conn)
    .expect("pg_stat_user_tables")
    .into_iter()
    .map(|t| (t.relname, t.seq_scan))
    .collect()
}

async fn call(request: reqwest::RequestBuilder, status: u16) -> Value {
    let response = request.send().await.expect("request");
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_paths_read_no_table_sequentially_on_postgres() {
    let database = TestDatabase::create(Backend::Postgres);
    let name = database
        .url()
        .rsplit('/')
        .next()
        .expect("db name")
        .to_owned();
    let mut admin =
        PgConnection::establish(&crate::helpers::postgres_admin_url()).expect("admin connection");
    diesel::sql_query(format!("ALTER DATABASE {name} SET enable_seqscan = off"))
        .execute(&mut admin)
        .expect("price out sequential scans");

    // Migrations and start-up run first, on a server of their own: their
    // scans (the migrations table) are not the request paths'.
    let port = free_port();
    let dir = tempfile::tempdir().expect("log dir");
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("serve")
            .env("TOKEND__DATABASE__URL", database.url())
            .env("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY)
            .env("TOKEND__SERVER__PORT", port.to_string())
            .env("TOKEND__PASSWORD__BCRYPT_COST", "4")
            .env("TOKEND__RATE_LIMIT__ENABLED", "false")
            .env("TOKEND__INTROSPECTION__CLIENTS", "svc:s3cret-svc")
            // Every check reads the database: no cache hides a query.
            .env("TOKEND__CACHE__TTL_MS", "0")
            .env("TOKEND_CONFIG_DIR", "/nonexistent")
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(dir.path().join("out.log")).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tokend")
    };
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let url = |path: &str| format!("{base}{path}");
    let wait_ready = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "tokend not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let stop = |mut child: std::process::Child| {
        crate::helpers::run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        assert!(child.wait().expect("wait").success());
    };
    let first = serve();
    wait_ready().await;
    stop(first);
    let before = seq_scans(database.url());

    let server = serve();
    wait_ready().await;
    let password = "correct horse battery staple";
    let creds = json!({"username": "alice", "password": password});
    call(client.post(url("/api/user/register/")).json(&creds), 201).await;
    let pair = call(client.post(url("/api/token/")).json(&creds), 200).await;
    let (access, refresh) = (
        pair["access"].as_str().expect("access").to_owned(),
        pair["refresh"].as_str().expect("refresh").to_owned(),
    );
    let bearer = format!("Bearer {access}");
    call(
        client
            .get(url("/api/user/me/"))
            .header("Authorization", &bearer),
        200,
    )
    .await;
    call(
        client
            .post(url("/api/token/verify/"))
            .json(&json!({"token": access})),
        200,
    )
    .await;
    let rotated = call(
        client
            .post(url("/api/token/refresh/"))
            .json(&json!({"refresh": refresh})),
        200,
    )
    .await;
    // A grace-window replay of the spent token.
    call(
        client
            .post(url("/api/token/refresh/"))
            .json(&json!({"refresh": refresh})),
        200,
    )
    .await;
    let access = rotated["access"].as_str().expect("access").to_owned();
    let refresh = rotated["refresh"].as_str().expect("refresh").to_owned();
    let bearer = format!("Bearer {access}");
    call(
        client
            .post(url("/api/token/introspect/"))
            .basic_auth("svc", Some("s3cret-svc"))
            .form(&[("token", access.as_str())]),
        200,
    )
    .await;
    call(
        client
            .get(url("/api/user/sessions/"))
            .header("Authorization", &bearer),
        200,
    )
    .await;
    // A second session, ended from the first one's device list.
    call(client.post(url("/api/token/")).json(&creds), 200).await;
    call(
        client
            .post(url("/api/user/sessions/revoke-others/"))
            .header("Authorization", &bearer),
        200,
    )
    .await;
    call(
        client
            .post(url("/api/token/blacklist/"))
            .json(&json!({"refresh": refresh})),
        200,
    )
    .await;
    // A wrong password for a known user and an unknown user.
    let wrong = json!({"username": "alice", "password": "not the password"});
    call(client.post(url("/api/token/")).json(&wrong), 401).await;
    let unknown = json!({"username": "nobody", "password": "not the password"});
    call(client.post(url("/api/token/")).json(&unknown), 401).await;
    stop(server);

    let after = seq_scans(database.url());
    assert_eq!(
        after, before,
        "sequential scans during the requests (table, count)"
    );

    // The purge reads its batches by index too (tables of millions of rows).
    let purge = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("purge")
        .env("TOKEND__DATABASE__URL", database.url())
        .env("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY)
        .env("TOKEND_CONFIG_DIR", "/nonexistent")
        .output()
        .expect("tokend purge");
    assert!(purge.status.success(), "{purge:?}");
    assert_eq!(
        seq_scans(database.url()),
        after,
        "sequential scans during the purge (table, count)"
    );
}

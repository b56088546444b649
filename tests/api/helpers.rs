//! Test harness: the real application on port 0, on a fresh SQLite file or a
//! fresh PostgreSQL database (created here, dropped when the test ends).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use diesel::{Connection, PgConnection, RunQueryDsl};
use rand::RngCore;
use serde_json::Value;
use tokend::config::Settings;
use tokend::startup::Application;
use tokend::storage::Database;

pub const SIGNING_KEY: &str = "integration-test-signing-key-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TOKEND_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A database that exists for one test.
pub enum TestDatabase {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        name: String,
        url: String,
    },
}

impl TestDatabase {
    pub fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("tokend.sqlite3").display());
                TestDatabase::Sqlite { _dir: dir, url }
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("tokend_test_{}", random_suffix());
                let mut conn = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("PostgreSQL at {admin} is needed for these tests: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .expect("create test database");
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(base, _)| base);
                let url = format!("{base}/{name}");
                TestDatabase::Postgres { name, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url, .. } => url,
            TestDatabase::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { name, .. } = self {
            if let Ok(mut conn) = PgConnection::establish(&postgres_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:port` of the operational listener, when
    /// `TOKEND__SERVER__ADMIN_ADDRESS` is set.
    pub admin_address: Option<String>,
    pub client: reqwest::Client,
    /// Direct access to the same database, for arranging test situations.
    pub db: Database,
    pub database_url: String,
    // Dropped last: the database outlives the server's use of it. Replicas
    // share their primary's database and own none.
    _database: Option<TestDatabase>,
    /// The settings the app was spawned with (besides `test_env`).
    pub extra: Vec<(String, String)>,
}

pub fn test_env(database_url: &str) -> HashMap<String, String> {
    [
        ("TOKEND__DATABASE__URL", database_url),
        ("TOKEND__SERVER__PORT", "0"),
        ("TOKEND__SERVER__WORKERS", "2"),
        ("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY),
        ("TOKEND__PASSWORD__BCRYPT_COST", "4"),
        ("TOKEND__LOG__LEVEL", "warn"),
        // Brute-force limits would throttle the races and the many logins
        // of one test from 127.0.0.1; tests/api/throttle.rs turns them on.
        ("TOKEND__RATE_LIMIT__ENABLED", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let database = TestDatabase::create(backend);
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    start(database.url().to_owned(), Some(database), extra).await
}

impl TestApp {
    /// A second tokend process-equivalent on the same database, as a
    /// replica behind a load balancer would be.
    pub async fn spawn_replica(&self) -> TestApp {
        start(self.database_url.clone(), None, self.extra.clone()).await
    }

    /// A replica with other settings (later entries win): a rolling restart
    /// with a new configuration.
    pub async fn spawn_replica_with(&self, extra: &[(&str, &str)]) -> TestApp {
        let mut merged = self.extra.clone();
        merged.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        start(self.database_url.clone(), None, merged).await
    }
}

async fn start(
    database_url: String,
    database: Option<TestDatabase>,
    extra: Vec<(String, String)>,
) -> TestApp {
    let mut env = test_env(&database_url);
    env.extend(extra.iter().cloned());
    let settings = Settings::load_from(Path::new("/nonexistent"), &env).expect("test settings");
    let db = Database::new(&settings.database).expect("test database handle");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin_address = app
        .admin_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        client: reqwest::Client::new(),
        db,
        database_url,
        _database: database,
        extra,
    }
}

/// A response reduced to what the contract pins: status, body, headers.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts status and exact body bytes.
    #[track_caller]
    pub fn assert(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (status, body),
            "unexpected reply"
        );
    }

    pub fn token(&self, field: &str) -> String {
        self.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.body))
            .to_owned()
    }
}

impl TestApp {
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("response body");
        Reply {
            status,
            body,
            headers,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)).json(&body))
            .await
    }

    /// A JSON POST with `Authorization: Bearer <token>`.
    pub async fn post_bearer(&self, path: &str, token: &str, body: Value) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("Authorization", format!("Bearer {token}"))
                .json(&body),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.send(
            self.client
                .post(self.url(path))
                .header("Content-Type", content_type)
                .body(body),
        )
        .await
    }

    pub async fn get_me(&self, authorization: Option<&str>) -> Reply {
        let mut request = self.client.get(self.url("/api/user/me/"));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        self.send(request).await
    }

    pub async fn register(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/api/user/register/",
            serde_json::json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.post_json(
            "/api/token/",
            serde_json::json!({ "username": username, "password": password }),
        )
        .await
    }

    pub async fn refresh(&self, refresh: &str) -> Reply {
        self.post_json(
            "/api/token/refresh/",
            serde_json::json!({ "refresh": refresh }),
        )
        .await
    }

    pub async fn verify(&self, token: &str) -> Reply {
        self.post_json("/api/token/verify/", serde_json::json!({ "token": token }))
            .await
    }

    pub async fn blacklist(&self, refresh: &str) -> Reply {
        self.post_json(
            "/api/token/blacklist/",
            serde_json::json!({ "refresh": refresh }),
        )
        .await
    }

    /// Registers and logs in; returns (user id, access, refresh).
    pub async fn user_with_tokens(&self, username: &str, password: &str) -> (i64, String, String) {
        let created = self.register(username, password).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let id = created.json()["id"].as_i64().expect("id");
        let pair = self.login(username, password).await;
        assert_eq!(pair.status, 200, "{}", pair.body);
        (id, pair.token("access"), pair.token("refresh"))
    }

    pub async fn set_active(&self, id: i64, active: bool) {
        let changed = self
            .db
            .run(move |conn| tokend::storage::users::set_active(conn, id, active))
            .await
            .expect("set is_active");
        assert!(changed);
    }

    /// Sessions not revoked (tests look into the tables directly).
    pub async fn session_count_live(&self) -> i64 {
        use diesel::prelude::*;
        use tokend::storage::schema::sessions;
        self.db
            .run(|conn| {
                Ok(sessions::table
                    .filter(sessions::revoked_at.is_null())
                    .count()
                    .get_result::<i64>(conn)?)
            })
            .await
            .expect("count sessions")
    }

    /// `count` expired sessions of `user_id`, each with an expired refresh
    /// token, inserted directly.
    pub async fn insert_dead_sessions(&self, user_id: i64, count: usize) {
        use diesel::prelude::*;
        use tokend::storage::schema::{refresh_tokens, sessions};
        let past = now() - 3600;
        self.db
            .run(move |conn| {
                conn.transaction(|conn| {
                    for i in 0..count {
                        let id = format!("dead{i:028}");
                        diesel::insert_into(sessions::table)
                            .values((
                                sessions::id.eq(&id),
                                sessions::user_id.eq(user_id),
                                sessions::created_at.eq(past - 100),
                                sessions::expires_at.eq(past),
                            ))
                            .execute(conn)?;
                        diesel::insert_into(refresh_tokens::table)
                            .values((
                                refresh_tokens::jti.eq(&id),
                                refresh_tokens::user_id.eq(user_id),
                                refresh_tokens::issued_at.eq(past - 100),
                                refresh_tokens::expires_at.eq(past),
                                refresh_tokens::session_id.eq(&id),
                            ))
                            .execute(conn)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })?;
                Ok(())
            })
            .await
            .expect("insert dead sessions");
    }

    pub async fn refresh_tokens_recorded(&self) -> i64 {
        use diesel::prelude::*;
        use tokend::storage::schema::refresh_tokens;
        self.db
            .run(|conn| Ok(refresh_tokens::table.count().get_result::<i64>(conn)?))
            .await
            .expect("count refresh tokens")
    }

    /// Rows of session `sid` in refresh_tokens (spent or not).
    pub async fn refresh_tokens_of_session(&self, sid: &str) -> i64 {
        use diesel::prelude::*;
        use tokend::storage::schema::refresh_tokens;
        let sid = sid.to_owned();
        self.db
            .run(move |conn| {
                Ok(refresh_tokens::table
                    .filter(refresh_tokens::session_id.eq(sid))
                    .count()
                    .get_result::<i64>(conn)?)
            })
            .await
            .expect("count refresh tokens of a session")
    }

    /// Refresh tokens not revoked whose session is: must stay 0.
    pub async fn live_tokens_in_revoked_sessions(&self) -> i64 {
        use diesel::prelude::*;
        use tokend::storage::schema::{refresh_tokens, sessions};
        self.db
            .run(|conn| {
                let revoked: Vec<String> = sessions::table
                    .filter(sessions::revoked_at.is_not_null())
                    .select(sessions::id)
                    .load(conn)?;
                Ok(refresh_tokens::table
                    .filter(refresh_tokens::revoked_at.is_null())
                    .filter(refresh_tokens::session_id.eq_any(revoked))
                    .count()
                    .get_result::<i64>(conn)?)
            })
            .await
            .expect("count live tokens of revoked sessions")
    }

    pub async fn delete_user(&self, id: i64) {
        let deleted = self
            .db
            .run(move |conn| tokend::storage::users::delete(conn, id))
            .await
            .expect("delete user");
        assert!(deleted);
    }
}

/// The claims of a token, without checking it.
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWS payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// Signs arbitrary claims with the test key (expired or odd tokens).
pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SIGNING_KEY.as_bytes()),
    )
    .expect("sign test claims")
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs each test body once per backend, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Runs a command to completion; panics when it fails.
pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A Python virtualenv with `requirements` installed, built once per target
/// directory (a venv's scripts name its own path, so it is built where it
/// stays) and rebuilt when the requirements change.
/// Whether python3 with venv is here; outside CI a test without it is
/// skipped (false), under CI=true it fails: `purpose` says what needs it.
pub fn have_python(purpose: &str) -> bool {
    let found = Command::new("python3")
        .args(["-c", "import venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "python3 with venv is required in CI for {purpose}"
        );
        eprintln!("SKIPPED: python3 with venv not found");
    }
    found
}

pub fn python_venv(name: &str, requirements: &Path) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let wanted = std::fs::read_to_string(requirements)
        .unwrap_or_else(|e| panic!("{}: {e}", requirements.display()));
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        let created = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        // Debian splits ensurepip (which venv needs) off into python3-venv.
        assert!(
            created,
            "python3 -m venv {} failed: python3 with its venv module is needed \
             (Debian/Ubuntu: apt-get install python3-venv)",
            venv.display()
        );
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(requirements));
        std::fs::write(&stamp, &wanted).expect("venv stamp");
    }
    venv
}

/// A port nothing listens on now, for a server a test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A server process of a test (an example service, the peer): killed when
/// dropped.
pub struct ChildServer {
    pub child: std::process::Child,
    pub url: String,
}

impl ChildServer {
    /// Starts `command` and waits (30 s at most) for the line
    /// `listening on <url>` on its stdout.
    pub fn start(command: &mut Command) -> ChildServer {
        use std::io::BufRead;
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(url) => ChildServer { child, url },
            Err(_) => {
                let _ = child.kill();
                panic!("{command:?} did not print `listening on <url>` within 30 s");
            }
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a change made outside the serving process (another replica, the
/// CLI, a direct database write) may take to be seen by token checks:
/// `cache.ttl_ms` (1 s by default) plus slack.
pub const CACHE_BOUND: std::time::Duration = std::time::Duration::from_millis(2000);

impl TestApp {
    /// GETs /api/user/me/ until it answers `status` and `body`, failing if
    /// that takes longer than `CACHE_BOUND`.
    #[track_caller]
    pub fn me_becomes<'a>(
        &'a self,
        access: &'a str,
        status: u16,
        body: &'a str,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = std::time::Instant::now() + CACHE_BOUND;
            loop {
                let reply = self.get_me(Some(&format!("Bearer {access}"))).await;
                if reply.status == status && reply.body == body {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{caller}: /me still answers {} {} after {CACHE_BOUND:?}",
                    reply.status,
                    reply.body
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A separate `tokend serve` process on a test app's database (what a
/// second replica is), killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub address: String,
}

impl ServerProcess {
    /// With the app's settings, then `extra` (later entries win).
    // The child is reaped in Drop, which clippy's local analysis cannot see.
    #[allow(clippy::zombie_processes)]
    pub async fn start(app: &TestApp, extra: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("serve")
            .envs(app.extra.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .env("TOKEND__DATABASE__URL", &app.database_url)
            .env("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY)
            .env("TOKEND__SERVER__PORT", port.to_string())
            .env("TOKEND_CONFIG_DIR", "/nonexistent")
            .env("TOKEND__LOG__LEVEL", "warn")
            .spawn()
            .expect("start tokend serve");
        let address = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if app
                .client
                .get(format!("{address}/healthz"))
                .send()
                .await
                .is_ok()
            {
                return ServerProcess { child, address };
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("tokend serve did not come up on {address}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

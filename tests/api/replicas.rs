//! Several `tokend serve` processes on one PostgreSQL database behind a real
//! load balancer (nginx, round robin): they must act as one service while
//! replicas are restarted one by one or killed mid-burst.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{free_port, Backend, TestDatabase, SIGNING_KEY};

/// nginx from the system (Debian's package); outside CI a test without it
/// is skipped, under CI=true it fails.
fn nginx_binary() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "nginx is required in CI for the load-balancer tests (apt-get install nginx)"
        );
        eprintln!("SKIPPED: nginx not found");
    }
    found
}

/// One `tokend serve` process on a fixed port.
struct Replica {
    child: Option<Child>,
    port: u16,
    database_url: String,
    log: PathBuf,
    extra: Vec<(&'static str, &'static str)>,
}

impl Replica {
    async fn start(
        database_url: &str,
        log_dir: &Path,
        index: usize,
        extra: &[(&'static str, &'static str)],
    ) -> Replica {
        let mut replica = Replica {
            child: None,
            port: free_port(),
            database_url: database_url.to_owned(),
            log: log_dir.join(format!("tokend-{index}.log")),
            extra: extra.to_vec(),
        };
        replica.spawn().await;
        replica
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts the process (again) and waits until it is ready.
    // The child is reaped in `stop`, `kill` or Drop.
    #[allow(clippy::zombie_processes)]
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log");
        let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("serve")
            .env("TOKEND__DATABASE__URL", &self.database_url)
            .env("TOKEND__JWT__SIGNING_KEY", SIGNING_KEY)
            .env("TOKEND__SERVER__PORT", self.port.to_string())
            .env("TOKEND__SERVER__WORKERS", "1")
            .env("TOKEND__PASSWORD__BCRYPT_COST", "4")
            .env("TOKEND__RATE_LIMIT__ENABLED", "false")
            .env("TOKEND__RATE_LIMIT__CLIENT_IP_HEADER", "X-Forwarded-For")
            .env("TOKEND__DATABASE__POOL_SIZE", "4")
            .env("TOKEND_CONFIG_DIR", "/nonexistent")
            .env("RUST_LOG", "warn")
            .envs(self.extra.iter().copied())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start tokend");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "replica on port {} exited with {status}; log:\n{}",
                    self.port,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "replica on port {} not ready within 30 s; log:\n{}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as an orchestrator stops a container; waits for the exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("replica running");
        crate::helpers::run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
        child.wait().expect("wait for replica")
    }

    /// SIGKILL: the process dies with whatever it was doing.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Requests this replica answered, from its own metrics.
    async fn requests_served(&self, client: &reqwest::Client) -> u64 {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with("tokend_http_requests_total{") && l.contains("/api/token/"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nginx as the load balancer, configured as `deploy/nginx.conf`.
struct Nginx {
    child: Child,
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(binary: PathBuf, upstreams: &[(u16, bool)]) -> Nginx {
        let dir = tempfile::tempdir().expect("nginx dir");
        // Worker processes may run as another user when the tests run as root.
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir(dir.path().join(sub)).expect("nginx temp dir");
        }
        set_mode(dir.path(), 0o777);
        let port = free_port();
        write_config(dir.path(), port, upstreams);
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx {
            child,
            binary,
            dir,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// New configuration, applied by a graceful reload: old workers finish
    /// the requests they have, new ones use the new upstream list.
    async fn reload(&self, upstreams: &[(u16, bool)]) {
        write_config(self.dir.path(), self.port, upstreams);
        crate::helpers::run(
            Command::new(&self.binary)
                .arg("-p")
                .arg(self.dir.path())
                .arg("-c")
                .arg(self.dir.path().join("nginx.conf"))
                .args(["-s", "reload"])
                .stderr(Stdio::null()),
        );
        // The reload is asynchronous: give the new workers time to start.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped load-balancer configuration (`deploy/nginx.conf`, what the
/// compose file runs) with the replicas' addresses for its servers and a
/// local port to listen on, inside a main configuration for a process of
/// the test's own. `upstreams`: (port, taken out of rotation).
fn write_config(dir: &Path, port: u16, upstreams: &[(u16, bool)]) {
    const SHIPPED: &str = include_str!("../../deploy/nginx.conf");
    let shown = dir.display();
    let mut site = String::new();
    let (mut servers, mut listen) = (false, false);
    for line in SHIPPED.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server tokend-") {
            if !servers {
                for (upstream, down) in upstreams {
                    let down = if *down { " down" } else { "" };
                    site.push_str(&format!(
                        "    server 127.0.0.1:{upstream} max_fails=1 fail_timeout=2s{down};\n"
                    ));
                }
                servers = true;
            }
        } else if trimmed == "listen 80;" {
            site.push_str(&format!("    listen 127.0.0.1:{port};\n"));
            listen = true;
        } else {
            site.push_str(line);
            site.push('\n');
        }
    }
    assert!(
        servers && listen,
        "deploy/nginx.conf changed shape: no `server tokend-…` or `listen 80;` line"
    );
    std::fs::write(dir.join("site.conf"), site).expect("site.conf");
    let config = format!(
        "worker_processes 1;\n\
         error_log {shown}/error.log warn;\n\
         pid {shown}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {shown}/body;\n\
           proxy_temp_path {shown}/proxy;\n\
           fastcgi_temp_path {shown}/fastcgi;\n\
           uwsgi_temp_path {shown}/uwsgi;\n\
           scgi_temp_path {shown}/scgi;\n\
           include {shown}/site.conf;\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir").flatten() {
            set_mode(&entry.path(), mode);
        }
    }
}

/// A database, `count` replicas on it and nginx in front.
struct Cluster {
    nginx: Nginx,
    replicas: Vec<Replica>,
    _logs: tempfile::TempDir,
    database: TestDatabase,
}

impl Cluster {
    async fn start(count: usize) -> Option<Cluster> {
        Self::start_with(count, &[]).await
    }

    async fn start_with(count: usize, extra: &[(&'static str, &'static str)]) -> Option<Cluster> {
        let binary = nginx_binary()?;
        let database = TestDatabase::create(Backend::Postgres);
        let logs = tempfile::tempdir().expect("log dir");
        let mut replicas = Vec::new();
        for index in 0..count {
            replicas.push(Replica::start(database.url(), logs.path(), index, extra).await);
        }
        let nginx = Nginx::start(binary, &Self::upstreams(&replicas, None));
        Some(Cluster {
            nginx,
            replicas,
            _logs: logs,
            database,
        })
    }

    fn upstreams(replicas: &[Replica], down: Option<usize>) -> Vec<(u16, bool)> {
        replicas
            .iter()
            .enumerate()
            .map(|(i, r)| (r.port, Some(i) == down))
            .collect()
    }

    /// Rows of the database, counted directly.
    fn count(&self, sql: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn =
            diesel::PgConnection::establish(self.database.url()).expect("connect to test db");
        diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .expect("count")
            .n
    }
}

/// What the clients of a burst saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    retried: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().expect("tally").push(what);
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().expect("tally").clone()
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Result<(u16, Value), String> {
    let response = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("transport: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("body: {e}"))?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Registers and logs in `username` through the balancer: its refresh token.
async fn session(client: &reqwest::Client, base: &Nginx, username: &str) -> String {
    let password = "correct horse battery staple";
    let creds = json!({"username": username, "password": password});
    let (status, body) = post(client, &base.url("/api/user/register/"), creds.clone())
        .await
        .expect("register");
    assert_eq!(status, 201, "register {username}: {body}");
    let (status, body) = post(client, &base.url("/api/token/"), creds)
        .await
        .expect("login");
    assert_eq!(status, 200, "login {username}: {body}");
    body["refresh"].as_str().expect("refresh").to_owned()
}

/// Rotates one session through the balancer until `stop`: every refresh
/// must succeed. With `retry`, a transport error or a 502 (the replica died
/// with the request) is retried with the same token, as a client within the
/// grace window would; without it any failure counts. Returns the last
/// refresh token.
async fn rotate_until(
    client: reqwest::Client,
    url: String,
    mut refresh: String,
    retry: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> String {
    while !stop.load(Ordering::Relaxed) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match post(&client, &url, json!({ "refresh": refresh })).await {
                Ok((200, body)) => {
                    refresh = body["refresh"].as_str().expect("rotated").to_owned();
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok((502 | 504, _)) | Err(_) if retry && attempts < 5 => {
                    tally.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => {
                    tally.fail(format!("refresh attempt {attempts}: {other:?}"));
                    return refresh;
                }
            }
        }
    }
    refresh
}

/// Sessions rotating through the balancer, each in a task of its own,
/// until `finish`.
struct Burst {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    tasks: Vec<tokio::task::JoinHandle<String>>,
}

impl Burst {
    /// `count` new users, each logged in and rotating (`retry`: see
    /// `rotate_until`).
    async fn start(
        client: &reqwest::Client,
        nginx: &Nginx,
        count: usize,
        prefix: &str,
        retry: bool,
    ) -> Burst {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = Vec::new();
        for i in 0..count {
            let refresh = session(client, nginx, &format!("{prefix}{i}")).await;
            tasks.push(tokio::spawn(rotate_until(
                client.clone(),
                nginx.url("/api/token/refresh/"),
                refresh,
                retry,
                stop.clone(),
                tally.clone(),
            )));
        }
        Burst { stop, tally, tasks }
    }

    /// Stops the clients; the last refresh token of each session, which
    /// must still rotate.
    async fn finish(self, client: &reqwest::Client, nginx: &Nginx) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut last = Vec::new();
        for task in self.tasks {
            last.push(task.await.expect("client task"));
        }
        for refresh in last {
            let (status, body) = post(
                client,
                &nginx.url("/api/token/refresh/"),
                json!({ "refresh": refresh }),
            )
            .await
            .expect("final refresh");
            assert_eq!(status, 200, "{body}");
        }
        self.tally
    }
}

/// Rolling restart, as an operator does it with nginx: take a replica out
/// of rotation (graceful reload), stop it (SIGTERM), start it again, put it
/// back; then the next one. Clients rotating through the balancer all the
/// while see no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_through_nginx_fails_no_request() {
    let Some(mut cluster) = Cluster::start(2).await else {
        return;
    };
    // A new connection to nginx per request: a reload closes the idle
    // keep-alive connections of the old workers, and a request racing that
    // close fails in the client before nginx or tokend sees it (clients
    // retry such requests; this test is about the replicas).
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let burst = Burst::start(&client, &cluster.nginx, 8, "rolling", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 0..cluster.replicas.len() {
        let served_before = cluster.replicas[index].requests_served(&client).await;
        assert!(served_before > 0, "replica {index} got no request");
        let down = Cluster::upstreams(&cluster.replicas, Some(index));
        cluster.nginx.reload(&down).await;
        let status = cluster.replicas[index].stop();
        assert!(status.success(), "replica {index} exited with {status}");
        cluster.replicas[index].spawn().await;
        let up = Cluster::upstreams(&cluster.replicas, None);
        cluster.nginx.reload(&up).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            cluster.replicas[index].requests_served(&client).await > 0,
            "restarted replica {index} got no request"
        );
    }
    // Every session is still live and its last token still rotates.
    let tally = burst.finish(&client, &cluster.nginx).await;
    assert_eq!(tally.failures(), Vec::<String>::new(), "failed requests");
    assert!(
        tally.ok.load(Ordering::Relaxed) > 50,
        "too few rotations to mean anything"
    );
    assert_eq!(
        cluster.count("SELECT COUNT(*) AS n FROM sessions WHERE revoked_at IS NOT NULL"),
        0
    );
}

/// `kill -9` of one replica in the middle of a refresh burst through the
/// balancer: clients retry a failed refresh with the same token (inside the
/// grace window) on another replica and go on. No refresh token is lost (the
/// last one of every session still rotates), no session is revoked as
/// stolen, and no token was spent twice (every session has exactly one
/// unspent refresh token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_burst_loses_no_refresh_token() {
    let Some(mut cluster) = Cluster::start(3).await else {
        return;
    };
    let client = reqwest::Client::new();
    let burst = Burst::start(&client, &cluster.nginx, 16, "burst", true).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(cluster.replicas[0].requests_served(&client).await > 0);
    cluster.replicas[0].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tally = burst.finish(&client, &cluster.nginx).await;
    assert_eq!(
        tally.failures(),
        Vec::<String>::new(),
        "refreshes that failed for good"
    );
    let retried = tally.retried.load(Ordering::Relaxed);
    eprintln!(
        "kill -9 mid-burst: {} rotations, {retried} retried",
        tally.ok.load(Ordering::Relaxed)
    );
    // About a third of the 16 clients had a request on the killed replica.
    assert!(
        retried > 0,
        "no request was cut by the kill: the test proved nothing"
    );
    assert_eq!(
        cluster.count("SELECT COUNT(*) AS n FROM sessions WHERE revoked_at IS NOT NULL"),
        0,
        "a session was revoked (reuse detected) although every client only retried"
    );
    // Spent once: every session has exactly one unspent refresh token.
    assert_eq!(
        cluster.count(
            "SELECT COUNT(*) AS n FROM (SELECT session_id FROM refresh_tokens \
             WHERE replaced_by IS NULL AND revoked_at IS NULL \
             GROUP BY session_id HAVING COUNT(*) <> 1) AS twice"
        ),
        0
    );
    assert_eq!(
        cluster.count(
            "SELECT COUNT(DISTINCT session_id) AS n FROM refresh_tokens \
             WHERE replaced_by IS NULL AND revoked_at IS NULL"
        ),
        16
    );
}

/// Replicas started at the same moment on an empty database (a compose
/// `up`, a deployment scaling out) all come up: they take turns applying
/// the migrations instead of racing to create the same tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_all_migrate_and_serve() {
    let database = TestDatabase::create(Backend::Postgres);
    let logs = tempfile::tempdir().expect("log dir");
    let replicas = futures::future::join_all(
        (0..4).map(|index| Replica::start(database.url(), logs.path(), index, &[])),
    )
    .await;
    let client = reqwest::Client::new();
    for replica in &replicas {
        let response = client
            .post(replica.url("/api/user/register/"))
            .json(&json!({"username": format!("r{}", replica.port), "password": "correct horse battery staple"}))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), 201);
    }
}

/// A logout through the balancer is seen by every replica at once: each
/// drops the session from its cache on PostgreSQL's notice. The cache TTL is
/// a minute here, so only the notice can explain a refusal. Measured over
/// 100 logouts: the time from the logout's answer until the last replica
/// refuses the access token (the replicas asked together); p99 within
/// 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_the_balancer_reaches_every_replica_within_100_ms() {
    let Some(cluster) = Cluster::start_with(3, &[("TOKEND__CACHE__TTL_MS", "60000")]).await else {
        return;
    };
    let client = reqwest::Client::new();
    let password = "correct horse battery staple";
    let creds = json!({"username": "alice", "password": password});
    let (status, _) = post(
        &client,
        &cluster.nginx.url("/api/user/register/"),
        creds.clone(),
    )
    .await
    .expect("register");
    assert_eq!(status, 201);
    // A load spike of the shared test machine gets a second measurement:
    // both must miss the bound to fail.
    let mut p99 = Duration::MAX;
    for _ in 0..2 {
        let mut delays = Vec::new();
        for _ in 0..100 {
            let (status, pair) = post(&client, &cluster.nginx.url("/api/token/"), creds.clone())
                .await
                .expect("login");
            assert_eq!(status, 200);
            let access = pair["access"].as_str().expect("access").to_owned();
            // Every replica has the live session cached.
            for replica in &cluster.replicas {
                let (status, body) = post(
                    &client,
                    &replica.url("/api/token/verify/"),
                    json!({ "token": access }),
                )
                .await
                .expect("verify");
                assert_eq!(status, 200, "{body}");
            }
            let (status, _) = post(
                &client,
                &cluster.nginx.url("/api/token/blacklist/"),
                json!({ "refresh": pair["refresh"] }),
            )
            .await
            .expect("logout");
            assert_eq!(status, 200);
            let logged_out = Instant::now();
            let mut pending: Vec<&Replica> = cluster.replicas.iter().collect();
            while !pending.is_empty() {
                let urls: Vec<String> = pending
                    .iter()
                    .map(|replica| replica.url("/api/token/verify/"))
                    .collect();
                let answers = futures::future::join_all(
                    urls.iter()
                        .map(|url| post(&client, url, json!({ "token": access }))),
                )
                .await;
                let mut still = Vec::new();
                for (replica, answer) in pending.into_iter().zip(answers) {
                    let (status, _) = answer.expect("verify");
                    if status == 200 {
                        still.push(replica);
                    } else {
                        assert_eq!(status, 401);
                    }
                }
                pending = still;
                assert!(
                    logged_out.elapsed() < Duration::from_secs(5),
                    "a replica still accepts the token 5 s after the logout"
                );
            }
            delays.push(logged_out.elapsed());
        }
        delays.sort();
        let (p50, worst) = (delays[49], delays[99]);
        p99 = delays[98];
        eprintln!(
            "logout seen by all 3 replicas: p50 {p50:?}, p99 {p99:?}, max {worst:?} (100 trials)"
        );
        if p99 <= Duration::from_millis(100) {
            break;
        }
    }
    assert!(p99 <= Duration::from_millis(100), "p99 {p99:?}");
}

//! Fault injection: tokend on a throwaway PostgreSQL cluster of its own
//! (initdb/pg_ctl on a free port under a temp dir), killed mid-load
//! (`pg_ctl -m immediate`, a crash) and started again.
//!
//! Checked: while the database is away, the endpoints that need it answer
//! 503 with the documented body and `Retry-After` within a bound set by the
//! pool timeout (never a 500, never a hang); token checks the per-process
//! cache can answer keep working; /readyz says not ready and /healthz stays
//! up. When the database is back, tokend recovers by itself. Across the whole
//! run no refresh token is lost or double-spent: every client's chain of
//! tokens is exactly the chain the database recorded, and a rotation either
//! fully happened or not at all.
//!
//! The shared server of the other tests (127.0.0.1:5432) is never touched.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::free_port;
use crate::helpers::{claims, spawn_app_with, Backend, TestApp};

/// tokend's pool timeout in this test (the default is 2000 ms).
const POOL_TIMEOUT_MS: u64 = 1000;

/// The longest any request may take, the database away or not: two pool
/// timeouts plus slack for a loaded 2-core machine. A database call waits
/// at most one pool timeout for a free slot and one for a connection, and
/// /api/user/me/ makes two calls while the database is down (its user, then
/// its session, each falling back to the cached state after the timeout).
/// Observed: ~1 s for a 503, ~2 s for /me. A hang shows up here.
const ANSWER_BOUND: Duration = Duration::from_millis(2 * POOL_TIMEOUT_MS + 500);

/// Client-side timeout: a request not answered by then counts as a hang.
const HANG: Duration = Duration::from_secs(15);

/// Re-presenting a spent refresh token within this window replays its
/// successor; long enough that a rotation whose answer was lost in the
/// crash can be recovered by the client after the restart.
const GRACE_SECS: &str = "120";

/// Pause between two requests of one load task (pacing, not waiting).
const PACE: Duration = Duration::from_millis(20);

const CLIENTS: usize = 10;
const PASSWORD: &str = "pw-faults-123";
const UNAVAILABLE: &str = r#"{"detail":"Service temporarily unavailable, try again later."}"#;
const BLACKLISTED: &str = r#"{"detail":"Token is blacklisted","code":"token_not_valid"}"#;

// ---------------------------------------------------------------------------
// The private PostgreSQL cluster
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster for this test only: its own data directory, socket
/// directory and port. Stopped and removed when dropped, whatever happened.
struct PgCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    /// initdb and start; `None` when no PostgreSQL server binaries are
    /// installed.
    fn start() -> Option<PgCluster> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("tokend-faults-")
            .tempdir()
            .expect("temp dir");
        if running_as_root() {
            // The server refuses to run as root: it runs as `postgres`,
            // which must own the directory.
            checked(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let mut cluster = PgCluster { bin, dir, port: 0 };
        checked(
            cluster
                .command("initdb")
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .arg("-D")
                .arg(cluster.data_dir()),
        );
        // A free port may be taken between finding and binding it: retry.
        for attempt in 1..=3 {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return Some(cluster),
                Err(e) if attempt == 3 => panic!("PostgreSQL does not start: {e}"),
                Err(_) => {}
            }
        }
        unreachable!()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A server program, run as `postgres` when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts the server (crash recovery included) and waits until it
    /// accepts connections.
    fn try_start(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{}\n{}", describe(&output), self.server_log()))
        }
    }

    fn start_again(&self) {
        self.try_start()
            .unwrap_or_else(|e| panic!("PostgreSQL does not restart: {e}"));
    }

    /// Stops the server: `immediate` is a crash (no checkpoint, clients
    /// cut off mid-transaction).
    fn stop(&self, mode: &str) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("pg_ctl stop")
    }

    fn crash(&self) {
        let output = self.stop("immediate");
        assert!(output.status.success(), "{}", describe(&output));
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn create_database(&self, name: &str) -> String {
        use diesel::{Connection, PgConnection, RunQueryDsl};
        let mut conn = PgConnection::establish(&self.url("postgres")).expect("connect");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("create database");
        self.url(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Fails harmlessly when it is not running; the directory goes with
        // the TempDir.
        let _ = self.stop("immediate");
    }
}

/// Where initdb and pg_ctl are: `TOKEND_TEST_PG_BIN`, else the newest
/// /usr/lib/postgresql/*/bin (Debian, Ubuntu), else the PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("TOKEND_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
    })
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a command, output captured; panics with it when the command fails.
fn checked(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        describe(&output)
    );
}

// ---------------------------------------------------------------------------
// Requests and what they got
// ---------------------------------------------------------------------------

/// What a request got back.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<String>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<String> {
        let value: Value = serde_json::from_str(&self.body).ok()?;
        value[name].as_str().map(str::to_owned)
    }
}

/// Sends a request; the answer (or the transport error: a refused
/// connection, a hang past `HANG`) and how long it took.
async fn timed(request: reqwest::RequestBuilder) -> (Result<Answer, String>, Duration) {
    let started = Instant::now();
    let result = async {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            body,
            retry_after,
        })
    }
    .await;
    (result, started.elapsed())
}

/// The requests of the test, with a client-side timeout.
#[derive(Clone)]
struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(app: &TestApp) -> Self {
        Http {
            base: app.address.clone(),
            client: reqwest::Client::builder()
                .timeout(HANG)
                .build()
                .expect("HTTP client"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (Result<Answer, String>, Duration) {
        timed(self.client.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> (Result<Answer, String>, Duration) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        timed(request).await
    }

    async fn refresh(&self, refresh: &str) -> (Result<Answer, String>, Duration) {
        self.post("/api/token/refresh/", json!({ "refresh": refresh }))
            .await
    }

    async fn verify(&self, token: &str) -> (Result<Answer, String>, Duration) {
        self.post("/api/token/verify/", json!({ "token": token }))
            .await
    }

    async fn me(&self, access: &str) -> (Result<Answer, String>, Duration) {
        self.get("/api/user/me/", Some(access)).await
    }

    async fn login(&self, username: &str) -> (Result<Answer, String>, Duration) {
        self.post(
            "/api/token/",
            json!({ "username": username, "password": PASSWORD }),
        )
        .await
    }
}

/// Asserts an answer exactly: status and body (with `Retry-After: 1` when it is
/// the 503 of an API endpoint), within `ANSWER_BOUND`.
#[track_caller]
fn expect(what: &str, got: (Result<Answer, String>, Duration), status: u16, body: &str) -> Answer {
    let (result, elapsed) = got;
    let answer = result.unwrap_or_else(|e| panic!("{what}: no answer after {elapsed:?}: {e}"));
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (status, body),
        "{what}: unexpected answer"
    );
    if body == UNAVAILABLE {
        assert_eq!(
            answer.retry_after.as_deref(),
            Some("1"),
            "{what}: Retry-After"
        );
    }
    assert!(
        elapsed <= ANSWER_BOUND,
        "{what}: answered in {elapsed:?}, more than {ANSWER_BOUND:?}"
    );
    answer
}

/// A user of the load: one session (the login's), its first access token
/// (checked once before the outage, so the cache knows its session and
/// user) and the refresh tokens it received, in order.
struct Client {
    user_id: i64,
    username: String,
    access: String,
    chain: Vec<String>,
}

impl Client {
    fn me_body(&self) -> String {
        json!({ "id": self.user_id, "username": self.username }).to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Refresh,
    Verify,
    Me,
}

/// One request of the load.
#[derive(Debug)]
struct Call {
    kind: Kind,
    client: usize,
    /// The refresh token presented (refresh calls).
    presented: Option<String>,
    started: Instant,
    elapsed: Duration,
    result: Result<Answer, String>,
}

type Log = Arc<Mutex<Vec<Call>>>;

/// Rotates the client's refresh token in a loop until `stop`, always
/// presenting the latest token received (as a client does: after an error
/// it retries with the same token). Returns the tokens received.
async fn rotate_loop(
    http: Http,
    client: usize,
    first: String,
    log: Log,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut received = vec![first];
    while !stop.load(Ordering::SeqCst) {
        let held = received.last().expect("a token").clone();
        let started = Instant::now();
        let (result, elapsed) = http.refresh(&held).await;
        if let Ok(answer) = &result {
            if answer.status == 200 {
                if let Some(next) = answer.field("refresh") {
                    received.push(next);
                }
            }
        }
        log.lock().unwrap().push(Call {
            kind: Kind::Refresh,
            client,
            presented: Some(held),
            started,
            elapsed,
            result,
        });
        tokio::time::sleep(PACE).await;
    }
    received
}

/// Checks the clients' first access tokens (verify, then /me) in turns
/// until `stop`.
async fn check_loop(http: Http, tokens: Vec<(usize, String)>, log: Log, stop: Arc<AtomicBool>) {
    for (client, access) in tokens.iter().cycle() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        for kind in [Kind::Verify, Kind::Me] {
            let started = Instant::now();
            let (result, elapsed) = match kind {
                Kind::Verify => http.verify(access).await,
                _ => http.me(access).await,
            };
            log.lock().unwrap().push(Call {
                kind,
                client: *client,
                presented: None,
                started,
                elapsed,
                result,
            });
            tokio::time::sleep(PACE).await;
        }
    }
}

/// Polls `done` every 50 ms; panics after `limit` with `what` and the
/// current `state`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + limit;
    loop {
        match done() {
            Ok(()) => return,
            Err(state) if Instant::now() >= deadline => {
                panic!("{what}: not done after {limit:?}: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Per client, how many refresh calls started after `since` answered
/// `status`.
fn refreshes_since(log: &Log, since: Instant, status: u16) -> [usize; CLIENTS] {
    let mut counts = [0; CLIENTS];
    for call in log.lock().unwrap().iter() {
        if call.kind == Kind::Refresh
            && call.started >= since
            && call.result.as_ref().is_ok_and(|a| a.status == status)
        {
            counts[call.client] += 1;
        }
    }
    counts
}

// ---------------------------------------------------------------------------
// The phases of the run and what each call may answer
// ---------------------------------------------------------------------------

/// When the database went away and came back.
struct Timeline {
    crash_begin: Instant,
    crash_done: Instant,
    restart_begin: Instant,
    /// /readyz answered 200 again.
    ready: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Answered before the crash began.
    Before,
    /// Sent and answered while the database was down.
    Outage,
    /// Overlapping the crash or the restart.
    Transition,
    /// Sent after /readyz said ready again.
    Recovered,
}

impl Timeline {
    fn phase(&self, call: &Call) -> Phase {
        let end = call.started + call.elapsed;
        if end < self.crash_begin {
            Phase::Before
        } else if call.started > self.crash_done && end < self.restart_begin {
            Phase::Outage
        } else if call.started > self.ready {
            Phase::Recovered
        } else {
            Phase::Transition
        }
    }
}

/// What is wrong with a call of the load, if anything. A refresh answers
/// 200 when the database is up and 503 (documented body, Retry-After)
/// when it is not; the first access tokens verify and serve /me
/// throughout, from the cache during the outage. Always within the bound.
fn violation(call: &Call, phase: Phase, clients: &[Client]) -> Option<String> {
    let answer = match &call.result {
        Ok(answer) => answer,
        Err(e) => return Some(format!("no answer after {:?}: {e}", call.elapsed)),
    };
    if call.elapsed > ANSWER_BOUND {
        return Some(format!(
            "{} after {:?} (bound {ANSWER_BOUND:?})",
            answer.status, call.elapsed
        ));
    }
    let unavailable = answer.status == 503
        && answer.body == UNAVAILABLE
        && answer.retry_after.as_deref() == Some("1");
    let ok = match call.kind {
        Kind::Refresh => {
            let rotated = answer.status == 200
                && answer.field("refresh").is_some()
                && answer.field("access").is_some();
            match phase {
                Phase::Before | Phase::Recovered => rotated,
                Phase::Outage => unavailable,
                Phase::Transition => rotated || unavailable,
            }
        }
        Kind::Verify => answer.status == 200 && answer.body == "{}",
        Kind::Me => answer.status == 200 && answer.body == clients[call.client].me_body(),
    };
    (!ok).then(|| {
        format!(
            "{} {} (Retry-After {:?}) in {:?}",
            answer.status, answer.body, answer.retry_after, call.elapsed
        )
    })
}

/// Counts of (phase, kind, status) and the slowest answer per phase, for
/// the test's output.
fn summary(calls: &[Call], timeline: &Timeline) -> String {
    let mut counts: BTreeMap<(Phase, Kind, u16), usize> = BTreeMap::new();
    let mut slowest: BTreeMap<Phase, Duration> = BTreeMap::new();
    for call in calls {
        let phase = timeline.phase(call);
        let status = call.result.as_ref().map_or(0, |a| a.status);
        *counts.entry((phase, call.kind, status)).or_default() += 1;
        let slow = slowest.entry(phase).or_default();
        *slow = (*slow).max(call.elapsed);
    }
    let mut text = String::new();
    for ((phase, kind, status), n) in counts {
        text += &format!("  {phase:?} {kind:?} {status}: {n}\n");
    }
    for (phase, slow) in slowest {
        text += &format!("  {phase:?}: slowest {slow:?}\n");
    }
    text
}

// ---------------------------------------------------------------------------
// The database's view
// ---------------------------------------------------------------------------

/// A refresh token as recorded.
#[derive(diesel::Queryable)]
struct TokenRow {
    jti: String,
    session_id: Option<String>,
    revoked_at: Option<i64>,
    replaced_by: Option<String>,
}

/// Every refresh token row by jti, and every session's revocation reason
/// (`None`: live), read straight from the cluster.
async fn database_state(url: &str) -> (HashMap<String, TokenRow>, HashMap<String, Option<String>>) {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || read_database_state(&url))
        .await
        .expect("database task")
}

fn read_database_state(url: &str) -> (HashMap<String, TokenRow>, HashMap<String, Option<String>>) {
    use diesel::prelude::*;
    use tokend::storage::schema::{refresh_tokens, sessions};
    let mut conn = PgConnection::establish(url).expect("connect to the test cluster");
    let tokens = refresh_tokens::table
        .select((
            refresh_tokens::jti,
            refresh_tokens::session_id,
            refresh_tokens::revoked_at,
            refresh_tokens::replaced_by,
        ))
        .load::<TokenRow>(&mut conn)
        .expect("refresh tokens")
        .into_iter()
        .map(|row| (row.jti.clone(), row))
        .collect();
    let sessions = sessions::table
        .select((sessions::id, sessions::revoked_at, sessions::revoke_reason))
        .load::<(String, Option<i64>, Option<String>)>(&mut conn)
        .expect("sessions")
        .into_iter()
        .map(|(id, revoked_at, reason)| (id, revoked_at.map(|_| reason.unwrap_or_default())))
        .collect();
    (tokens, sessions)
}

fn jti(token: &str) -> String {
    claims(token)["jti"].as_str().expect("jti").to_owned()
}

fn sid(token: &str) -> String {
    claims(token)["sid"].as_str().expect("sid").to_owned()
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

/// Ten clients rotate their refresh tokens in a loop while their first
/// access tokens are checked; PostgreSQL is crashed mid-load, probed while
/// down, started again; then every answer and the recorded token chains
/// are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_crash_mid_load_loses_and_double_spends_nothing() {
    // Declared first, dropped last: the cluster outlives tokend's use of it.
    let cluster = match tokio::task::spawn_blocking(PgCluster::start)
        .await
        .expect("cluster task")
    {
        Some(cluster) => cluster,
        None if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL server binaries (initdb, pg_ctl) are needed in CI")
        }
        None => {
            eprintln!(
                "skipped: no PostgreSQL server binaries (initdb, pg_ctl); set TOKEND_TEST_PG_BIN"
            );
            return;
        }
    };
    let cluster = Arc::new(cluster);
    let url = cluster.create_database("tokend");
    // The SQLite database spawn_app_with makes is unused: the URL override
    // points tokend at the private cluster.
    let pool_timeout = POOL_TIMEOUT_MS.to_string();
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("TOKEND__DATABASE__URL", url.as_str()),
            ("TOKEND__DATABASE__POOL_TIMEOUT_MS", pool_timeout.as_str()),
            ("TOKEND__JWT__REFRESH_REUSE_GRACE_SECS", GRACE_SECS),
        ],
    )
    .await;
    let http = Http::new(&app);

    // 1. Users with a session each; each first access token is checked once
    // (verify and /me), so the cache knows its session and user. A stranger's
    // tokens are never checked before the outage.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let username = format!("client{i}");
        let (user_id, access, refresh) = app.user_with_tokens(&username, PASSWORD).await;
        let client = Client {
            user_id,
            username,
            access,
            chain: vec![refresh],
        };
        expect("first verify", http.verify(&client.access).await, 200, "{}");
        expect(
            "first /me",
            http.me(&client.access).await,
            200,
            &client.me_body(),
        );
        clients.push(client);
    }
    let (stranger_id, stranger_access, stranger_refresh) =
        app.user_with_tokens("stranger", PASSWORD).await;
    assert_eq!(
        database_state(&url).await.0.len(),
        CLIENTS + 1,
        "tokend records its tokens in the private cluster"
    );

    // 2. The load: every client rotates its refresh token in a loop; two
    // checkers verify the first access tokens and call /me with them.
    let log: Log = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rotators: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(rotate_loop(
                http.clone(),
                i,
                c.chain[0].clone(),
                log.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let checkers: Vec<_> = (0..2)
        .map(|half| {
            let tokens = (0..CLIENTS)
                .filter(|i| i % 2 == half)
                .map(|i| (i, clients[i].access.clone()))
                .collect();
            tokio::spawn(check_loop(http.clone(), tokens, log.clone(), stop.clone()))
        })
        .collect();
    let start = Instant::now();
    wait_until(
        "3 rotations per client before the crash",
        Duration::from_secs(20),
        || {
            let done = refreshes_since(&log, start, 200);
            done.iter()
                .all(|&n| n >= 3)
                .then_some(())
                .ok_or(format!("{done:?}"))
        },
    )
    .await;

    // 3. Crash the database mid-load.
    let crash_begin = Instant::now();
    let crashing = cluster.clone();
    tokio::task::spawn_blocking(move || crashing.crash())
        .await
        .expect("crash task");
    let crash_done = Instant::now();
    eprintln!(
        "PostgreSQL stopped (immediate) in {:?}",
        crash_done - crash_begin
    );

    expect(
        "/healthz during the outage",
        http.get("/healthz", None).await,
        200,
        r#"{"status":"ok"}"#,
    );
    expect(
        "/readyz during the outage",
        http.get("/readyz", None).await,
        503,
        r#"{"status":"unavailable"}"#,
    );
    expect(
        "login during the outage",
        http.login("client0").await,
        503,
        UNAVAILABLE,
    );
    expect(
        "/me with a token never checked before",
        http.me(&stranger_access).await,
        503,
        UNAVAILABLE,
    );
    expect(
        "verify of an access token never checked before",
        http.verify(&stranger_access).await,
        503,
        UNAVAILABLE,
    );
    expect(
        "verify of a refresh token (needs the database)",
        http.verify(&stranger_refresh).await,
        503,
        UNAVAILABLE,
    );
    wait_until(
        "2 refused rotations per client during the outage",
        Duration::from_secs(20),
        || {
            let refused = refreshes_since(&log, crash_done, 503);
            refused
                .iter()
                .all(|&n| n >= 2)
                .then_some(())
                .ok_or(format!("{refused:?}"))
        },
    )
    .await;
    expect(
        "/readyz late in the outage",
        http.get("/readyz", None).await,
        503,
        r#"{"status":"unavailable"}"#,
    );

    // 4. Restart it (same directory and port, crash recovery); tokend is not
    // restarted and must notice by itself.
    let restart_begin = Instant::now();
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.start_again())
        .await
        .expect("restart task");
    let restarted = Instant::now();
    let ready = loop {
        let (result, elapsed) = http.get("/readyz", None).await;
        let answer = result.unwrap_or_else(|e| panic!("/readyz: no answer after {elapsed:?}: {e}"));
        assert!(elapsed <= ANSWER_BOUND, "/readyz answered in {elapsed:?}");
        if answer.status == 200 {
            assert_eq!(answer.body, r#"{"status":"ready"}"#);
            break Instant::now();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "/readyz still {} {} 10 s after PostgreSQL accepts connections again",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "PostgreSQL restarted in {:?}; /readyz 200 {:?} later",
        restarted - restart_begin,
        ready - restarted
    );
    wait_until(
        "3 rotations per client after recovery",
        Duration::from_secs(20),
        || {
            let done = refreshes_since(&log, ready, 200);
            done.iter().all(|&n| n >= 3).then_some(()).ok_or(format!(
                "rotated {done:?}, refused {:?}, failed {:?}",
                refreshes_since(&log, ready, 503),
                refreshes_since(&log, ready, 500)
            ))
        },
    )
    .await;
    let (login, _) = http.login("client0").await;
    let login = login.expect("login after recovery");
    assert_eq!(login.status, 200, "login after recovery: {}", login.body);
    stop.store(true, Ordering::SeqCst);
    for (client, rotator) in clients.iter_mut().zip(rotators) {
        client.chain = rotator.await.expect("rotator");
    }
    for checker in checkers {
        checker.await.expect("checker");
    }

    // 5a. Every call of the load answered as its phase allows.
    let timeline = Timeline {
        crash_begin,
        crash_done,
        restart_begin,
        ready,
    };
    let calls = std::mem::take(&mut *log.lock().unwrap());
    eprintln!("{} calls:\n{}", calls.len(), summary(&calls, &timeline));
    // Replays: rotations whose answer was lost (a 503 to the client) but
    // which had committed, re-presented after the restart (informative:
    // whether the crash hits a commit is down to timing).
    let (metrics, _) = http.get("/metrics", None).await;
    let metrics = metrics.expect("/metrics").body;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("tokend_refreshes_total"))
    {
        eprintln!("  {line}");
    }
    let wrong: Vec<String> = calls
        .iter()
        .filter_map(|call| {
            let phase = timeline.phase(call);
            violation(call, phase, &clients)
                .map(|v| format!("{phase:?} {:?} of client{}: {v}", call.kind, call.client))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} calls answered wrongly, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(15)].join("\n")
    );

    // 5b. No double spend: one presented token never got two successors.
    let mut successors: HashMap<&str, String> = HashMap::new();
    for call in &calls {
        let (Some(presented), Ok(answer)) = (&call.presented, &call.result) else {
            continue;
        };
        if answer.status != 200 {
            continue;
        }
        let next = answer.field("refresh").expect("a refresh token");
        match successors.entry(presented) {
            Entry::Vacant(entry) => {
                entry.insert(next);
            }
            Entry::Occupied(entry) => assert_eq!(
                entry.get(),
                &next,
                "client{}: two successors for one refresh token",
                call.client
            ),
        }
    }

    // 5c. The database kept exactly the end of the chain each client holds
    // (a rotation deletes the older spent ancestors): the token just spent,
    // naming the held one as its successor, and the held one, live. No
    // token they never received, none lost, no session revoked (a
    // half-done rotation would look like reuse).
    let (tokens, sessions) = database_state(&url).await;
    for (i, client) in clients.iter().enumerate() {
        let held: Vec<String> = client.chain.iter().map(|t| jti(t)).collect();
        let kept = &held[held.len().saturating_sub(2)..];
        let session = sid(&client.chain[0]);
        let mut recorded: Vec<&String> = tokens
            .iter()
            .filter(|(_, row)| row.session_id.as_deref() == Some(session.as_str()))
            .map(|(jti, _)| jti)
            .collect();
        recorded.sort();
        let mut expected: Vec<&String> = kept.iter().collect();
        expected.sort();
        assert_eq!(
            recorded, expected,
            "client{i}: the recorded rows are not the end of the chain received"
        );
        if let [spent, last] = kept {
            let row = &tokens[spent];
            assert!(row.revoked_at.is_some(), "client{i}: the parent is live");
            assert_eq!(
                row.replaced_by.as_deref(),
                Some(last.as_str()),
                "client{i}: the parent names another successor"
            );
        }
        let last = held.last().expect("a token");
        assert!(
            tokens[last].revoked_at.is_none(),
            "client{i}: the held token is revoked"
        );
        assert_eq!(
            sessions.get(&session),
            Some(&None),
            "client{i}: session revoked"
        );
    }
    let mut live_per_session: HashMap<&str, usize> = HashMap::new();
    for row in tokens.values().filter(|row| row.revoked_at.is_none()) {
        *live_per_session
            .entry(row.session_id.as_deref().unwrap_or(""))
            .or_default() += 1;
    }
    assert!(
        live_per_session.values().all(|&n| n == 1),
        "a session with several live refresh tokens: {live_per_session:?}"
    );

    // 5d. Over HTTP: every older token of each chain is refused, the last
    // one still verifies and rotates (nothing lost).
    for (i, client) in clients.iter().enumerate() {
        let (held, older) = client.chain.split_last().expect("a token");
        for token in older {
            expect(
                &format!("client{i}: verify of a spent token"),
                http.verify(token).await,
                401,
                BLACKLISTED,
            );
        }
        expect(
            &format!("client{i}: verify of the held token"),
            http.verify(held).await,
            200,
            "{}",
        );
        let (result, _) = http.refresh(held).await;
        let answer = result.expect("answer");
        assert_eq!(
            answer.status, 200,
            "client{i}: the held token does not rotate: {}",
            answer.body
        );
    }
    // Reuse detection still works: an old token revokes the session.
    let client = &clients[0];
    expect(
        "reuse of client0's first token",
        http.refresh(&client.chain[0]).await,
        401,
        BLACKLISTED,
    );
    expect(
        "client0's access token after reuse",
        http.verify(&client.access).await,
        401,
        BLACKLISTED,
    );
    // The stranger, never checked before, works again.
    expect(
        "/me of the stranger after recovery",
        http.me(&stranger_access).await,
        200,
        &json!({ "id": stranger_id, "username": "stranger" }).to_string(),
    );
    drop(app);
    let output = cluster.stop("fast");
    assert!(output.status.success(), "{}", describe(&output));
}

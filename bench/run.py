#!/usr/bin/env python3
"""tokend benchmark: real HTTP load (wrk) against the release binary, and
optionally against the simplejwt peer in the same run.

    bench/run.py                      # tokend on SQLite, 10 s per workload
    bench/run.py --postgres           # also tokend on PostgreSQL
    bench/run.py --peer               # also the simplejwt peer (SQLite, bcrypt 12), with ratios
    bench/run.py --duration 3 --smoke # short run, no thresholds (CI)
    bench/run.py --peer --write       # regenerate BENCHMARKS.md
    bench/run.py --baseline REV --postgres  # only refresh and login, REV's build vs this one, taking turns
    bench/run.py --scale 0,100000,1000000 --postgres  # N users, 2N sessions, 10N refresh tokens loaded first
    bench/run.py --ceilings --postgres      # verify and refresh as ratios of the machine's ceilings
    bench/run.py --profile refresh          # perf flame graph of one workload (bench/profiles/)

Prints one machine-readable line per workload:
    bench target=tokend db=sqlite workload=verify rps=… p50_ms=… p99_ms=… errors=… peak_rss_mb=… cpu_s=…
Workloads (closed loop, load generator on the same machine): verify, me,
refresh (every request a real rotation), login (bcrypt cost 12), storm
(verify measured while 8 connections hammer login); tokend only:
client_credentials (OAuth 2 grant, client_secret_basic, one client made with
`tokend clients create`) and introspect (RFC 7662, a live user access token,
as a configured introspection client). Those two fail the run on any answer
but 200 (introspect: but an active one), and are repeated with the brute-force
limits on (`limits` lines): a right secret must never be throttled.

--baseline REV builds git revision REV's release binary (its own worktree and
target directory under target/; kept per commit and reused) and
runs only refresh and login, on REV's build and this one in turns (baseline,
current, baseline, current…; --rounds each, fresh server and database each
turn, REV's own config defaults; settings REV does not know are left unset):
    bench compare workload=refresh db=sqlite baseline_rps=… current_rps=… ratio=… baseline_cpu_ms_per_req=… current_cpu_ms_per_req=… cpu_ratio=… baseline_runs=… current_runs=… …
(medians; ratio = current / baseline; each turn also prints a `bench
compare_run` line). The server's CPU time per request served (tokend's own,
not PostgreSQL's) is the steadier figure on a shared machine, where
throughput follows the share of the cores the server gets.

--scale N[,N…] fills a database per N (bench/scale.py: N users, 2N sessions,
10N refresh-token rows, a mix of live, spent and expired), then measures the
cold start, verify/me/refresh/login, and refresh alone and beside `tokend
purge` (its rows per second; stopped after PURGE_TOTAL_S); one `bench scale`
line per figure, the tables in target/bench-scale.md (runs of other sizes or
databases kept in target/bench-scale.json are merged; --scale-db picks the
databases).

--ceilings measures tokend's verify and refresh and, in the same run, what
the machine does without tokend: a bare actix-web app checking the HS256
token (examples/bare_verify.rs), the same rotation statements in a bare
SQLite loop and in pgbench (bench/ceilings.py), in --rounds turns; one
`bench ceiling_run` line per pair and turn, then one `bench ceiling` line
per pair with the medians: throughputs, tokend's p99, the ratio and, for
verify, tokend's CPU time per request over the bare app's (the steadier
figure on a shared machine).

--profile WORKLOAD samples tokend with perf (DWARF call stacks) while wrk
drives verify, me or refresh, and writes a flame graph (inferno) and the
hottest functions by self time to bench/profiles/WORKLOAD-DB.svg and .txt.
"""

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import scratch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KEY = "bench-signing-key-0123456789abcdef0123456789abcdef"
USER, PASSWORD = "bench", "bench password 123"
CONNECTIONS = 16
REFRESH_POOL = 48
# --scale: seconds of refresh load beside the purge at most (it then
# finishes alone).
PURGE_LOADED_S = 90
# and in all at most (stopped there: the rate is what is measured).
PURGE_TOTAL_S = 240
# Introspection client (config `introspection.clients`, id:secret), 32+
# characters as the production profile asks.
INTROSPECTOR = ("bench-introspector", "bench-introspection-secret-0123456789abcdef")
# Targets of the OAuth workloads (reported, not enforced: the box varies).
CLIENT_CREDENTIALS_MIN_RPS, CLIENT_CREDENTIALS_MAX_P99_MS = 10_000, 5.0
INTROSPECT_MIN_RPS = 30_000
PG_ADMIN = os.environ.get("TOKEND_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_ready(url, proc=None, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.005)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def tree(pid):
    """pid and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            out = subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout
            todo += [int(x) for x in out.split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / tick


def peak_rss_mb(pids):
    """Sum of the processes' peak resident sets (VmHWM)."""
    kb = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmHWM:"):
                    kb += int(line.split()[1])
        except OSError:
            pass
    return kb / 1024


def wrk_command(script, url, duration, connections, timeout):
    return ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", timeout, "--latency", "-s", os.path.join(HERE, script), url]


def wrk(script, url, duration, connections, env, timeout="2s"):
    full_env = dict(os.environ, BENCH_DIR=HERE, **env)
    out = subprocess.run(wrk_command(script, url, duration, connections, timeout), capture_output=True, text=True, env=full_env)
    return wrk_result(out.stdout, out.stderr)


def wrk_while(script, url, running, env, connections=CONNECTIONS, timeout="2s"):
    """wrk until `running()` turns false (wrk stops and reports on SIGINT)."""
    proc = subprocess.Popen(wrk_command(script, url, 3600, connections, timeout), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, BENCH_DIR=HERE, **env))
    while running() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    return wrk_result(stdout, stderr)


def wrk_result(stdout, stderr):
    for line in stdout.splitlines():
        if line.startswith("WRK "):
            values = dict(kv.split("=") for kv in line[4:].split())
            v = {k: int(x) for k, x in values.items()}
            return {
                "rps": v["requests"] / (v["duration_us"] / 1e6),
                "p50_ms": v["p50_us"] / 1000,
                "p99_ms": v["p99_us"] / 1000,
                "errors": v["errors"],
                "requests": v["requests"],
            }
    raise SystemExit(f"wrk failed: {stdout}\n{stderr}")


class Target:
    """A running server: tokend or the peer."""

    def __init__(self, name, db, base, proc, cold_start_ms=None, cleanup=None, env=None):
        self.name, self.db, self.base, self.proc = name, db, base, proc
        self.cold_start_ms = cold_start_ms
        self.cleanup = cleanup
        self.env = env  # tokend: the server's environment (the CLI reads the same)

    def pids(self):
        return tree(self.proc.pid)

    def stop(self):
        for p in reversed(self.pids()):
            try:
                os.kill(p, signal.SIGTERM)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if self.cleanup:
            self.cleanup()


class Build:
    """A tokend release binary and the config directory of its revision."""

    def __init__(self, label, binary, config_dir, settings=None):
        self.label, self.binary, self.config_dir = label, binary, config_dir
        # An older revision's default.toml, parsed: which settings it knows.
        self.settings = settings

    def knows(self, var):
        """Whether this revision has the setting a TOKEND__SECTION__KEY
        variable sets (always, for the working tree's own build)."""
        if self.settings is None or not var.startswith("TOKEND__"):
            return True
        node = self.settings
        for part in var[len("TOKEND__"):].lower().split("__"):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True


CURRENT = Build("current", os.path.join(ROOT, "target", "release", "tokend"), os.path.join(ROOT, "config"))


def cli_env():
    """The environment for running this build's CLI (migrate, purge…)."""
    return dict(os.environ, TOKEND_CONFIG_DIR=CURRENT.config_dir, TOKEND__JWT__SIGNING_KEY=KEY)


def start_tokend(db, workdir, extra_env=None, build=CURRENT, database_url=None):
    """tokend serving a new database, or `database_url` (kept at stop)."""
    binary = build.binary
    port = free_port()
    env = dict(
        os.environ,
        PORT=str(port),
        TOKEND_CONFIG_DIR=build.config_dir,
        TOKEND__JWT__SIGNING_KEY=KEY,
        TOKEND__PASSWORD__BCRYPT_COST="12",
        TOKEND__RATE_LIMIT__ENABLED="false",
        TOKEND__LOG__LEVEL="warn",
        TOKEND__INTROSPECTION__CLIENTS=":".join(INTROSPECTOR),
    )
    env.update(extra_env or {})
    # An older build ignores a setting it does not know or refuses to start
    # (unknown values of known enums): either way the setting is not its to
    # take, so it is left out, and said so.
    for var in [v for v in env if not build.knows(v)]:
        print(f"bench note: {build.label} does not know {var}; left unset", flush=True)
        del env[var]
    cleanup = None
    if database_url:
        env["DATABASE_URL"] = database_url
    elif db == "sqlite":
        env["DATABASE_URL"] = f"sqlite://{workdir}/tokend.sqlite3"
    else:
        env["DATABASE_URL"], cleanup = scratch.postgres_database(PG_ADMIN, "tokend_bench")

    started = time.time()
    log = os.path.join(workdir, "tokend.log")
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/healthz", proc)
    except SystemExit as e:
        if proc.poll() is None:
            proc.kill()
        if cleanup:
            cleanup()
        raise SystemExit(f"{build.label} tokend ({binary}): {e}\n{open(log).read()[-2000:]}")
    return Target("tokend", db, base, proc, (time.time() - started) * 1000, cleanup, env)


def reference_venv(app):
    """The reference app's virtualenv, shared with the tests (same place, same
    stamp): built once under target/tmp, rebuilt when requirements.txt changes."""
    venv = os.path.join(ROOT, "target", "tmp", "reference-django-venv")
    with open(os.path.join(app, "requirements.txt")) as f:
        wanted = f.read()
    stamp = os.path.join(venv, "requirements.installed")
    if not os.path.exists(stamp) or open(stamp).read() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        if subprocess.run(["python3", "-m", "venv", venv]).returncode != 0:
            # Debian splits ensurepip (which venv needs) off into python3-venv.
            raise SystemExit("--peer: python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)")
        pip = [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["-r", os.path.join(app, "requirements.txt")], check=True)
        with open(stamp, "w") as f:
            f.write(wanted)
    return venv


def start_peer(workdir):
    app = os.path.join(ROOT, "tests", "reference-django")
    run_dir = os.path.join(workdir, "peer")
    port = free_port()
    env = dict(
        os.environ,
        PEER_VENV=reference_venv(app),
        PEER_RUN_DIR=run_dir,
        PEER_SQLITE_PATH=os.path.join(workdir, "peer.sqlite3"),
        PEER_SIGNING_KEY=KEY,
        PEER_HASHER="bcrypt",
        PEER_BCRYPT_ROUNDS="12",
    )
    subprocess.run(["bash", os.path.join(app, "run.sh"), str(port)], env=env, check=True, stdout=subprocess.DEVNULL)
    pid = int(open(os.path.join(run_dir, f"gunicorn-{port}.pid")).read())

    class Master:  # the gunicorn master, started by run.sh in the background
        def __init__(self, pid):
            self.pid = pid

        def wait(self, timeout=None):
            deadline = time.time() + (timeout or 15)
            while time.time() < deadline:
                try:
                    os.kill(self.pid, 0)
                except OSError:
                    return
                time.sleep(0.1)
            raise subprocess.TimeoutExpired("gunicorn", timeout)

        def kill(self):
            os.kill(self.pid, signal.SIGKILL)

        def poll(self):
            return None

    return Target("peer", "sqlite", f"http://127.0.0.1:{port}", Master(pid))


def prepare(target):
    status, body = http("POST", target.base + "/api/user/register/", {"username": USER, "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"{target.name}: register answered {status} {body}")
    return logins(target, REFRESH_POOL + 1)


def logins(target, n):
    """The first pair's access token and the other pairs' refresh tokens."""
    tokens = []
    for _ in range(n):
        status, body = http("POST", target.base + "/api/token/", {"username": USER, "password": PASSWORD})
        if status != 200:
            raise SystemExit(f"{target.name}: login answered {status} {body}")
        tokens.append(body)
    return tokens[0]["access"], [t["refresh"] for t in tokens[1:]]


def basic(client_id, secret):
    """An HTTP Basic credential, id and secret form-encoded first (RFC 6749
    §2.3.1)."""
    from urllib.parse import quote
    return base64.b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()


def create_client(target):
    """One OAuth client, made by the CLI against the target's database."""
    out = subprocess.run([os.path.join(ROOT, "target", "release", "tokend"), "clients", "create", "bench-client", "--scope", "bench:read"],
                         env=target.env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"tokend clients create failed: {out.stderr}")
    creds = json.loads(out.stdout.strip().splitlines()[-1])
    # One grant by hand first: a broken set-up fails here, not as a flood of 401s.
    req = urllib.request.Request(target.base + "/api/oauth/token/", data=b"grant_type=client_credentials", method="POST",
                                 headers={"Authorization": "Basic " + basic(creds["client_id"], creds["client_secret"]),
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
        if r.status != 200 or body.get("token_type") != "Bearer" or body.get("scope") != "bench:read":
            raise SystemExit(f"client credentials grant answered {r.status} {body}")
    return basic(creds["client_id"], creds["client_secret"])


def check_introspection(target, access):
    """The token the workload introspects is active, by hand, before the run."""
    req = urllib.request.Request(target.base + "/api/token/introspect/", data=f"token={access}".encode(), method="POST",
                                 headers={"Authorization": "Basic " + basic(*INTROSPECTOR),
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = json.loads(r.read())
        if r.status != 200 or body.get("active") is not True or body.get("username") != USER:
            raise SystemExit(f"introspection answered {r.status} {body}")


def oauth_workloads(target, duration, env, measure):
    """client_credentials and introspect; any answer but a 200 (introspect:
    but an active token) fails the run: a throughput of refusals means
    nothing."""
    env = dict(env, CLIENT_BASIC=create_client(target), INTROSPECT_BASIC=basic(*INTROSPECTOR))
    check_introspection(target, env["TOKEN"])
    for name, script, path in [("client_credentials", "client_credentials.lua", "/api/oauth/token/"),
                               ("introspect", "introspect.lua", "/api/token/introspect/")]:
        r = measure(name, lambda: wrk(script, target.base + path, duration, CONNECTIONS, env))
        if r["errors"] or r["rps"] <= 0:
            raise SystemExit(f"{target.name}/{target.db}/{name}: {r['errors']} errors or non-200 answers "
                             f"(of {r['rps'] * duration:.0f}); see {target.db} tokend.log")


def write_pool(path, refresh_tokens):
    with open(path, "w") as f:
        f.write("\n".join(refresh_tokens) + "\n")


def wrk_env(target, pool):
    """Registers the benchmark user on `target` and logs it in; the wrk
    scripts' environment: its access token, its refresh tokens in `pool`
    (one per line), its credentials."""
    access, refresh_tokens = prepare(target)
    write_pool(pool, refresh_tokens)
    return {"TOKEN": access, "REFRESH_FILE": pool, "BENCH_USER": USER, "BENCH_PASSWORD": PASSWORD, "WRK_THREADS": "1"}


def run_workloads(target, duration, workdir, core_only=False):
    """Every workload; `core_only`: verify, me, refresh and login."""
    env = wrk_env(target, os.path.join(workdir, f"refresh-{target.name}-{target.db}.txt"))
    results = {}

    def measure(name, fn):
        pids = target.pids()
        cpu0 = cpu_seconds(pids)
        r = fn()
        r["cpu_s"] = cpu_seconds(target.pids()) - cpu0
        r["peak_rss_mb"] = peak_rss_mb(target.pids())
        results[name] = r
        print(
            f"bench target={target.name} db={target.db} workload={name} rps={r['rps']:.1f} p50_ms={r['p50_ms']:.2f} "
            f"p99_ms={r['p99_ms']:.2f} errors={r['errors']} peak_rss_mb={r['peak_rss_mb']:.1f} cpu_s={r['cpu_s']:.2f}",
            flush=True,
        )
        return r

    measure("verify", lambda: wrk("verify.lua", target.base + "/api/token/verify/", duration, CONNECTIONS, env))
    measure("me", lambda: wrk("me.lua", target.base + "/api/user/me/", duration, CONNECTIONS, env))
    measure("refresh", lambda: wrk("refresh.lua", target.base + "/api/token/refresh/", duration, CONNECTIONS, env))
    # 16 closed-loop connections on bcrypt queue for ~16 × verify time ÷ cores:
    # wrk's default 2 s timeout would count that queueing as errors.
    measure("login", lambda: wrk("login.lua", target.base + "/api/token/", duration, CONNECTIONS, env, timeout="10s"))
    if core_only:
        return results

    measure("storm", lambda: storm(target, duration, env))
    if target.name == "tokend":
        oauth_workloads(target, duration, env, measure)
    return results


def run_limits(duration, workdir):
    """client_credentials and introspect again on a tokend with the
    brute-force limits on (production's setting; the other runs turn them
    off): right secrets must pass untouched. A single 429 fails the run."""
    limits_dir = os.path.join(workdir, "limits")
    os.makedirs(limits_dir)
    target = start_tokend("sqlite", limits_dir, {"TOKEND__RATE_LIMIT__ENABLED": "true"})
    results = {}
    try:
        access, _ = prepare_light(target)
        env = {"TOKEN": access, "WRK_THREADS": "1"}

        def measure(name, fn):
            r = fn()
            results[name] = r
            print(f"bench target=tokend db=sqlite limits=on workload={name} rps={r['rps']:.1f} p50_ms={r['p50_ms']:.2f} "
                  f"p99_ms={r['p99_ms']:.2f} errors={r['errors']}", flush=True)
            return r

        oauth_workloads(target, duration, env, measure)
    finally:
        target.stop()
    return results


def prepare_light(target):
    """The benchmark user and one login (under the login rate limit)."""
    status, body = http("POST", target.base + "/api/user/register/", {"username": USER, "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"{target.name}: register answered {status} {body}")
    status, body = http("POST", target.base + "/api/token/", {"username": USER, "password": PASSWORD})
    if status != 200:
        raise SystemExit(f"{target.name}: login answered {status} {body}")
    return body["access"], body["refresh"]


def storm(target, duration, env):
    """verify measured while 8 connections hammer login; also reports the
    logins/s the hammer got meanwhile."""
    cmd = ["wrk", "-t1", "-c8", f"-d{duration + 2}s", "--timeout", "10s", "-s", os.path.join(HERE, "login.lua"), target.base + "/api/token/"]
    hammer = subprocess.Popen(cmd, env=dict(os.environ, BENCH_DIR=HERE, **env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(1)  # let the storm build up
    try:
        r = wrk("verify.lua", target.base + "/api/token/verify/", duration, CONNECTIONS, env)
    finally:
        out, _ = hammer.communicate()
    logins = next((line for line in out.splitlines() if line.startswith("WRK ")), None)
    if logins:
        v = {k: int(x) for k, x in (kv.split("=") for kv in logins[4:].split())}
        r["storm_logins_per_s"] = v["requests"] / (v["duration_us"] / 1e6)
    return r


# Hashing policies compared by --policies: (label, extra environment).
POLICIES = [
    ("2 threads, nice 0 (no priority)", {"TOKEND__PASSWORD__HASHING_NICE": "0"}),
    ("2 threads, nice 10 (default)", {}),
    ("2 threads, nice 19", {"TOKEND__PASSWORD__HASHING_NICE": "19"}),
    ("1 thread, nice 0", {"TOKEND__PASSWORD__HASHING_NICE": "0", "TOKEND__PASSWORD__MAX_CONCURRENT_HASHES": "1"}),
]


def run_policies(duration, workdir):
    """verify idle, login alone and the storm for each hashing policy."""
    rows = []
    for label, extra in POLICIES:
        policy_dir = os.path.join(workdir, f"policy-{len(rows)}")
        os.makedirs(policy_dir)
        target = start_tokend("sqlite", policy_dir, extra)
        try:
            access, refresh_tokens = prepare(target)
            env = {"TOKEN": access, "BENCH_USER": USER, "BENCH_PASSWORD": PASSWORD, "WRK_THREADS": "1"}
            idle = wrk("verify.lua", target.base + "/api/token/verify/", duration, CONNECTIONS, env)
            login = wrk("login.lua", target.base + "/api/token/", duration, CONNECTIONS, env, timeout="10s")
            during = storm(target, duration, env)
        finally:
            target.stop()
        row = {"policy": label, "verify_rps": idle["rps"], "login_rps": login["rps"], "storm_rps": during["rps"],
               "storm_p99_ms": during["p99_ms"], "storm_logins_per_s": during.get("storm_logins_per_s", 0.0)}
        rows.append(row)
        print("bench policy=" + json.dumps(label) + " " + " ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "policy"), flush=True)
    return rows


def baseline_build(rev, home=os.path.join(ROOT, "target", "bench-baseline")):
    """The release binary of git revision `rev`, built in a worktree of its
    own (target/bench-baseline-src, removed afterwards) with a cargo target
    directory of its own (`home`, shared by the baselines: their
    dependencies are built once), so that the working tree's build is left
    alone. The binary and the revision's config directory are kept in
    `home`/<commit>/ and reused."""
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", rev + "^{commit}"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"--baseline: {rev} is not a revision of this repository")
    commit = out.stdout.strip()
    tree = os.path.join(ROOT, "target", "bench-baseline-src")
    kept = os.path.join(home, commit)
    binary, config_dir = os.path.join(kept, "tokend"), os.path.join(kept, "config")
    if not os.path.exists(binary):
        print(f"bench note: building the baseline {rev} ({commit[:10]}) in {tree}", flush=True)
        # What an interrupted build may have left.
        subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(["git", "worktree", "add", "--quiet", "--detach", tree, commit], cwd=ROOT, check=True)
        try:
            subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--target-dir", home], cwd=tree, check=True)
            shutil.rmtree(kept, ignore_errors=True)
            # The configuration files of that revision: its defaults.
            shutil.copytree(os.path.join(tree, "config"), os.path.join(kept + ".part", "config"))
            shutil.copy2(os.path.join(home, "release", "tokend"), os.path.join(kept + ".part", "tokend"))
            os.rename(kept + ".part", kept)
        finally:
            shutil.rmtree(kept + ".part", ignore_errors=True)
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=ROOT, check=False)
    import tomllib
    with open(os.path.join(config_dir, "default.toml"), "rb") as f:
        settings = tomllib.load(f)
    return Build(f"baseline {rev} ({commit[:10]})", binary, config_dir, settings)


# Workloads compared by --baseline, in the order they run on each server.
COMPARED = ("refresh", "login")


def compare(baseline, dbs, duration, rounds, workdir):
    """refresh and login on the baseline and on the current build, taking
    turns (baseline, current, baseline, current…) so that a change in the
    machine's load hits both alike; each turn is a fresh server and
    database. Returns {(workload, db): {"baseline": [rps…], "current": [rps…]}},
    the server's CPU milliseconds per request in the same shape, and the
    errors, {(workload, db): {"baseline": n, "current": n}}."""
    rps = {(w, db): {"baseline": [], "current": []} for db in dbs for w in COMPARED}
    cpu = {key: {"baseline": [], "current": []} for key in rps}
    errors = {key: {"baseline": 0, "current": 0} for key in rps}
    for db in dbs:
        for round_ in range(1, rounds + 1):
            for side, build in (("baseline", baseline), ("current", CURRENT)):
                run_dir = os.path.join(workdir, f"compare-{db}-{round_}-{side}")
                os.makedirs(run_dir)
                target = start_tokend(db, run_dir, build=build)
                try:
                    env = wrk_env(target, os.path.join(run_dir, "refresh.txt"))
                    for w in COMPARED:
                        done0, cpu0 = served(target, w), cpu_seconds(target.pids())
                        if w == "refresh":
                            r = wrk("refresh.lua", target.base + "/api/token/refresh/", duration, CONNECTIONS, env)
                        else:
                            r = wrk("login.lua", target.base + "/api/token/", duration, CONNECTIONS, env, timeout="10s")
                        if r["rps"] <= 0:
                            raise SystemExit(f"{build.label}/{db}/{w}: not a single answer; see {run_dir}/tokend.log")
                        # The server's CPU time per request it served: what a request
                        # costs, whatever share of the shared cores the server got.
                        # Requests still in flight when wrk stopped (up to 16 logins of
                        # ~40) are finished and counted by the server: it is waited for.
                        done = settled(target, w)
                        cpu_ms = (cpu_seconds(target.pids()) - cpu0) * 1000 / max(done - done0, 1)
                        # Errors (timeouts on a loaded machine) are counted, not fatal.
                        rps[(w, db)][side].append(r["rps"])
                        cpu[(w, db)][side].append(cpu_ms)
                        errors[(w, db)][side] += r["errors"]
                        print(f"bench compare_run round={round_} side={side} db={db} workload={w} rps={r['rps']:.1f} "
                              f"p50_ms={r['p50_ms']:.2f} p99_ms={r['p99_ms']:.2f} errors={r['errors']} cpu_ms_per_req={cpu_ms:.3f} "
                              f"load1={os.getloadavg()[0]:.2f}", flush=True)
                finally:
                    target.stop()
    return rps, cpu, errors


# The server's counter of the requests each compared workload makes succeed
# (GET /metrics; the baseline has the same).
SERVED = {"login": 'tokend_logins_total{outcome="ok"}', "refresh": 'tokend_refreshes_total{outcome="rotated"}'}


def served(target, workload):
    with urllib.request.urlopen(target.base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(SERVED[workload] + " "):
                return int(float(line.split()[1]))
    raise SystemExit(f"{target.base}/metrics has no {SERVED[workload]}")


def settled(target, workload, seconds=60):
    """The workload's counter once the server is idle again (under 5 % of a
    core for half a second): a login still hashing when wrk stopped may
    not move the counter for seconds on a loaded machine."""
    last, deadline = cpu_seconds(target.pids()), time.time() + seconds
    while time.time() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(target.pids())
        if now - last < 0.025:
            break
        last = now
    return served(target, workload)


def median(values):
    v = sorted(values)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2


def compare_main(args):
    """--baseline: only the comparison, then one `bench compare` line per
    workload and database."""
    if args.rounds < 2:
        raise SystemExit("--rounds: at least 2 (turns are what make the ratio fair)")
    baseline = baseline_build(args.baseline)
    dbs = ["sqlite"] + (["postgres"] if args.postgres else [])
    load_before = os.getloadavg()
    print(f"bench compare baseline={json.dumps(baseline.label)} rounds={args.rounds} duration_s={args.duration} "
          f"load_average_before={'/'.join(f'{x:.2f}' for x in load_before)}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        rps, cpu, errors = compare(baseline, dbs, args.duration, args.rounds, workdir)
    print(f"bench compare load_average_after={'/'.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for (w, db), sides in rps.items():
        b, c = median(sides["baseline"]), median(sides["current"])
        b_cpu, c_cpu = median(cpu[(w, db)]["baseline"]), median(cpu[(w, db)]["current"])
        print(f"bench compare workload={w} db={db} baseline_rps={b:.1f} current_rps={c:.1f} ratio={c / b:.3f} "
              f"baseline_cpu_ms_per_req={b_cpu:.3f} current_cpu_ms_per_req={c_cpu:.3f} cpu_ratio={c_cpu / b_cpu:.3f} "
              f"baseline_runs={','.join(f'{x:.1f}' for x in sides['baseline'])} "
              f"current_runs={','.join(f'{x:.1f}' for x in sides['current'])} "
              f"baseline_errors={errors[(w, db)]['baseline']} current_errors={errors[(w, db)]['current']}", flush=True)


def bare_verify(binary, env, duration):
    """The bare actix-web + HS256 app's verify: wrk's result with its CPU
    seconds."""
    port = free_port()
    bare = subprocess.Popen([binary], env=dict(os.environ, PORT=str(port), TOKEND__JWT__SIGNING_KEY=KEY),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/token/verify/"
        wait_ready(url, bare)
        cpu0 = cpu_seconds([bare.pid])
        r = wrk("verify.lua", url, duration, CONNECTIONS, env)
        r["cpu_s"] = cpu_seconds([bare.pid]) - cpu0
        if r["errors"]:
            raise SystemExit(f"the bare verify app refused the token ({r['errors']} errors)")
        return r
    finally:
        bare.terminate()
        bare.wait()


def ceilings_main(args):
    """verify against a bare actix-web + HS256 app, refresh against the
    bare rotation (bench/ceilings.py), each pair in the same round, rounds
    taking turns; the medians of each pair's figures and ratios."""
    import ceilings
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "bare_verify"], cwd=ROOT, check=True)
    bare_binary = os.path.join(ROOT, "target", "release", "examples", "bare_verify")
    env = cli_env()
    runs = {}  # (db, workload) -> [(tokend's result, ceiling's rps, ratio of CPU per request or None)]
    with tempfile.TemporaryDirectory() as workdir:
        for turn in range(args.rounds):
            for db in ["sqlite"] + (["postgres"] if args.postgres else []):
                turn_dir = os.path.join(workdir, f"{db}-{turn}")
                os.makedirs(turn_dir)
                target = start_tokend(db, turn_dir)
                try:
                    wenv = wrk_env(target, os.path.join(turn_dir, "refresh-ceiling.txt"))
                    ours = {}
                    for w, script, path in ([("verify", "verify.lua", "/api/token/verify/")] if db == "sqlite" else []) + \
                            [("refresh", "refresh.lua", "/api/token/refresh/")]:
                        cpu0 = cpu_seconds(target.pids())
                        ours[w] = wrk(script, target.base + path, args.duration, CONNECTIONS, wenv)
                        ours[w]["cpu_s"] = cpu_seconds(target.pids()) - cpu0
                        if ours[w]["errors"]:
                            raise SystemExit(f"tokend {w} on {db}: {ours[w]['errors']} errors")
                finally:
                    target.stop()
                ceiling = {}
                if db == "sqlite":
                    bare = bare_verify(bare_binary, wenv, args.duration)
                    cpu_ratio = (ours["verify"]["cpu_s"] / ours["verify"]["requests"]) / (bare["cpu_s"] / bare["requests"])
                    ceiling["verify"] = (bare["rps"], cpu_ratio)
                    ceiling["refresh"] = (ceilings.sqlite_rotations(CURRENT.binary, env, args.duration), None)
                else:
                    ceiling["refresh"] = (ceilings.postgres_rotations(CURRENT.binary, env, PG_ADMIN, args.duration), None)
                for w, (rps, cpu_ratio) in ceiling.items():
                    runs.setdefault((db, w), []).append((ours[w], rps, cpu_ratio))
                    cpu = f" cpu_per_request_ratio={cpu_ratio:.3f}" if cpu_ratio else ""
                    print(f"bench ceiling_run round={turn + 1} db={db} workload={w} tokend_rps={ours[w]['rps']:.0f} "
                          f"ceiling_rps={rps:.0f} ratio={ours[w]['rps'] / rps:.3f}{cpu}", flush=True)
    for (db, w), pairs in runs.items():
        cpu = [c for _, _, c in pairs if c]
        cpu = f" cpu_per_request_ratio={median(cpu):.3f}" if cpu else ""
        print(f"bench ceiling db={db} workload={w} tokend_rps={median([o['rps'] for o, _, _ in pairs]):.0f} "
              f"tokend_p99_ms={median([o['p99_ms'] for o, _, _ in pairs]):.2f} "
              f"ceiling_rps={median([c for _, c, _ in pairs]):.0f} "
              f"ratio={median([o['rps'] / c for o, c, _ in pairs]):.3f}{cpu} rounds={len(pairs)}", flush=True)
    print(f"bench ceiling: machine: {machine()}")


PROFILE_WORKLOADS = {"verify": ("verify.lua", "/api/token/verify/"), "me": ("me.lua", "/api/user/me/"),
                     "refresh": ("refresh.lua", "/api/token/refresh/")}


def profile_main(args):
    """perf samples (with DWARF call stacks) of tokend serving one workload
    under wrk, as a flame graph (inferno) and the hottest functions by self
    time, in bench/profiles/WORKLOAD-DB.{svg,txt}. The binary is the
    `profiling` build: release with line tables and symbols kept."""
    for tool in ("perf", "inferno-collapse-perf", "inferno-flamegraph"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (apt-get install linux-perf; cargo install inferno)")
    subprocess.run(["cargo", "build", "--profile", "profiling", "--quiet", "--bin", "tokend"], cwd=ROOT, check=True)
    build = Build("profiling", os.path.join(ROOT, "target", "profiling", "tokend"), CURRENT.config_dir)
    out_dir = os.path.join(HERE, "profiles")
    os.makedirs(out_dir, exist_ok=True)
    script, path = PROFILE_WORKLOADS[args.profile]
    db = "postgres" if args.postgres else "sqlite"
    with tempfile.TemporaryDirectory() as workdir:
        target = start_tokend(db, workdir, build=build)
        try:
            env = wrk_env(target, os.path.join(workdir, "refresh.txt"))
            data = os.path.join(workdir, "perf.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384", "-p",
                                     str(target.proc.pid), "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            r = wrk(script, target.base + path, args.duration, CONNECTIONS, env)
            perf.send_signal(signal.SIGINT)
            perf.wait()
        finally:
            target.stop()
        print(f"bench profile db={db} workload={args.profile} rps={r['rps']:.0f} p99_ms={r['p99_ms']:.2f} "
              f"errors={r['errors']} (under perf)", flush=True)
        samples = subprocess.run(["perf", "script", "--no-inline", "-i", data], capture_output=True, check=True).stdout
        folded = subprocess.run(["inferno-collapse-perf"], input=samples, capture_output=True, check=True).stdout
        name = os.path.join(out_dir, f"{args.profile}-{db}")
        title = f"tokend {args.profile} on {db}, {r['rps']:.0f} req/s under perf ({machine()})"
        with open(name + ".svg", "wb") as f:
            subprocess.run(["inferno-flamegraph", "--title", title, "--width", "1600"], input=folded, stdout=f, check=True)
        top = subprocess.run(["perf", "report", "-i", data, "--no-children", "--no-inline", "--sort", "dso,symbol",
                              "--percent-limit", "0.7", "--stdio", "-g", "none"], capture_output=True, text=True, check=True)
        with open(name + ".txt", "w") as f:
            f.write(f"# {title}\n# self time by function, over all of tokend's threads\n")
            f.write("\n".join(l for l in top.stdout.splitlines() if l.strip() and not l.startswith("#")) + "\n")
        print(f"bench profile: {name}.svg, {name}.txt")


def scale_run(db, n, duration, workdir):
    """One database filled with `n` users (bench/scale.py), then: cold
    start, verify/me/refresh/login, and `tokend purge` beside a live refresh
    load (its wall time, and refresh throughput and p99 while it runs)."""
    import scale
    env = cli_env()
    if db == "sqlite":
        path = os.path.join(workdir, f"scale-{n}.sqlite3")
        url = f"sqlite://{path}"
        drop = lambda: [os.remove(path + x) for x in ("", "-wal", "-shm") if os.path.exists(path + x)]
    else:
        url, drop = scratch.postgres_database(PG_ADMIN, "tokend_scale")
    env["DATABASE_URL"] = url
    target = None
    try:
        subprocess.run([CURRENT.binary, "migrate"], env=env, check=True, capture_output=True)
        started = time.time()
        if n:
            (scale.load_sqlite(path, n, int(started)) if db == "sqlite" else scale.load_postgres(url, n, int(started)))
            os.sync()  # the load's writes on disk before anything is measured
        sizes = scale.sizes_sqlite(path) if db == "sqlite" else scale.sizes_postgres(url)
        mb = {t: sizes.get(t, 0) / 1e6 for t in ("users", "sessions", "refresh_tokens")}
        print(f"bench scale db={db} n={n} load_s={time.time() - started:.0f} users_mb={mb['users']:.0f} "
              f"sessions_mb={mb['sessions']:.0f} refresh_tokens_mb={mb['refresh_tokens']:.0f} "
              f"total_mb={sum(sizes.values()) / 1e6:.0f}", flush=True)
        target = start_tokend(db, workdir, database_url=url)
        print(f"bench scale db={db} n={n} cold_start_ms={target.cold_start_ms:.0f}", flush=True)
        results = run_workloads(target, duration, workdir, core_only=True)
        for w, r in results.items():
            print(f"bench scale db={db} n={n} workload={w} rps={r['rps']:.1f} p99_ms={r['p99_ms']:.2f} errors={r['errors']}", flush=True)

        # Refresh alone, then beside `tokend purge` (for at most
        # PURGE_LOADED_S; the purge then finishes alone), each from a fresh
        # pool of tokens.
        pools = []
        for use in ("idle", "purge"):
            pools.append(os.path.join(workdir, f"refresh-{use}.txt"))
            write_pool(pools[-1], logins(target, REFRESH_POOL + 1)[1])
        idle = wrk("refresh.lua", target.base + "/api/token/refresh/", duration, CONNECTIONS,
                   {"REFRESH_FILE": pools[0], "WRK_THREADS": "1"})
        out = os.path.join(workdir, "purge.out")
        purge = {}

        def running():
            if "proc" not in purge:
                time.sleep(1)  # a second of load first
                purge["started"] = time.time()
                purge["proc"] = subprocess.Popen([CURRENT.binary, "purge"], env=target.env, stdout=open(out, "w"),
                                                 stderr=subprocess.STDOUT)
            return purge["proc"].poll() is None and time.time() - purge["started"] < PURGE_LOADED_S

        during = wrk_while("refresh.lua", target.base + "/api/token/refresh/", running,
                           {"REFRESH_FILE": pools[1], "WRK_THREADS": "1"})
        loaded_s = time.time() - purge["started"]
        try:
            purge["proc"].wait(timeout=max(PURGE_TOTAL_S - loaded_s, 1))
        except subprocess.TimeoutExpired:
            purge["proc"].terminate()  # the rate is measured; the rest would take long
            purge["proc"].wait()
        purge["seconds"] = time.time() - purge["started"]
        lines = open(out).read().splitlines()
        batches = [l for l in lines if l.startswith("purged a batch")]
        rows = sum(int(l.split(": ", 1)[1].split()[0]) + int(l.split(", ")[1].split()[0]) for l in batches)
        done = next((l for l in lines if l.startswith("purge done")), None)
        ended = 2 * n // 5  # see bench/scale.py: their tokens all expired, two of five elsewhere
        expected_tokens = 5 * ended + 2 * (2 * n - ended)
        if done is None:
            if purge["proc"].returncode not in (0, -signal.SIGTERM):
                raise SystemExit(f"tokend purge failed: {lines[-5:]}")
            removed = f"{rows} of {expected_tokens + ended} rows in {PURGE_TOTAL_S} s (stopped there)"
        else:
            removed = done.split(": ", 1)[-1]
            expected = f"{expected_tokens} refresh token(s), {ended} session(s),"
            if purge["proc"].returncode != 0 or not removed.startswith(expected):
                raise SystemExit(f"tokend purge removed {removed!r}, expected {expected!r}… ({lines[-3:]})")
        batches = len(batches)
        wal = os.path.getsize(path + "-wal") / 1e6 if db == "sqlite" and os.path.exists(path + "-wal") else 0
        print(f"bench scale db={db} n={n} purge_s={purge['seconds']:.1f} batches={batches} loaded_s={loaded_s:.0f} "
              f"refresh_rps_idle={idle['rps']:.1f} refresh_rps_during={during['rps']:.1f} "
              f"refresh_p99_ms_idle={idle['p99_ms']:.2f} refresh_p99_ms_during={during['p99_ms']:.2f} "
              f"errors_during={during['errors']} wal_mb_after={wal:.0f}", flush=True)
        print(f"bench scale db={db} n={n} purged: {removed}", flush=True)
        return {"n": n, "db": db, "sizes": sizes, "cold_start_ms": target.cold_start_ms, "workloads": results,
                "purge_s": purge["seconds"], "loaded_s": loaded_s, "purged_rows": rows, "idle": idle, "during": during, "removed": removed, "wal_mb": wal}
    finally:
        if target:
            target.stop()
            shutil.copy(os.path.join(workdir, "tokend.log"), os.path.join(ROOT, "target", f"bench-scale-{db}-{n}.log"))
        drop()


def scale_main(args):
    """Results go to target/bench-scale.json, merged with the runs of other
    sizes or databases already there (a run replaces its own size's)."""
    sizes = [int(x) for x in args.scale.split(",")]
    dbs = args.scale_db.split(",") if args.scale_db else ["sqlite"] + (["postgres"] if args.postgres else [])
    results = os.path.join(ROOT, "target", "bench-scale.json")
    runs = json.load(open(results)) if os.path.exists(results) else []
    with tempfile.TemporaryDirectory() as workdir:
        for db in dbs:
            for n in sizes:
                run = scale_run(db, n, args.duration, workdir)
                runs = [r for r in runs if (r["db"], r["n"]) != (db, n)] + [run]
                runs.sort(key=lambda r: (r["db"] != "sqlite", r["n"]))
                with open(results, "w") as f:
                    json.dump(runs, f, indent=1)
    table = scale_table(runs)
    with open(os.path.join(ROOT, "target", "bench-scale.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"bench scale: results in target/bench-scale.json and .md; machine: {machine()}")


def scale_table(runs):
    """Markdown: throughput and p99 per workload and size, each as a ratio
    to the empty database of the same run; then sizes, cold start, purge."""
    empty = {r["db"]: r for r in runs if r["n"] == 0}
    lines = ["| db | N | workload | rps | p99 ms | rps vs N = 0 |", "| --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        for w, v in r["workloads"].items():
            base = empty.get(r["db"], r)["workloads"][w]["rps"]
            lines.append(f"| {r['db']} | {r['n']:,} | {w} | {v['rps']:.0f} | {v['p99_ms']:.2f} | {v['rps'] / base:.2f} |")
    lines += ["", "| db | N | users MB | sessions MB | refresh_tokens MB | total MB | cold start ms | purge s | rows purged "
              "| refresh rps idle / during purge | refresh p99 ms idle / during purge | purge s under load | purge rows/s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        mb = lambda t: r["sizes"].get(t, 0) / 1e6
        idle, during = r["idle"], r["during"]
        lines.append(f"| {r['db']} | {r['n']:,} | {mb('users'):.0f} | {mb('sessions'):.0f} | {mb('refresh_tokens'):.0f} | "
                     f"{sum(r['sizes'].values()) / 1e6:.0f} | {r['cold_start_ms']:.0f} | {r['purge_s']:.1f} | "
                     f"{', '.join(r['removed'].split(', ')[:2])} | {idle['rps']:.0f} / {during['rps']:.0f} | "
                     f"{idle['p99_ms']:.1f} / {during['p99_ms']:.1f} | {r['loaded_s']:.0f} | "
                     f"{r['purged_rows'] / max(r['purge_s'], 1e-9):.0f} |")
    return "\n".join(lines) + "\n"


def add_timing_users(target, workdir):
    """Accounts whose stored hashes cost differently to check: an older
    bcrypt cost (made by the CLI at cost 10) and an imported Django PBKDF2
    hash (Django 5.2's 1,000,000 iterations), inserted next to the native
    cost-12 user. SQLite only (the timing runs there)."""
    import base64, hashlib, sqlite3
    env = dict(os.environ, TOKEND_CONFIG_DIR=os.path.join(ROOT, "config"), TOKEND__JWT__SIGNING_KEY=KEY,
               TOKEND__PASSWORD__BCRYPT_COST="10", DATABASE_URL=f"sqlite://{workdir}/tokend.sqlite3",
               TOKEND__LOG__LEVEL="warn")
    subprocess.run([os.path.join(ROOT, "target", "release", "tokend"), "users", "create", "older-cost"],
                   input=PASSWORD + "\n", text=True, env=env, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    salt = "benchsaltbenchsalt"
    digest = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt.encode(), 1_000_000)
    django = f"pbkdf2_sha256$1000000${salt}${base64.b64encode(digest).decode()}"
    with sqlite3.connect(os.path.join(workdir, "tokend.sqlite3")) as db:
        db.execute("INSERT INTO users (username, password_hash, is_active, created_at) VALUES (?, ?, 1, 0)",
                   ("imported-pbkdf2", django))


def timing(target, n, workdir):
    """Login time must not tell accounts apart: an unknown user, a native
    user, an older-cost user and an imported PBKDF2 user, each with a wrong
    password, take the same time (medians within 10 %) and get the same
    answer."""
    add_timing_users(target, workdir)
    accounts = {"unknown": "no-such-user-" + str(os.getpid()), "native": USER,
                "older_cost": "older-cost", "imported_pbkdf2": "imported-pbkdf2"}
    samples = {kind: [] for kind in accounts}
    bodies = set()
    for round_ in range(n + 1):
        for kind, username in accounts.items():
            t0 = time.perf_counter()
            status, body = http("POST", target.base + "/api/token/", {"username": username, "password": "not the password"})
            took = (time.perf_counter() - t0) * 1000
            assert status == 401, (kind, status, body)
            bodies.add(json.dumps(body, sort_keys=True))
            if round_ > 0:  # the first round lets the server see every kind once
                samples[kind].append(took)
    medians = {kind: sorted(v)[len(v) // 2] for kind, v in samples.items()}
    spread = max(medians.values()) / min(medians.values())
    print(f"bench target={target.name} db={target.db} timing " +
          " ".join(f"{kind}_p50_ms={ms:.1f}" for kind, ms in medians.items()) +
          f" spread={spread:.3f} bodies={'same' if len(bodies) == 1 else 'DIFFERENT'}", flush=True)
    if len(bodies) != 1:
        raise SystemExit("accounts answer differently: " + str(bodies))
    if spread > 1.10:
        raise SystemExit(f"login times tell accounts apart: slowest/fastest median = {spread:.3f} > 1.10")
    return medians["native"]


def reset_timing(target, n):
    """A password-reset request must not tell known addresses from unknown
    ones: both answer 200 with the same body in the same time (the request
    only queues a job; the lookup happens after the answer). Medians of n
    interleaved requests each; fails when they differ by more than 50 %
    and 1 ms (the requests are ~1 ms, so smaller gaps are noise)."""
    status, body = http("POST", target.base + "/api/user/register/",
                        {"username": "reset-known", "password": PASSWORD, "email": "known@bench.example"})
    assert status == 201, (status, body)
    emails = {"known": "known@bench.example", "unknown": "unknown@bench.example"}
    samples = {kind: [] for kind in emails}
    bodies = set()
    for round_ in range(n + 1):
        for kind, email in emails.items():
            t0 = time.perf_counter()
            status, body = http("POST", target.base + "/api/auth/password/reset/", {"email": email})
            took = (time.perf_counter() - t0) * 1000
            assert status == 200, (kind, status, body)
            bodies.add(json.dumps(body, sort_keys=True))
            if round_ > 0:
                samples[kind].append(took)
    medians = {kind: sorted(v)[len(v) // 2] for kind, v in samples.items()}
    spread = max(medians.values()) / min(medians.values())
    gap = max(medians.values()) - min(medians.values())
    print(f"bench target={target.name} db={target.db} reset_timing " +
          " ".join(f"{kind}_p50_ms={ms:.2f}" for kind, ms in medians.items()) +
          f" spread={spread:.3f} bodies={'same' if len(bodies) == 1 else 'DIFFERENT'}", flush=True)
    if len(bodies) != 1:
        raise SystemExit("reset requests answer differently: " + str(bodies))
    if spread > 1.5 and gap > 1.0:
        raise SystemExit(f"reset request times tell addresses apart: {medians}")
    return medians


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per workload (default 10)")
    ap.add_argument("--postgres", action="store_true", help="also run tokend on PostgreSQL")
    ap.add_argument("--peer", action="store_true", help="also run the simplejwt peer and print ratios")
    ap.add_argument("--smoke", action="store_true", help="CI mode: just check that every workload runs")
    ap.add_argument("--write", action="store_true", help="write BENCHMARKS.md")
    ap.add_argument("--policies", action="store_true", help="also compare bcrypt hashing policies (verify idle, login, storm)")
    ap.add_argument("--timing", type=int, metavar="N", default=0,
                    help="also time N logins each for an unknown user and a wrong password (enumeration check)")
    ap.add_argument("--baseline", metavar="REV",
                    help="instead of the workloads: refresh and login on git revision REV's release build and on this one, "
                         "taking turns, with the ratio of their medians (SQLite; PostgreSQL too with --postgres)")
    ap.add_argument("--rounds", type=int, default=3, help="turns per build with --baseline, turns with --ceilings (default 3)")
    ap.add_argument("--scale", metavar="N[,N…]",
                    help="instead of the workloads: for each N, a database filled with N users, 2N sessions and 10N "
                         "refresh tokens; cold start, verify/me/refresh/login, and `tokend purge` under refresh load")
    ap.add_argument("--ceilings", action="store_true",
                    help="instead of the workloads: verify and refresh as ratios of what the machine does without tokend "
                         "(a bare actix-web HS256 app; the same rotation in a bare SQLite loop, and in pgbench with --postgres)")
    ap.add_argument("--profile", choices=sorted(PROFILE_WORKLOADS), metavar="WORKLOAD",
                    help="instead of the workloads: perf profile of tokend serving WORKLOAD (verify, me or refresh; "
                         "PostgreSQL with --postgres) as bench/profiles/WORKLOAD-DB.svg (flame graph) and .txt")
    ap.add_argument("--scale-db", metavar="DB[,DB]", help="with --scale: sqlite, postgres or both (default: as --postgres says)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    if args.baseline:
        return compare_main(args)
    if args.scale:
        return scale_main(args)
    if args.ceilings:
        return ceilings_main(args)
    if args.profile:
        return profile_main(args)

    all_results = {}
    with tempfile.TemporaryDirectory() as workdir:
        plan = [("tokend", "sqlite")] + ([("tokend", "postgres")] if args.postgres else []) + ([("peer", "sqlite")] if args.peer else [])
        for name, db in plan:
            target = start_tokend(db, workdir) if name == "tokend" else start_peer(workdir)
            try:
                if target.cold_start_ms is not None:
                    print(f"bench target={name} db={db} cold_start_ms={target.cold_start_ms:.0f}", flush=True)
                all_results[(name, db)] = (run_workloads(target, args.duration, workdir), target.cold_start_ms)
                if name == "tokend" and db == "sqlite":
                    # One wrong-password login, alone, is one bcrypt verify.
                    bcrypt_seconds = timing(target, max(args.timing, 3), workdir) / 1000
                    reset_timing(target, max(args.timing * 20, 50))
            finally:
                target.stop()

        policies = run_policies(args.duration, workdir) if args.policies else []
        limits = run_limits(args.duration, workdir)

    ours = all_results[("tokend", "sqlite")][0]
    idle, stormed = ours["verify"]["rps"], ours["storm"]["rps"]
    print(f"bench ratio storm_vs_idle_verify={stormed / idle:.3f}")
    for line in oauth_summary(all_results, limits):
        print("bench oauth " + line)
    if ("peer", "sqlite") in all_results:
        theirs = all_results[("peer", "sqlite")][0]
        for w in (w for w in ours if w in theirs):
            print(f"bench ratio workload={w} tokend_over_peer={ours[w]['rps'] / max(theirs[w]['rps'], 1e-9):.1f}")
    if args.smoke:
        bad = [f"{n}/{d}/{w}" for (n, d), (r, _) in all_results.items() for w, v in r.items() if v["rps"] <= 0]
        if bad:
            raise SystemExit(f"workloads without a single answer: {bad}")
    if args.write:
        write_report(all_results, args, policies, bcrypt_seconds, limits)


def oauth_targets(workload, r):
    """(target text, met?) of an OAuth workload's result."""
    if workload == "client_credentials":
        return (f"≥ {CLIENT_CREDENTIALS_MIN_RPS:,} rps, p99 ≤ {CLIENT_CREDENTIALS_MAX_P99_MS:g} ms",
                r["rps"] >= CLIENT_CREDENTIALS_MIN_RPS and r["p99_ms"] <= CLIENT_CREDENTIALS_MAX_P99_MS)
    return f"≥ {INTROSPECT_MIN_RPS:,} rps", r["rps"] >= INTROSPECT_MIN_RPS


def oauth_summary(all_results, limits):
    """One line per OAuth workload and backend: rps, p99, ratio to the verify
    workload of the same server in the same run, target met or not."""
    lines = []
    for (name, db), (results, _) in all_results.items():
        if name != "tokend":
            continue
        for w in ("client_credentials", "introspect"):
            r = results[w]
            _, met = oauth_targets(w, r)
            lines.append(f"db={db} workload={w} rps={r['rps']:.0f} p99_ms={r['p99_ms']:.2f} "
                         f"over_verify={r['rps'] / results['verify']['rps']:.3f} target={'met' if met else 'MISSED'}")
    verify = all_results[("tokend", "sqlite")][0]["verify"]["rps"]
    for w, r in limits.items():
        lines.append(f"db=sqlite limits=on workload={w} rps={r['rps']:.0f} p99_ms={r['p99_ms']:.2f} "
                     f"over_verify={r['rps'] / verify:.3f} errors={r['errors']}")
    return lines


def write_report(all_results, args, policies, bcrypt_seconds, limits):
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run.py" + (" --postgres" if args.postgres else "") + (" --peer" if args.peer else "") + (" --policies" if args.policies else "") + f" --duration {args.duration} --write`;",
        "rerun it to refresh this file. wrk `-t1 -c16`, closed loop, load generator on the same cores.",
        f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| target | db | workload | rps | p50 ms | p99 ms | errors | peak RSS MB | server CPU s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (name, db), (results, _) in all_results.items():
        for w, r in results.items():
            lines.append(f"| {name} | {db} | {w} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {r['peak_rss_mb']:.1f} | {r['cpu_s']:.1f} |")
    lines += ["", "Cold start to ready (process start + migrations): " + ", ".join(
        f"{n}/{d} {c:.0f} ms" for (n, d), (_, c) in all_results.items() if c is not None) + "."]
    ours = all_results[("tokend", "sqlite")][0]
    lines += ["", f"Verify during a login storm: {ours['storm']['rps'] / ours['verify']['rps'] * 100:.0f} % of idle verify throughput "
              f"(p99 {ours['storm']['p99_ms']:.1f} ms), while the storm's 8 connections got "
              f"{ours['storm'].get('storm_logins_per_s', 0):.1f} logins/s."]
    if ("peer", "sqlite") in all_results:
        theirs = all_results[("peer", "sqlite")][0]
        lines += ["", "Ratios, tokend over the simplejwt peer (same run): " + ", ".join(
            f"{w} {ours[w]['rps'] / max(theirs[w]['rps'], 1e-9):.1f}×" for w in ours) + "."]
    login_target = os.cpu_count() / bcrypt_seconds
    lines += ["", f"Login at bcrypt cost 12: {ours['login']['rps']:.1f}/s = {ours['login']['rps'] / login_target * 100:.0f} % of "
              f"cores ÷ one bcrypt-12 verify ({os.cpu_count()} ÷ {bcrypt_seconds * 1000:.0f} ms = {login_target:.1f}/s; the verify time is "
              "the median of sequential wrong-password logins on the idle server, in the same run)."]
    lines += ["", "## OAuth clients: client credentials grant and introspection", "",
              "`client_credentials`: `POST /api/oauth/token/`, `grant_type=client_credentials`, client_secret_basic, one client "
              "made with `tokend clients create` (every grant reads the client row). `introspect`: `POST /api/token/introspect/` "
              "about a live user access token, as a configured introspection client (session and user read from the database). "
              "Every answer must be a 200 (introspect: `\"active\":true`), or the run fails. Same wrk shape as above; "
              "ratio: over the verify workload of the same server in the same run.", "",
              "| db | workload | brute-force limits | rps | p50 ms | p99 ms | errors | × verify | target | met |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (name, db), (results, _) in all_results.items():
        if name != "tokend":
            continue
        for w in ("client_credentials", "introspect"):
            r = results[w]
            target, met = oauth_targets(w, r)
            lines.append(f"| {db} | {w} | off | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
                         f"{r['rps'] / results['verify']['rps']:.2f} | {target} | {'yes' if met else 'no'} |")
    for w, r in limits.items():
        target, met = oauth_targets(w, r)
        lines.append(f"| sqlite | {w} | on | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | "
                     f"{r['rps'] / ours['verify']['rps']:.2f} | {target} | {'yes' if met else 'no'} |")
    if policies:
        lines += ["", "## Hashing policies (verify during a login storm vs logins)", "",
                  "| policy | verify idle rps | login rps (alone) | verify during storm rps | % of idle | storm p99 ms | logins/s during storm |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in policies:
            lines.append(f"| {p['policy']} | {p['verify_rps']:.0f} | {p['login_rps']:.1f} | {p['storm_rps']:.0f} | "
                         f"{p['storm_rps'] / p['verify_rps'] * 100:.0f} % | {p['storm_p99_ms']:.1f} | {p['storm_logins_per_s']:.1f} |")
    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        lines += ["", open(analysis).read().rstrip()]
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()

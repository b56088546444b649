"""What this machine can do without tokend, for `bench/run.py --ceilings`:
the same refresh-token rotation tokend runs (its statements, on a database
tokend migrated), with nothing around it.

- SQLite: one thread, Python's sqlite3, WAL with synchronous=NORMAL as
  tokend sets it, a transaction per rotation (tokend's SQLite writes take
  turns on one connection too).
- PostgreSQL: pgbench, 16 clients (tokend's pool), the same transaction,
  each client rotating its own session's chain.

A rotation, as src/storage/refresh_tokens.rs `rotate` runs it: lock the
session (PostgreSQL), spend the presented token (conditional UPDATE), check
session and user while recording the session's last use (UPDATE …
RETURNING), delete the spent ancestors, insert the successor; commit.
"""

import os
import sqlite3
import subprocess
import tempfile
import time
import uuid

import scratch


def _v7():
    ms = int(time.time() * 1000)
    rand = uuid.uuid4().hex
    return f"{ms:012x}7{rand[:3]}8{rand[4:19]}"


def _seed(conn, now):
    """One user with one live session holding one live token; returns
    (session id, live jti)."""
    sid, jti = _v7(), _v7()
    conn.execute("INSERT INTO users (username, password_hash, is_active, created_at) VALUES ('ceiling', 'x', TRUE, ?)", (now,))
    conn.execute("INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?, 1, ?, ?)", (sid, now, now + 86400))
    conn.execute("INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, session_id, access_jti, access_expires_at) "
                 "VALUES (?, 1, ?, ?, ?, ?, ?)", (jti, now, now + 86400, sid, _v7(), now + 300))
    return sid, jti


ROTATION_SQLITE = [
    "UPDATE refresh_tokens SET revoked_at = ?, replaced_by = ? WHERE jti = ? AND user_id = 1 AND session_id = ? AND revoked_at IS NULL",
    "UPDATE sessions SET last_used_at = ? WHERE id = ? AND user_id = 1 AND revoked_at IS NULL AND expires_at > ? "
    "AND EXISTS (SELECT 1 FROM users WHERE id = 1 AND is_active) RETURNING expires_at",
    "DELETE FROM refresh_tokens WHERE session_id = ? AND user_id = 1 AND revoked_at IS NOT NULL AND jti != ?",
    "INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, session_id, access_jti, access_expires_at) "
    "VALUES (?, 1, ?, ?, ?, ?, ?)",
]


def sqlite_rotations(binary, env, seconds):
    """Rotations per second of one thread on a tokend-migrated file."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ceiling.sqlite3")
        subprocess.run([binary, "migrate"], env=dict(env, DATABASE_URL=f"sqlite://{path}"), check=True, capture_output=True)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.executescript("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        now = int(time.time())
        sid, jti = _seed(conn, now)
        spend, touch, prune, insert = ROTATION_SQLITE
        done, started = 0, time.time()
        while time.time() - started < seconds:
            successor = _v7()
            conn.execute("BEGIN")
            if conn.execute(spend, (now, successor, jti, sid)).rowcount != 1:
                raise SystemExit("ceiling: a rotation found its token spent")
            if conn.execute(touch, (now, sid, now)).fetchone() is None:
                raise SystemExit("ceiling: the session is not live")
            conn.execute(prune, (sid, jti))
            conn.execute(insert, (successor, now, now + 86400, sid, _v7(), now + 300))
            conn.execute("COMMIT")
            jti, done = successor, done + 1
        rate = done / (time.time() - started)
        conn.close()
        return rate


PGBENCH_SCRIPT = r"""
SELECT session_id AS sid, jti AS cur FROM ceiling_chains WHERE client = :client_id \gset
SELECT md5(random()::text) AS next, md5(random()::text) AS access \gset
BEGIN;
SELECT id FROM sessions WHERE id = :sid AND user_id = 1 FOR NO KEY UPDATE;
UPDATE refresh_tokens SET revoked_at = :now, replaced_by = :next WHERE jti = :cur AND user_id = 1 AND session_id = :sid AND revoked_at IS NULL;
UPDATE sessions SET last_used_at = :now WHERE id = :sid AND user_id = 1 AND revoked_at IS NULL AND expires_at > :now AND EXISTS (SELECT 1 FROM users WHERE id = 1 AND is_active) RETURNING expires_at;
DELETE FROM refresh_tokens WHERE session_id = :sid AND user_id = 1 AND revoked_at IS NOT NULL AND jti <> :cur;
INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, session_id, access_jti, access_expires_at) VALUES (:next, 1, :now, :now + 86400, :sid, :access, :now + 300);
COMMIT;
UPDATE ceiling_chains SET jti = :next WHERE client = :client_id;
"""


def postgres_rotations(binary, env, admin_url, seconds, clients=16):
    """Transactions per second of pgbench running the rotation, `clients`
    connections, on a new tokend-migrated database. The chain bookkeeping
    (which token is each client's live one) is two statements outside the
    transaction, a cost tokend does not have: the ceiling is, if anything,
    low."""
    url, drop = scratch.postgres_database(admin_url, "tokend_ceiling")
    try:
        subprocess.run([binary, "migrate"], env=dict(env, DATABASE_URL=url), check=True, capture_output=True)
        now = int(time.time())
        rows = []
        sql = [f"INSERT INTO users (id, username, password_hash, is_active, created_at) VALUES (1, 'ceiling', 'x', TRUE, {now});",
               "CREATE TABLE ceiling_chains (client INT PRIMARY KEY, session_id TEXT, jti TEXT);"]
        for client in range(clients):
            sid, jti = _v7(), _v7()
            sql.append(f"INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ('{sid}', 1, {now}, {now + 86400});")
            sql.append(f"INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, session_id, access_jti, access_expires_at) "
                       f"VALUES ('{jti}', 1, {now}, {now + 86400}, '{sid}', '{_v7()}', {now + 300});")
            rows.append(f"({client}, '{sid}', '{jti}')")
        sql.append(f"INSERT INTO ceiling_chains VALUES {', '.join(rows)};")
        subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c", "\n".join(sql)], check=True, capture_output=True)
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(PGBENCH_SCRIPT)
            script = f.name
        out = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "1", "-T", str(seconds), "-D", f"now={now}",
                              "-f", script, url], capture_output=True, text=True)
        os.unlink(script)
        if out.returncode != 0:
            raise SystemExit(f"pgbench failed: {out.stdout}\n{out.stderr}")
        failed = [l for l in out.stdout.splitlines() if l.startswith("number of failed transactions")]
        if failed and not failed[0].split(":")[1].strip().startswith("0 "):
            raise SystemExit(f"pgbench: {failed[0]}")
        # Every transaction spent its chain's live token: one live token per
        # chain, each with its spent parent (older ancestors deleted).
        live, rows = (int(x) for x in subprocess.run(
            ["psql", url, "-qAt", "-F", " ", "-c",
             "SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FROM refresh_tokens"],
            check=True, capture_output=True, text=True).stdout.split())
        if (live, rows) != (clients, 2 * clients):
            raise SystemExit(f"pgbench rotations went wrong: {live} live tokens, {rows} rows for {clients} chains")
        tps = next(l for l in out.stdout.splitlines() if l.startswith("tps ="))
        return float(tps.split("=")[1].split()[0])
    finally:
        drop()

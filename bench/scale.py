"""Fills a migrated tokend database with N users, 2N sessions and 10N
refresh-token rows, inside the database (SQL only, no Python loop), for the
`--scale` benchmark; and reports the size of each table.

The mix, with `now` the load's instant:
- users `scale-1` … `scale-N` (ids 1…N; the benchmark's own users come after);
- two sessions per user: 20 % ended an hour ago, 10 % revoked an hour ago
  (kept: the purge keeps revoked sessions for days), the rest live for two
  more weeks;
- five refresh tokens per session, a rotation chain six hours apart: the
  four oldest spent (revoked_at and replaced_by set), the newest live; in a
  live session the two oldest have expired, in an ended one all five.
So the purge's share is 40 % of the sessions' tokens in live sessions and the
ended sessions with all their tokens: 5.2 N tokens and 0.4 N sessions.

Rows go in in the order tokend would have written them (by instant), with
ids as tokend makes them (time-ordered). Secondary indexes are dropped during the load and made again from their own
definitions after it (minutes instead of an hour); the primary keys stay, so
the jti and session-id indexes are built by inserts as in service.
"""

import sqlite3
import subprocess

# Ids as tokend makes them: UUIDv7 hex of the row's instant `t` (unix
# seconds; a random millisecond in it), 74 random bits.
V7_SQLITE = ("(printf('%012x', {t} * 1000 + abs(random()) % 1000) || '7' || substr(lower(hex(randomblob(2))), 2) "
             "|| '8' || substr(lower(hex(randomblob(8))), 2))")
V7_POSTGRES = ("(lpad(to_hex({t}::bigint * 1000 + floor(random() * 1000)::bigint), 12, '0') || '7' "
               "|| substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))")

# Any well-formed bcrypt hash: nobody logs in as a loaded user.
HASH = "$2b$12$" + "scaleloadedusernotloggedin.abcdefghijklmnopqrstuvw"[:53]


def load_sqlite(path, n, now):
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000; PRAGMA foreign_keys = OFF;")
    indexes = c.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('users', 'sessions', 'refresh_tokens')").fetchall()
    c.execute("BEGIN")
    for name, _ in indexes:
        c.execute(f"DROP INDEX {name}")
    c.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO users (id, username, password_hash, is_active, created_at) "
        "SELECT i, 'scale-' || i, ?, 1, ? FROM s", (n, HASH, now - 30 * 86400))
    c.execute(
        "WITH RECURSIVE s(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM s WHERE j < ?) "
        "INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at, revoke_reason, user_agent, ip, last_used_at) "
        f"SELECT {V7_SQLITE.format(t='(? - 86400 * (j % 20) - 86400)')}, (j - 1) % ? + 1, ? - 86400 * (j % 20) - 86400, "
        "CASE WHEN j % 5 = 0 THEN ? - 3600 ELSE ? + 14 * 86400 END, "
        "CASE WHEN j % 10 = 1 THEN ? - 3600 END, CASE WHEN j % 10 = 1 THEN 'logout' END, "
        "'Mozilla/5.0 (X11; Linux x86_64) scale', '203.0.113.' || (j % 250), ? - 60 FROM s ORDER BY j % 20 DESC, j",
        (2 * n, now, max(n, 1), now, now, now, now, now))
    c.execute(
        "INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, revoked_at, replaced_by, session_id, access_jti, access_expires_at) "
        f"SELECT {V7_SQLITE.format(t='(? - (5 - k) * 21600)')}, s.user_id, ? - (5 - k) * 21600, "
        "CASE WHEN s.expires_at <= ? THEN s.expires_at - (4 - k) * 3600 "
        "     WHEN k < 2 THEN ? - (2 - k) * 3600 ELSE ? + 86400 - (4 - k) * 21600 END, "
        f"CASE WHEN k < 4 THEN ? - (4 - k) * 21600 END, CASE WHEN k < 4 THEN {V7_SQLITE.format(t='(? - (4 - k) * 21600)')} END, "
        f"s.id, {V7_SQLITE.format(t='(? - (5 - k) * 21600)')}, ? - (5 - k) * 21600 + 300 "
        "FROM sessions s CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4) ORDER BY 3, s.rowid",
        (now, now, now, now, now, now, now, now, now))
    for _, sql in indexes:
        c.execute(sql)
    c.execute("COMMIT")
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def psql(url, sql):
    out = subprocess.run(["psql", url, "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {out.stderr}")
    return out.stdout


def load_postgres(url, n, now):
    indexes = [l.split("|", 1) for l in psql(url, (
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename IN ('users', 'sessions', 'refresh_tokens') "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)")).splitlines() if l]
    v7 = V7_POSTGRES.format
    script = ["BEGIN;", "SET LOCAL maintenance_work_mem = '1GB';"]
    script += [f"DROP INDEX {name};" for name, _ in indexes]
    script += [
        f"INSERT INTO users (id, username, password_hash, is_active, created_at) "
        f"SELECT i, 'scale-' || i, '{HASH}', TRUE, {now - 30 * 86400} FROM generate_series(1, {n}) i;",
        f"INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at, revoke_reason, user_agent, ip, last_used_at) "
        f"SELECT {v7(t=f'({now} - 86400 * (j % 20) - 86400)')}, (j - 1) % {max(n, 1)} + 1, {now} - 86400 * (j % 20) - 86400, "
        f"CASE WHEN j % 5 = 0 THEN {now - 3600} ELSE {now + 14 * 86400} END, "
        f"CASE WHEN j % 10 = 1 THEN {now - 3600} END, CASE WHEN j % 10 = 1 THEN 'logout' END, "
        f"'Mozilla/5.0 (X11; Linux x86_64) scale', '203.0.113.' || (j % 250), {now - 60} FROM generate_series(1, {2 * n}) j ORDER BY j % 20 DESC, j;",
        f"INSERT INTO refresh_tokens (jti, user_id, issued_at, expires_at, revoked_at, replaced_by, session_id, access_jti, access_expires_at) "
        f"SELECT {v7(t=f'({now} - (5 - k) * 21600)')}, s.user_id, {now} - (5 - k) * 21600, "
        f"CASE WHEN s.expires_at <= {now} THEN s.expires_at - (4 - k) * 3600 "
        f"     WHEN k < 2 THEN {now} - (2 - k) * 3600 ELSE {now} + 86400 - (4 - k) * 21600 END, "
        f"CASE WHEN k < 4 THEN {now} - (4 - k) * 21600 END, CASE WHEN k < 4 THEN {v7(t=f'({now} - (4 - k) * 21600)')} END, "
        f"s.id, {v7(t=f'({now} - (5 - k) * 21600)')}, {now} - (5 - k) * 21600 + 300 FROM sessions s CROSS JOIN generate_series(0, 4) k ORDER BY 3, s.created_at;",
    ]
    script += [d + ";" for _, d in indexes]
    script += [f"SELECT setval(pg_get_serial_sequence('users', 'id'), {max(n, 1)});", "COMMIT;"]
    psql(url, "\n".join(script))
    # What autovacuum does soon after such a load anyway; then the load's
    # dirty pages written out, so that the measurements after it do not pay
    # for the load's checkpoint.
    psql(url, "VACUUM (ANALYZE) users, sessions, refresh_tokens")
    psql(url, "CHECKPOINT")


def sizes_sqlite(path):
    """Bytes per table, its indexes included."""
    c = sqlite3.connect(path)
    rows = c.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')").fetchall()
    owner = {name: tbl for name, tbl in rows}
    total = {}
    for name, size in c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
        table = owner.get(name, name)
        total[table] = total.get(table, 0) + size
    c.close()
    return total


def sizes_postgres(url):
    out = psql(url, "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relkind = 'r' "
                    "AND relnamespace = 'public'::regnamespace")
    return {name: int(size) for name, size in (l.split("|") for l in out.splitlines() if l)}

#!/usr/bin/env bash
# Smoke test of the release binary exactly as the Dockerfile runs it
# (`tokend serve` with TOKEND_CONFIG_DIR and the database in a data dir), on
# SQLite and on PostgreSQL: the README's curl session, `tokend migrate`,
# `tokend healthcheck`, and a clean exit 0 on SIGTERM.
#   scripts/smoke.sh [path/to/tokend]   (default target/release/tokend)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/release/tokend}")"
PG_ADMIN="${TOKEND_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
WORK="$(mktemp -d)"
PGDB="tokend_smoke_$$"
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "SMOKE FAIL: $*" >&2; [ -f "$WORK/log" ] && tail -20 "$WORK/log" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

expect() { # expect STATUS CURL-ARGS...  (body in $WORK/body)
  local want="$1"; shift
  local got
  got=$(curl -s -o "$WORK/body" -w '%{http_code}' "$@") || fail "curl $*"
  [ "$got" = "$want" ] || fail "$* -> $got (wanted $want): $(cat "$WORK/body")"
}

run_session() { # run_session LABEL DATABASE_URL
  local label="$1" url="$2" port base start ready_ms
  port=$(free_port)
  base="http://127.0.0.1:$port"
  # The image's environment (Dockerfile ENV), with a fresh database.
  export TOKEND_CONFIG_DIR="$PWD/config" TOKEND__SERVER__HOST=127.0.0.1 PORT="$port" \
    TOKEND__DATABASE__URL="$url" TOKEND__PASSWORD__BCRYPT_COST=10 TOKEND__LOG__FORMAT=json
  "$BIN" migrate >/dev/null || fail "$label: tokend migrate"
  start=$(date +%s%N)
  (cd "$WORK" && exec "$BIN" serve) >"$WORK/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "$base/healthz" && break
    sleep 0.01
  done
  ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
  "$BIN" healthcheck || fail "$label: tokend healthcheck"
  expect 200 "$base/readyz"
  # /metrics: on the admin listener when there is one; never on the API
  # port in production.
  if [ -n "${TOKEND__SERVER__ADMIN_ADDRESS:-}" ]; then
    expect 404 "$base/metrics"
    expect 200 "http://$TOKEND__SERVER__ADMIN_ADDRESS/metrics"
  elif [ "${TOKEND_PROFILE:-}" = production ]; then
    expect 404 "$base/metrics"
  else
    expect 200 "$base/metrics"
  fi
  expect 201 -X POST "$base/api/user/register/" -H 'Content-Type: application/json' \
    -d '{"username":"alice","password":"correct horse battery staple"}'
  expect 200 -X POST "$base/api/token/" -H 'Content-Type: application/json' \
    -d '{"username":"alice","password":"correct horse battery staple"}'
  local access refresh
  access=$(json_field access <"$WORK/body")
  refresh=$(json_field refresh <"$WORK/body")
  expect 200 "$base/api/user/me/" -H "Authorization: Bearer $access"
  grep -q '"username":"alice"' "$WORK/body" || fail "$label: me body $(cat "$WORK/body")"
  expect 200 -X POST "$base/api/token/refresh/" -H 'Content-Type: application/json' \
    -d "{\"refresh\":\"$refresh\"}"
  cp "$WORK/body" "$WORK/rotated"
  # Presented again at once (a second tab): the same pair, not a new branch.
  expect 200 -X POST "$base/api/token/refresh/" -H 'Content-Type: application/json' \
    -d "{\"refresh\":\"$refresh\"}"
  cmp -s "$WORK/body" "$WORK/rotated" || fail "$label: the replay differs from the rotation"
  local next
  next=$(json_field refresh <"$WORK/rotated")
  expect 200 -X POST "$base/api/token/blacklist/" -H 'Content-Type: application/json' \
    -d "{\"refresh\":\"$next\"}"
  expect 401 -X POST "$base/api/token/refresh/" -H 'Content-Type: application/json' \
    -d "{\"refresh\":\"$next\"}"
  expect 401 "$base/api/user/me/" -H "Authorization: Bearer $access"
  # No secret in the logs.
  if grep -q -e "correct horse" -e "$refresh" -e "$access" "$WORK/log"; then
    fail "$label: a password or token appeared in the logs"
  fi
  kill -TERM "$PID"
  local code=0
  wait "$PID" || code=$?
  PID=""
  [ "$code" = 0 ] || fail "$label: exit code $code after SIGTERM"
  echo "smoke $label: ok (ready in ${ready_ms} ms incl. process start; exit 0 on SIGTERM)"
}

run_session sqlite "sqlite://$WORK/data/tokend.sqlite3"
psql "$PG_ADMIN" -qc "CREATE DATABASE $PGDB" || fail "cannot create PostgreSQL database"
run_session postgres "${PG_ADMIN%/*}/$PGDB"
# As docker-compose.yml runs it: the production profile on PostgreSQL with a
# signing key from the environment; then with an admin listener.
psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" >/dev/null
psql "$PG_ADMIN" -qc "CREATE DATABASE $PGDB" || fail "cannot create PostgreSQL database"
KEY="$("$BIN" keys generate --algorithm HS256)" || fail "tokend keys generate"
TOKEND_PROFILE=production TOKEND__JWT__SIGNING_KEY="$KEY" \
  run_session postgres-production "${PG_ADMIN%/*}/$PGDB"
psql "$PG_ADMIN" -qc "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" >/dev/null
psql "$PG_ADMIN" -qc "CREATE DATABASE $PGDB" || fail "cannot create PostgreSQL database"
ADMIN="127.0.0.1:$(free_port)"
TOKEND_PROFILE=production TOKEND__JWT__SIGNING_KEY="$KEY" TOKEND__SERVER__ADMIN_ADDRESS="$ADMIN" \
  run_session postgres-production-admin "${PG_ADMIN%/*}/$PGDB"

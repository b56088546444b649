#!/usr/bin/env bash
# Property-based check of the served OpenAPI document against the running
# server: schemathesis generates requests from /openapi.json (valid and
# invalid ones, every method) and checks every answer against what the
# document says (status codes, bodies, headers, content types).
#   scripts/schemathesis.sh [path/to/tokend]   (default target/debug/tokend)
# Needs schemathesis installed for python3 (.ci/run pins the version), or
# SCHEMATHESIS=/path/to/schemathesis.
# SCHEMATHESIS_MAX_EXAMPLES bounds the examples per operation (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/debug/tokend}")"
read -r -a ST <<<"${SCHEMATHESIS:-python3 -m schemathesis.cli}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-200}"
WORK="$(mktemp -d)"
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "SCHEMATHESIS FAIL: $*" >&2; [ -f "$WORK/log" ] && tail -20 "$WORK/log" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port=$(free_port)
base="http://127.0.0.1:$port"
# Rate limits off: thousands of generated logins and registrations from one
# address would otherwise be (rightly) throttled. A low bcrypt cost keeps
# the generated registrations and logins fast.
export TOKEND_CONFIG_DIR="$PWD/config" TOKEND__SERVER__HOST=127.0.0.1 PORT="$port" \
  TOKEND__DATABASE__URL="sqlite://$WORK/tokend.sqlite3" TOKEND__PASSWORD__BCRYPT_COST=4 \
  TOKEND__RATE_LIMIT__ENABLED=false TOKEND__LOG__LEVEL=warn
"$BIN" migrate >/dev/null || fail "tokend migrate"
(cd "$WORK" && exec "$BIN" serve) >"$WORK/log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  curl -s -o /dev/null "$base/healthz" && break
  sleep 0.02
done
curl -sf -o /dev/null "$base/readyz" || fail "the server did not start"

curl -sf -o /dev/null -X POST "$base/api/user/register/" -H 'Content-Type: application/json' \
  -d '{"username":"schemathesis","password":"correct horse battery staple"}' || fail "register"
ACCESS=$(curl -sf -X POST "$base/api/token/" -H 'Content-Type: application/json' \
  -d '{"username":"schemathesis","password":"correct horse battery staple"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])') || fail "login"

# positive_data_acceptance is left out: a schema-valid registration of a
# name already taken, or a login with made-up credentials, is rightly
# refused. Every other check runs.
# Run from the scratch dir: schemathesis keeps a cache of its own there.
cd "$WORK"
"${ST[@]}" run "$base/openapi.json" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "$MAX_EXAMPLES" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --no-color --generation-database none \
  -H "Authorization: Bearer $ACCESS"

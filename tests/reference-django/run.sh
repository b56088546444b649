#!/usr/bin/env bash
# Start the reference service: migrate, then gunicorn on 127.0.0.1:PORT in the
# background; returns once the port answers. Usage: run.sh [PORT] (default 8001)
# Environment (all optional; see README.md):
#   PEER_SIGNING_KEY   HS256 key (default: a fixed development key, printed)
#   PEER_SQLITE_PATH   SQLite file (default: db.sqlite3 here)
#   PEER_DATABASE_URL  postgres://user:pass@host:port/db instead of SQLite
#   PEER_CONN_MAX_AGE  PostgreSQL persistent connections, seconds (default 0)
#   PEER_HASHER        pbkdf2 (Django's default) | bcrypt (BCryptSHA256)
#   PEER_BCRYPT_ROUNDS bcrypt cost when PEER_HASHER=bcrypt (default 12)
#   PEER_WORKERS       gunicorn sync workers (default 2*cores+1)
#   PEER_VENV          virtualenv to use, built if missing (default .venv here)
#   PEER_RUN_DIR       pidfile and log directory (default .run here)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PORT="${1:-8001}"
WORKERS="${PEER_WORKERS:-$((2 * $(nproc) + 1))}"
VENV="${PEER_VENV:-$HERE/.venv}"
RUN_DIR="${PEER_RUN_DIR:-$HERE/.run}"
PIDFILE="$RUN_DIR/gunicorn-$PORT.pid"
LOG="$RUN_DIR/gunicorn-$PORT.log"
mkdir -p "$RUN_DIR"

if [ ! -x "$VENV/bin/gunicorn" ]; then
  # Debian's python3 has no ensurepip (so no venv) without python3-venv.
  python3 -m venv "$VENV" || { echo "python3 -m venv failed: on Debian/Ubuntu install python3-venv" >&2; exit 1; }
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
fi

export PEER_SIGNING_KEY="${PEER_SIGNING_KEY:-reference-dev-signing-key-0123456789abcdef0123}"
export DJANGO_SETTINGS_MODULE=backend.settings
# Bytecode goes to the run directory, not next to the sources.
export PYTHONPYCACHEPREFIX="$RUN_DIR/pycache"

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "already running on port $PORT (pid $(cat "$PIDFILE"))" >&2
  exit 1
fi

"$VENV/bin/python" manage.py migrate --noinput -v 0

# setsid: the server outlives this script and the caller's terminal/process group.
setsid nohup "$VENV/bin/gunicorn" backend.wsgi:application \
  --bind "127.0.0.1:$PORT" \
  --workers "$WORKERS" \
  --pid "$PIDFILE" \
  --error-logfile "$LOG" \
  </dev/null >>"$LOG" 2>&1 &

answers() { curl -s -o /dev/null -X POST "http://127.0.0.1:$PORT/api/token/verify/"; }
# Generous: workers import Django on a busy machine.
for _ in $(seq 1 300); do
  answers && [ -s "$PIDFILE" ] && break
  sleep 0.1
done
answers || { echo "gunicorn did not come up on port $PORT; see $LOG" >&2; exit 1; }

if [ -n "${PEER_DATABASE_URL:-}" ]; then
  DB="postgresql $(echo "$PEER_DATABASE_URL" | sed -E 's#//([^:/@]*):[^@]*@#//\1:***@#') conn_max_age=${PEER_CONN_MAX_AGE:-0}"
else
  DB="sqlite ${PEER_SQLITE_PATH:-$HERE/db.sqlite3}"
fi
HASHER="${PEER_HASHER:-pbkdf2}"
[ "$HASHER" = bcrypt ] && HASHER="bcrypt_sha256 rounds=${PEER_BCRYPT_ROUNDS:-12}"
echo "up: http://127.0.0.1:$PORT/  pid $(cat "$PIDFILE"), $WORKERS workers"
echo "db: $DB  hasher: $HASHER"
echo "SIGNING_KEY=$PEER_SIGNING_KEY"
echo "pidfile: $PIDFILE  log: $LOG"

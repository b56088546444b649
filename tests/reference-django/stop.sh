#!/usr/bin/env bash
# Stop the service run.sh started on PORT: SIGTERM to the gunicorn master
# (which stops its workers), SIGKILL after 10 s.
# Usage: stop.sh [PORT] (default 8001); PEER_RUN_DIR as given to run.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${1:-8001}"
PIDFILE="${PEER_RUN_DIR:-$HERE/.run}/gunicorn-$PORT.pid"
if [ ! -f "$PIDFILE" ]; then
  echo "not running on port $PORT (no $PIDFILE)" >&2
  exit 0
fi
PID="$(cat "$PIDFILE")"
if kill -TERM "$PID" 2>/dev/null; then
  for _ in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$PID" 2>/dev/null; then
    echo "pid $PID still alive after 10 s; sending SIGKILL" >&2
    kill -KILL "$PID"
  fi
  echo "stopped port $PORT (pid $PID)"
fi
rm -f "$PIDFILE"

"""A webhook receiver for tokend's tests (the claims hook, the audit
webhooks): verifies each call's Standard Webhooks signature with the
reference library, records it, and answers as told.

Environment: HOOK_SECRET (whsec_...); PORT (default: a free one). Listens
on 127.0.0.1 and prints `listening on http://127.0.0.1:PORT`.

  POST /hook     a claims hook call: recorded as {"verified", "error",
                 "payload", "headers"}; answered per the current behaviour
                 (401 when the signature does not verify, whatever it is)
  POST /control  sets the behaviour: {"mode": ..., "claims": {...},
                 "sleep_ms": N, "fail_first": N}; modes: claims (200
                 {"claims": claims}), sleep (the same after sleep_ms), error
                 (500), redirect (302 to /hook), not_json, huge (200, 70
                 KiB); the first fail_first verified calls answer 500
  GET  /calls    the calls recorded so far, oldest first
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

WEBHOOK = Webhook(os.environ["HOOK_SECRET"])
LOCK = threading.Lock()
STATE = {"mode": "claims", "claims": {}, "sleep_ms": 0}
CALLS = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer_json(self, status, value):
        self.answer(status, json.dumps(value).encode(), [("Content-Type", "application/json")])

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                self.answer_json(200, CALLS)
        else:
            self.answer(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/control":
            with LOCK:
                STATE.clear()
                STATE.update({"mode": "claims", "claims": {}, "sleep_ms": 0})
                STATE.update(json.loads(body))
            self.answer_json(200, {})
            return
        if self.path != "/hook":
            self.answer(404)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        call = {
            "verified": False,
            "error": None,
            "payload": None,
            "headers": {
                k: headers.get(k)
                for k in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type")
            },
        }
        try:
            call["payload"] = WEBHOOK.verify(body, headers)
            call["verified"] = True
        except Exception as e:  # noqa: BLE001 - recorded for the test to see
            call["error"] = f"{type(e).__name__}: {e}"
        with LOCK:
            CALLS.append(call)
            state = dict(STATE)
            failing = call["verified"] and STATE.get("fail_first", 0) > 0
            if failing:
                STATE["fail_first"] -= 1
        if failing:
            self.answer_json(500, {"detail": "failing on purpose"})
            return
        if not call["verified"]:
            self.answer_json(401, {"error": call["error"]})
            return
        mode = state["mode"]
        if mode == "sleep":
            time.sleep(state["sleep_ms"] / 1000)
        if mode in ("claims", "sleep"):
            self.answer_json(200, {"claims": state["claims"]})
        elif mode == "error":
            self.answer_json(500, {"detail": "hook broke"})
        elif mode == "redirect":
            self.answer(302, headers=[("Location", "/hook")])
        elif mode == "not_json":
            self.answer(200, b"claims: none", [("Content-Type", "text/plain")])
        elif mode == "huge":
            pad = "x" * (70 * 1024)
            self.answer_json(200, {"claims": {}, "pad": pad})
        else:
            self.answer(400, f"unknown mode {mode}".encode())


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "0"))), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A webhook receiver for the tests: verifies every request with the `standardwebhooks` package
from PyPI (an implementation independent of the server's), and appends one JSON line per request
to a log the test reads.

    receiver.py PORT LOG SECRETS MODE

PORT 0 picks a free port; the chosen one is printed as `listening on PORT`. SECRETS and MODE are
files read on every request, so the test can change them while the receiver runs:
SECRETS holds a JSON list of `whsec_` secrets (a request verifies if one of them verifies it);
MODE holds `ok`, `fail` (answer 500) or `slow SECONDS` (answer 200 after a delay).
A request is logged twice: `{"phase": "start", ...}` when it arrives and `{"phase": "end",
"verified", "error", "id", "timestamp", "body", "status"}` once answered.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port, log_path, secrets_path, mode_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
lock = threading.Lock()


def read(path, default):
    try:
        with open(path) as f:
            return f.read().strip() or default
    except FileNotFoundError:
        return default


def log(record):
    with lock, open(log_path, "a") as f:
        f.write(json.dumps(record) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        log({"phase": "start", "id": headers.get("webhook-id")})
        verified, error = False, None
        for secret in json.loads(read(secrets_path, "[]")):
            try:
                Webhook(secret).verify(body, headers)
                verified = True
                break
            except WebhookVerificationError as e:
                error = str(e)
        mode = read(mode_path, "ok").split()
        status = 500 if mode[0] == "fail" else 200
        if mode[0] == "slow":
            time.sleep(float(mode[1]))
        log({
            "phase": "end",
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "content_type": headers.get("content-type"),
            "verified": verified,
            "error": error,
            "body": body.decode("utf-8", "replace"),
            "status": status,
        })
        reply = b'{"received": true}' if status == 200 else b"receiver failing on purpose"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


server = Server(("127.0.0.1", port), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()

#!/usr/bin/python3
"""Veza alert webhook (installed by `inv monitor.setup`): Alertmanager's receiver on the monitor host.

Each POST (one Alertmanager notification: status, receiver, alerts with labels, startsAt, endsAt)
becomes one JSON line in the log, with the time it arrived, so tests and people can read what
would have paged. Python's standard library only (the image has python3, nothing else to install).
The log is rotated once past --max-bytes (one .1 kept).
"""

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 * 1024 * 1024
LOCK = threading.Lock()


def append(path: str, record: dict, max_bytes: int) -> None:
    line = json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n"
    with LOCK:
        try:
            if os.path.getsize(path) > max_bytes:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass
        with open(path, "a", encoding="utf-8") as log:
            log.write(line)


class Handler(BaseHTTPRequestHandler):
    server_version = "veza-alert-webhook"

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self.send_error(413 if length > MAX_BODY else 400)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "not JSON")
            return
        append(self.server.log_path, {"received_at": time.time(), "notification": payload}, self.server.max_bytes)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):  # noqa: N802 - a liveness answer for checks
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *args):  # the JSON lines are the log; no access log on stderr
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--log", required=True)
    parser.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.log_path, server.max_bytes = args.log, args.max_bytes
    server.serve_forever()


if __name__ == "__main__":
    main()

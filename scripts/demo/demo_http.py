"""Shared core of the demo services: HTTP/1.1 server, health endpoint, RFC 6455 WebSocket, clean SIGTERM.

Stdlib only, writes nothing to disk and logs to stdout, so the built program runs on a
bare container's python3 under a heavily sandboxed systemd unit. The builder
(scripts/demo/build.py) inlines this file and one service file into a single executable
and stamps ``VERSION``/``BROKEN`` in; the values below are only the unbuilt defaults.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "unbuilt"
BROKEN = False
CRASH_AFTER = 0.0  # > 0: exit 1 that many seconds after start (a late crash a deploy must catch)
SERVICE = "demo"
DEFAULT_PORT = 8080
HEALTH_PATH = "/api/v1/health"

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x8, 0x9, 0xA
MAX_MESSAGE = 1 << 20  # a demo never needs more; refuse anything bigger instead of buffering it


def instance_name() -> str:
    return os.environ.get("INSTANCE_NAME") or socket.gethostname()


def log(message: str) -> None:
    print(f"{SERVICE}[{instance_name()}]: {message}", flush=True)


class WebSocketClosed(Exception):
    """The peer closed the connection or broke the protocol."""


class WebSocket:
    """Server side of one WebSocket connection on the handler's buffered streams."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.lock = threading.Lock()  # frames from two threads must not interleave

    def read_exact(self, count: int) -> bytes:
        data = self.reader.read(count)
        if len(data) != count:
            raise WebSocketClosed("connection dropped mid-frame")
        return data

    def read_frame(self):
        first, second = self.read_exact(2)
        final, opcode, masked, length = first & 0x80, first & 0x0F, second & 0x80, second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.read_exact(8))[0]
        if not masked:
            raise WebSocketClosed("client frames must be masked (RFC 6455 5.1)")
        if length > MAX_MESSAGE:
            raise WebSocketClosed("frame too large")
        mask = self.read_exact(4)
        payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(self.read_exact(length)))
        return bool(final), opcode, payload

    def send_frame(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
        with self.lock:
            self.writer.write(header + payload)
            self.writer.flush()

    def send_text(self, text: str) -> None:
        self.send_frame(OPCODE_TEXT, text.encode("utf-8"))

    def receive_text(self) -> str:
        """Next whole text message; answers pings on the way; raises WebSocketClosed on close."""
        parts = []
        while True:
            final, opcode, payload = self.read_frame()
            if opcode == OPCODE_PING:
                self.send_frame(OPCODE_PONG, payload)
            elif opcode == OPCODE_PONG:
                continue
            elif opcode == OPCODE_CLOSE:
                self.send_frame(OPCODE_CLOSE, payload[:2])
                raise WebSocketClosed("closed by peer")
            elif opcode in (OPCODE_TEXT, OPCODE_BINARY, OPCODE_CONTINUATION):
                parts.append(payload)
                if sum(map(len, parts)) > MAX_MESSAGE:
                    raise WebSocketClosed("message too large")
                if final:
                    return b"".join(parts).decode("utf-8", errors="replace")
            else:
                raise WebSocketClosed(f"unknown opcode {opcode}")


class DemoHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 with the shared health endpoint; services add routes in ``route``."""

    protocol_version = "HTTP/1.1"
    server_version = "veza-demo"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == HEALTH_PATH:
            self.send_json(200, {"status": "ok", "instance": instance_name(), "version": VERSION, "service": SERVICE})
        elif not self.route(path):
            self.send_body(404, "text/plain; charset=utf-8", b"not found\n")

    def route(self, path: str) -> bool:
        """Answer ``path`` and return True, or return False for a 404."""
        return False

    def send_body(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, status: int, value) -> None:
        self.send_body(status, "application/json", json.dumps(value).encode("utf-8") + b"\n")

    def accept_websocket(self):
        """Complete the RFC 6455 handshake, or answer 400 and return None."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        if "websocket" not in self.headers.get("Upgrade", "").lower() or not key:
            self.send_body(400, "text/plain; charset=utf-8", b"expected a WebSocket upgrade\n")
            return None
        accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True  # after the WebSocket ends, this TCP connection is done
        return WebSocket(self.rfile, self.wfile)

    def log_message(self, format, *args):
        log(f"{self.address_string()} {format % args}")


def serve(handler_class) -> int:
    """Listen on 0.0.0.0:$LISTEN_PORT until SIGTERM/SIGINT; return the exit status."""
    if BROKEN:
        # Deliberately broken build: fail at start so the systemd unit fails and a deploy must notice.
        print(f"{SERVICE} {VERSION}: this build is broken on purpose (--broken); refusing to start", file=sys.stderr, flush=True)
        return 1
    port = int(os.environ.get("LISTEN_PORT") or DEFAULT_PORT)
    server = ThreadingHTTPServer(("0.0.0.0", port), handler_class)
    server.daemon_threads = True  # open keep-alive and WebSocket connections must not delay exit

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return, so it must run on another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"version {VERSION} listening on 0.0.0.0:{port}")
    if CRASH_AFTER > 0:
        def crash():
            log(f"crashing on purpose after {CRASH_AFTER:g}s (--crash-after)")
            os._exit(1)

        threading.Timer(CRASH_AFTER, crash).start()
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    log("stopped")
    return 0

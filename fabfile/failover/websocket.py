"""A small stdlib WebSocket client (RFC 6455) for tests and failover checks.

    ws = connect("10.0.0.10", 80, "/api/v1/ws", headers={"Cookie": "SERVERID=api1"})
    greeting = ws.recv_text(timeout=5)
    ws.send_text("hello"); echo = ws.recv_text(timeout=5)
    ws.headers.get_all("Set-Cookie")   # the handshake response headers
    ws.close()

Client frames are masked as the RFC requires; pings are answered while waiting
for a message. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import socket
import struct
import time

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPCODE_CONTINUATION, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x8, 0x9, 0xA
MAX_HANDSHAKE = 64 * 1024  # response headers beyond this mean we are not talking to a WebSocket server
MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketError(Exception):
    """The handshake was refused or the connection broke; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class WebSocketClosed(WebSocketError):
    """The server closed the WebSocket (close frame or EOF)."""


class WebSocketClient:
    """One open WebSocket connection."""

    def __init__(self, sock: socket.socket, status: int, headers: http.client.HTTPMessage, buffered: bytes):
        self.sock = sock
        self.status = status
        self.headers = headers
        self._buffer = buffered  # bytes that arrived after the handshake headers
        self.closed = False

    @property
    def cookies(self) -> list:
        """The raw Set-Cookie values of the handshake response."""
        return self.headers.get_all("Set-Cookie") or []

    def _read_exact(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no WebSocket message before the timeout")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no WebSocket message before the timeout") from None
            except OSError as exc:
                self.closed = True
                raise WebSocketClosed(f"connection broken: {exc}") from None
            if not chunk:
                self.closed = True
                raise WebSocketClosed("connection closed by the server")
            self._buffer += chunk
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_frame(self, deadline: float):
        first, second = self._read_exact(2, deadline)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2, deadline))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8, deadline))[0]
        if length > MAX_MESSAGE:
            raise WebSocketError(f"frame of {length} bytes is too large")
        mask = self._read_exact(4, deadline) if second & 0x80 else None
        payload = self._read_exact(length, deadline)
        if mask:
            payload = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        try:
            self.sock.sendall(header + mask + masked)
        except OSError as exc:
            self.closed = True
            raise WebSocketClosed(f"connection broken: {exc}") from None

    def send_text(self, text: str) -> None:
        self._send_frame(OPCODE_TEXT, text.encode("utf-8"))

    def ping(self, payload: bytes = b"") -> None:
        self._send_frame(OPCODE_PING, payload)

    def recv_text(self, timeout: float = 5.0) -> str:
        """The next whole text message; TimeoutError after ``timeout`` s, WebSocketClosed on close."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            final, opcode, payload = self._read_frame(deadline)
            if opcode == OPCODE_PING:
                self._send_frame(OPCODE_PONG, payload)
            elif opcode == OPCODE_PONG:
                continue
            elif opcode == OPCODE_CLOSE:
                self.closed = True
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise WebSocketClosed(f"closed by the server (code {code})")
            else:
                parts.append(payload)
                if final:
                    return b"".join(parts).decode("utf-8", errors="replace")

    def close(self, timeout: float = 2.0) -> None:
        """Send a close frame, wait (bounded) for the server's, then drop the socket."""
        if not self.closed:
            try:
                self._send_frame(OPCODE_CLOSE, struct.pack("!H", 1000))
                deadline = time.monotonic() + timeout
                while True:
                    _, opcode, _ = self._read_frame(deadline)
                    if opcode == OPCODE_CLOSE:
                        break
            except (WebSocketError, TimeoutError):
                pass
        self.closed = True
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _read_response_head(sock: socket.socket, deadline: float) -> tuple:
    """Bytes up to the blank line ending the headers, and whatever came after them."""
    data = b""
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no handshake response before the timeout")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise TimeoutError("no handshake response before the timeout") from None
        if not chunk:
            raise WebSocketClosed("connection closed during the handshake")
        data += chunk
        if len(data) > MAX_HANDSHAKE:
            raise WebSocketError("handshake response headers too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def connect(host: str, port: int, path: str = "/", headers: dict | None = None, timeout: float = 5.0) -> WebSocketClient:
    """Open a WebSocket; raise WebSocketError (with ``status``) when the server does not switch protocols."""
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request_headers = {
        "Host": f"{host}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in request_headers.items()) + "\r\n"
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(request.encode("latin-1"))
        head, rest = _read_response_head(sock, deadline)
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise WebSocketError(f"not an HTTP response: {status_line[:80]!r}")
        status = int(parts[1])
        response_headers = http.client.parse_headers(io.BytesIO(header_block + b"\r\n\r\n"))
        if status != 101:
            raise WebSocketError(f"handshake refused: HTTP {status}", status)
        expected = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode("ascii")).digest()).decode("ascii")
        if response_headers.get("Sec-WebSocket-Accept") != expected:
            raise WebSocketError("handshake answer has a wrong Sec-WebSocket-Accept", status)
    except BaseException:
        sock.close()
        raise
    return WebSocketClient(sock, status, response_headers, rest)

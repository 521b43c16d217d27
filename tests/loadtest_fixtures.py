"""Local servers for the load-test tests, each ended by its own handle: the fake LB (a subprocess)
and raw-socket misbehavers (a port that never answers, one that closes at once, one that resets)."""

import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from conftest import end_process

FAKE_LB = Path(__file__).resolve().parent.parent / "scripts" / "loadtest_fake_lb.py"
START_TIMEOUT = 30  # seconds for the fake LB to print its port (aiohttp import on a loaded machine)


@contextmanager
def fake_lb(*args):
    """The fake LB with ``args``; yields its base URL."""
    process = subprocess.Popen([sys.executable, str(FAKE_LB), "--max-seconds", "300", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=START_TIMEOUT):
                raise AssertionError(f"fake LB did not start within {START_TIMEOUT}s")
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"fake LB said {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        end_process(process)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def silent_server():
    """Listens and never accepts: the kernel completes connects, nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextmanager
def closing_server(reset: bool):
    """Accepts and at once closes each connection (``reset``: with an RST instead of a FIN)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.1)
    stopping = threading.Event()

    def serve():
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            if reset:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                connection.recv(4096)  # read the request so the close is a clean FIN, not an RST
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()


@contextmanager
def keepalive_server(answers_per_connection: int, announce_close: bool, close_after: float = 0.02):
    """HTTP/1.1 on kept-alive connections; each connection is closed after ``answers_per_connection``
    answers. ``announce_close``: the last answer says ``Connection: close`` (what HAProxy's
    ``idle-close-on-response`` does on a reload); otherwise it looks like any other answer and the
    connection is closed ``close_after`` seconds later while idle (what a plain soft-stop does).
    Answers carry the API's JSON ``instance``; a POST answers 201. Yields (base URL, stats Counter)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.1)
    stopping = threading.Event()
    stats = Counter()

    def answer(connection):
        with connection:
            connection.settimeout(5)
            pending = b""
            for served in range(1, answers_per_connection + 1):
                while b"\r\n\r\n" not in pending:
                    chunk = connection.recv(4096)
                    if not chunk:
                        return
                    pending += chunk
                head, _, pending = pending.partition(b"\r\n\r\n")
                method = head.split(b" ", 1)[0]
                stats[f"{method.decode()} requests"] += 1
                last = served == answers_per_connection
                body = b'{"instance": "fake-1"}'
                status = b"201 Created" if method == b"POST" else b"200 OK"
                closing = b"Connection: close\r\n" if last and announce_close else b""
                connection.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + closing
                                   + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0 if announce_close else close_after)
            stats["closed"] += 1

    def serve():
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            stats["accepted"] += 1
            threading.Thread(target=answer, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", stats
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()

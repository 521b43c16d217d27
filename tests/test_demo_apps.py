"""The stand-ins as built by scripts/build-demo-*: the Go API and the Rust stream server.

Each variant is built once per session through the scripts (so with the real toolchains:
go + make, cargo), then run on a free loopback port and always ended through its Popen
handle, with every wait bounded. Without a toolchain the tests skip, unless
VEZA_REQUIRE_TOOLCHAINS=1 (CI) makes that a failure.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from fabfile.loadtest.facade import SessionClosed, open_session

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TOOLCHAINS = {"api": ("go", "make"), "stream": ("cargo",)}
SERVICES = {"api": "backend-api", "stream": "stream-server"}
KINDS = list(SERVICES)
START_TIMEOUT = 10  # seconds for a built program to answer its health check
BUILD_TIMEOUT = 300  # a cold Go build compiles net/http: about 15 s on two cores
HEALTH = "/api/v1/health"
MIB = 1024 * 1024

# The variants every test may use; built once per session.
VARIANTS = {
    "plain": ("--version", "1.4.2-rc1"),
    "broken": ("--version", "bad", "--broken"),
    "crash": ("--version", "late", "--crash-after", "2"),
    "slow": ("--version", "slow", "--slow-ms", "400"),
    "erring": ("--version", "erring", "--error-rate", "0.3"),
    "padded": ("--version", "big", "--pad-mb", "3"),
}


def missing_tools(kind: str) -> list:
    return [name for name in TOOLCHAINS[kind] if shutil.which(name) is None]


def require_toolchain(kind: str) -> None:
    missing = missing_tools(kind)
    if not missing:
        return
    reason = f"{', '.join(missing)} not on PATH: cannot build the {kind} stand-in (Debian: golang-go, make, cargo)"
    if os.environ.get("VEZA_REQUIRE_TOOLCHAINS") == "1":
        pytest.fail(reason + "; VEZA_REQUIRE_TOOLCHAINS=1", pytrace=False)
    pytest.skip(reason)


def run_builder(kind: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / f"build-demo-{kind}"), *args], capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT, stdin=subprocess.DEVNULL)


def build(kind: str, output: Path, *args) -> Path:
    done = run_builder(kind, *args, "-o", str(output))
    assert done.returncode == 0, done.stdout + done.stderr
    return output


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """built(kind, variant) -> path, building each (kind, variant) on first use."""
    folder = tmp_path_factory.mktemp("standins")
    cache = {}

    def get(kind: str, variant: str) -> Path:
        require_toolchain(kind)
        if (kind, variant) not in cache:
            cache[kind, variant] = build(kind, folder / f"{kind}-{variant}", *VARIANTS[variant])
        return cache[kind, variant]

    return get


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str, headers: dict | None = None) -> tuple:
    """(status, headers, body text) of one GET on a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def read_until_closed(sock: socket.socket, timeout: float = 5) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline and len(data) < MIB:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"server kept the connection open; got {data[:200]!r}")


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return read_until_closed(sock)


class Running:
    """A built program started on a free port; ended by its handle on exit. Output goes to a
    temporary file, since a pipe nobody reads would fill up and block the program's logging."""

    def __init__(self, program: Path, instance: str | None = "test-1", port: int | None = None):
        self.port = port or free_port()
        env = {**os.environ, "LISTEN_PORT": str(self.port)}
        env.pop("INSTANCE_NAME", None)
        if instance is not None:
            env["INSTANCE_NAME"] = instance
        self.output = tempfile.TemporaryFile()
        self.process = subprocess.Popen([str(program)], env=env, stdout=self.output, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)

    def log(self) -> str:
        self.output.seek(0)
        return self.output.read().decode(errors="replace")

    def __enter__(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"program exited {self.process.returncode}: {self.log()}")
            try:
                http_get(self.port, HEALTH)
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"no health answer within {START_TIMEOUT}s")

    def stop(self, timeout: float = 5) -> tuple:
        """SIGTERM; (exit status, seconds it took)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=timeout)
        return status, time.monotonic() - started

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self.output.close()


class RawWebSocket:
    """Frame-level client, to check what a library client hides (pongs, close codes, fragments)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer and len(self.buffer) < 65536:
            self.buffer += self.read_some()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head

    def read_some(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        return chunk

    def read_exact(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += self.read_some()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send(self, opcode: int, payload: bytes, final: bool = True) -> None:
        mask = os.urandom(4)
        assert len(payload) < 126
        header = struct.pack("!BB", (0x80 if final else 0) | opcode, 0x80 | len(payload))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self) -> tuple:
        """(opcode, payload) of the next frame; server frames are unmasked."""
        first, second = self.read_exact(2)
        assert not second & 0x80, "server frames must not be masked"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.read_exact(8))[0]
        return first & 0x0F, self.read_exact(length)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


# --- the build ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_build_writes_an_executable_elf_and_prints_one_line(built, kind, tmp_path):
    program = built(kind, "plain")
    assert program.read_bytes()[:4] == b"\x7fELF"
    assert program.stat().st_mode & 0o777 == 0o755
    done = run_builder(kind, "--version", "9", "-o", str(tmp_path / "again"))
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and str(tmp_path / "again") in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no staging file left behind


@pytest.mark.parametrize("kind", KINDS)
def test_binary_is_static(built, kind):
    """No PT_INTERP program header: the program needs no libc of the container's."""
    data = built(kind, "plain").read_bytes()
    assert data[4] == 2, "expected a 64-bit ELF"
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + index * phentsize)[0] for index in range(phnum)]
    assert 3 not in types


@pytest.mark.parametrize("kind", KINDS)
def test_same_arguments_build_the_same_bytes(built, kind, tmp_path):
    built(kind, "plain")  # toolchain check; warms the caches
    first = build(kind, tmp_path / "first", "--version", "7", "--pad-mb", "1")
    other = build(kind, tmp_path / "other", "--version", "8", "--pad-mb", "1")
    again = build(kind, tmp_path / "again", "--version", "7", "--pad-mb", "1")  # rebuilt after 8, not cached
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()


@pytest.mark.parametrize("args", [
    ("--version", ""), ("--version", "two words"), ("--version", "1", "--pad-mb", "-1"),
    ("--version", "1", "--slow-ms", "soon"), ("--version", "1", "--crash-after", "-3"), ("--version", "1", "--bogus"),
    ("--version", "1", "--error-rate", "1.5"), ("--version", "1", "--error-rate", "nan"),
    ("--version", "1", "--error-rate", "a fifth"),
])
def test_bad_arguments_are_refused_with_one_error_line(tmp_path, args):
    done = run_builder("api", *args, "-o", str(tmp_path / "x"))
    assert done.returncode == 2 and not (tmp_path / "x").exists()
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr


# --- what the deploy and HAProxy rely on -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_health_reports_status_instance_version_and_service(built, kind):
    with Running(built(kind, "plain"), instance="inst-a") as running:
        status, headers, body = http_get(running.port, HEALTH)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "instance": "inst-a", "version": "1.4.2-rc1", "service": SERVICES[kind]}


def test_api_records_a_play_by_post_and_logs_its_id(built):
    """The unsafe route the failover load uses: 201 naming the instance and the id; the access log
    line carries the id (how a replayed POST would be found on a second backend); GET is refused."""
    with Running(built("api", "plain"), instance="inst-b") as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            connection.request("POST", "/api/v1/plays?id=run-42", body=b'{"track": "t-1"}')
            response = connection.getresponse()
            answer = (response.status, json.loads(response.read()))
        finally:
            connection.close()
        status, headers, _ = http_get(running.port, "/api/v1/plays")
        running.stop()
        log = running.log()
    assert answer == (201, {"instance": "inst-b", "id": "run-42"})
    assert status == 405 and headers["Allow"] == "POST"
    assert "POST /api/v1/plays?id=run-42 HTTP/1.1" in log


@pytest.mark.parametrize("kind", KINDS)
def test_instance_falls_back_to_the_host_name(built, kind):
    with Running(built(kind, "plain"), instance=None) as running:
        assert json.loads(http_get(running.port, HEALTH)[2])["instance"] == socket.gethostname()


@pytest.mark.parametrize("kind", KINDS)
def test_bad_listen_port_is_refused(built, kind):
    done = subprocess.run([str(built(kind, "plain"))], env={**os.environ, "LISTEN_PORT": "http"},
                          capture_output=True, timeout=10)
    assert done.returncode == 2 and b"LISTEN_PORT" in done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_keep_alive_serves_several_requests_on_one_connection(built, kind):
    with Running(built(kind, "plain")) as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            for _ in range(3):
                connection.request("GET", HEALTH)
                response = connection.getresponse()
                assert response.version == 11 and response.status == 200
                assert json.loads(response.read())["version"] == "1.4.2-rc1"
        finally:
            connection.close()
        assert running.log().count('"GET /api/v1/health HTTP/1.1" 200') >= 3


@pytest.mark.parametrize("kind", KINDS)
def test_pipelined_requests_and_connection_close(built, kind):
    with Running(built(kind, "plain")) as running:
        answer = raw_exchange(running.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
                                            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 404 " in answer
    assert b"connection: close" in answer.lower()


@pytest.mark.parametrize("kind", KINDS)
def test_http_1_0_health_check_is_answered_and_closed(built, kind):
    """HAProxy's `option httpchk GET /path` sends HTTP/1.0 without keep-alive."""
    with Running(built(kind, "plain")) as running:
        answer = raw_exchange(running.port, b"GET /api/v1/health HTTP/1.0\r\n\r\n")
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] == b"200" and answer.endswith(b'"}\n')


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_paths_are_404_and_other_methods_501(built, kind):
    with Running(built(kind, "plain")) as running:
        assert http_get(running.port, "/nowhere")[0] == 404
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            connection.request("POST", HEALTH, body=b"{}")
            assert connection.getresponse().status == 501
        finally:
            connection.close()


@pytest.mark.parametrize("kind", KINDS)
def test_many_concurrent_connections(built, kind):
    """300 connections open at once, each asking twice: a thread/goroutine per connection copes."""
    with Running(built(kind, "plain")) as running:
        sockets = [socket.create_connection(("127.0.0.1", running.port), timeout=10) for _ in range(300)]
        try:
            request = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
            for sock in sockets:
                sock.sendall(request + request[:-2] + b"Connection: close\r\n\r\n")
            answers = [read_until_closed(sock, timeout=10) for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()
    assert all(answer.count(b"HTTP/1.1 200 ") == 2 for answer in answers)


# --- the API's WebSocket -------------------------------------------------------------------


def test_websocket_greets_then_echoes(built):
    with Running(built("api", "plain"), instance="api-x") as running:
        ws = open_session(f"ws://127.0.0.1:{running.port}/api/v1/ws", cookie="a=b")
        try:
            assert ws.connection.response.status_code == 101
            assert ws.greeting == {"instance": "api-x", "version": "1.4.2-rc1"}
            assert ws.connection.ping(b"still there?").wait(5)  # the server's pong arrived
            for message in ("hello", "x" * 70000, "ünïcode <&>"):
                assert ws.echo(message) == {"instance": "api-x", "echo": message}
        finally:
            ws.close()


def test_websocket_pong_fragments_and_close_handshake(built):
    with Running(built("api", "plain"), instance="api-y") as running:
        ws = RawWebSocket(running.port)
        try:
            assert ws.receive()[0] == 0x1  # the greeting
            ws.send(0x9, b"are you there")
            assert ws.receive() == (0xA, b"are you there")
            ws.send(0x1, b"hel", final=False)
            ws.send(0x0, b"lo")
            opcode, payload = ws.receive()
            assert opcode == 0x1 and json.loads(payload) == {"instance": "api-y", "echo": "hello"}
            ws.send(0x8, struct.pack("!H", 1000))
            assert ws.receive() == (0x8, struct.pack("!H", 1000))
            assert ws.closed_by_server()
        finally:
            ws.close()


def test_unmasked_client_frame_is_a_protocol_error(built):
    with Running(built("api", "plain")) as running:
        ws = RawWebSocket(running.port)
        try:
            ws.receive()
            ws.sock.sendall(b"\x81\x02hi")
            opcode, payload = ws.receive()
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
            assert ws.closed_by_server()
        finally:
            ws.close()


def test_websocket_path_without_upgrade_is_400(built):
    with Running(built("api", "plain")) as running:
        assert http_get(running.port, "/api/v1/ws")[0] == 400


# --- the stream server's route ---------------------------------------------------------------


def test_stream_server_names_instance_track_and_version(built):
    with Running(built("stream", "plain"), instance="stream-9") as running:
        status, headers, body = http_get(running.port, "/hls/track-42/segment0001.ts?token=x")
        assert (status, body) == (200, "stream-server instance=stream-9 track=track-42 version=1.4.2-rc1\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert http_get(running.port, "/hls/track-42/sub/dir.ts")[0] == 200
        for missing in ("/hls/track-42", "/hls/track-42/", "/hls//x", "/hlsx/a/b"):
            assert http_get(running.port, missing)[0] == 404, missing


# --- variants ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_broken_build_exits_1_at_start(built, kind):
    done = subprocess.run([str(built(kind, "broken"))], env={**os.environ, "LISTEN_PORT": str(free_port())},
                          capture_output=True, timeout=10)
    assert done.returncode == 1
    assert b"broken on purpose" in done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_crash_after_serves_then_exits_non_zero(built, kind):
    program = built(kind, "crash")
    started = time.monotonic()
    with Running(program) as running:
        assert http_get(running.port, HEALTH)[0] == 200
        status = running.process.wait(timeout=10)
        lived = time.monotonic() - started
        assert status != 0 and "crashing on purpose" in running.log()
    assert 1.5 <= lived <= 5


@pytest.mark.parametrize("kind", KINDS)
def test_slow_build_answers_late(built, kind):
    with Running(built(kind, "slow")) as running:
        started = time.monotonic()
        assert http_get(running.port, HEALTH)[0] == 200
        assert time.monotonic() - started >= 0.4


ERRING_PATHS = {"api": "/api/v1/tracks/{}", "stream": "/hls/{}/segment-1.ts"}


@pytest.mark.parametrize("kind", KINDS)
def test_error_rate_answers_that_share_with_500_but_never_the_health_path(built, kind):
    with Running(built(kind, "erring"), instance="inst-e") as running:
        health = [http_get(running.port, HEALTH)[0] for _ in range(10)]
        answers = [http_get(running.port, ERRING_PATHS[kind].format(n)) for n in range(100)]
    assert health == [200] * 10
    failed = [body for status, _, body in answers if status == 500]
    assert len(failed) == 30 and all(status in (200, 500) for status, _, _ in answers)
    assert all("inst-e" in body and "erring" in body for body in failed)  # the 500 names who answered it


@pytest.mark.parametrize("kind", KINDS)
def test_padding_makes_a_big_file_that_still_runs(built, kind):
    program = built(kind, "padded")
    assert program.stat().st_size >= 3 * MIB
    assert program.read_bytes()[-MIB:].count(0) < MIB // 64  # pseudo-random, not zeros
    with Running(program) as running:
        assert json.loads(http_get(running.port, HEALTH)[2])["version"] == "big"


# --- SIGTERM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_with_an_idle_keep_alive_connection_exits_zero_quickly(built, kind):
    with Running(built(kind, "plain")) as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            connection.request("GET", HEALTH)
            connection.getresponse().read()
            status, seconds = running.stop()
        finally:
            connection.close()
        assert status == 0 and seconds < 2
        assert "stopped" in running.log()


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_lets_an_in_flight_request_finish_then_refuses_new_ones(built, kind):
    with Running(built(kind, "slow")) as running:
        answers = []
        request = threading.Thread(target=lambda: answers.append(http_get(running.port, HEALTH)))
        request.start()
        time.sleep(0.15)  # the request is now waiting out --slow-ms
        status, _ = running.stop()
        request.join(timeout=5)
        assert status == 0
        assert answers and answers[0][0] == 200 and answers[0][1]["Connection"] == "close"
        with pytest.raises(OSError):
            http_get(running.port, HEALTH)


def test_sigterm_closes_open_websockets_with_going_away(built):
    with Running(built("api", "plain")) as running:
        ws = open_session(f"ws://127.0.0.1:{running.port}/api/v1/ws")  # reads the greeting
        try:
            running.process.send_signal(signal.SIGTERM)
            with pytest.raises(SessionClosed, match="1001"):
                ws.recv_text(timeout=2)
            started = time.monotonic()
            assert running.process.wait(timeout=5) == 0
            assert time.monotonic() - started < 2
        finally:
            ws.close()

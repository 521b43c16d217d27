"""The demo services as built by scripts/build-demo-*: health, WebSocket echo, HLS route, --broken, --pad-mb.

Each test builds into tmp_path, runs the program on a free loopback port and always
terminates it through its Popen handle, with every wait bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fabfile.failover import websocket as wsclient

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
START_TIMEOUT = 10  # seconds for a built program to answer its health check
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def build(kind: str, tmp_path: Path, *extra) -> Path:
    output = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}"
    subprocess.run([PYTHON, str(SCRIPTS / f"build-demo-{kind}"), *extra, "-o", str(output)], check=True, timeout=60,
                   capture_output=True)
    return output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str) -> tuple:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.headers, response.read().decode()


class Running:
    """A built program started on a free port; stopped by its handle on exit."""

    def __init__(self, program: Path, instance: str = "test-1"):
        self.port = free_port()
        env = {**os.environ, "LISTEN_PORT": str(self.port), "INSTANCE_NAME": instance}
        self.process = subprocess.Popen([str(program)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def __enter__(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"program exited {self.process.returncode}: {self.process.stdout.read().decode()}")
            try:
                http_get(self.port, "/api/v1/health")
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError(f"no health answer within {START_TIMEOUT}s")

    def __exit__(self, *exc_info):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process.stdout.close()


@pytest.mark.parametrize("kind,service", [("api", "backend-api"), ("stream", "stream-server")])
def test_health_reports_version_instance_and_service(tmp_path, kind, service):
    program = build(kind, tmp_path, "--version", "1.4.2-rc1")
    assert program.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert program.stat().st_mode & 0o777 == 0o755
    with Running(program, instance="inst-a") as running:
        status, headers, body = http_get(running.port, "/api/v1/health")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "instance": "inst-a", "version": "1.4.2-rc1", "service": service}


def test_keep_alive_serves_two_requests_on_one_connection(tmp_path):
    import http.client

    with Running(build("api", tmp_path, "--version", "1")) as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        try:
            for _ in range(2):
                connection.request("GET", "/api/v1/health")
                response = connection.getresponse()
                assert response.version == 11 and response.status == 200
                assert json.loads(response.read())["version"] == "1"
        finally:
            connection.close()


def test_websocket_greets_then_echoes(tmp_path):
    with Running(build("api", tmp_path, "--version", "2.0.0"), instance="api-x") as running:
        with wsclient.connect("127.0.0.1", running.port, "/api/v1/ws", headers={"Cookie": "a=b"}) as ws:
            assert ws.status == 101
            assert json.loads(ws.recv_text(timeout=5)) == {"instance": "api-x", "version": "2.0.0"}
            ws.ping(b"still there?")  # answered with a pong the client skips
            for message in ("hello", "x" * 70000, "ünïcode"):
                ws.send_text(message)
                assert json.loads(ws.recv_text(timeout=5)) == {"instance": "api-x", "echo": message}


def test_websocket_path_without_upgrade_is_400(tmp_path):
    with Running(build("api", tmp_path, "--version", "1")) as running:
        with pytest.raises(urllib.error.HTTPError) as refused:
            http_get(running.port, "/api/v1/ws")
    assert refused.value.code == 400


def test_stream_server_names_instance_track_and_version(tmp_path):
    with Running(build("stream", tmp_path, "--version", "3.1"), instance="stream-9") as running:
        status, _, body = http_get(running.port, "/hls/track-42/segment0001.ts")
        assert (status, body) == (200, "stream-server instance=stream-9 track=track-42 version=3.1\n")
        with pytest.raises(urllib.error.HTTPError) as missing:
            http_get(running.port, "/hls/track-42")
        assert missing.value.code == 404


@pytest.mark.parametrize("kind", ["api", "stream"])
def test_broken_build_exits_non_zero_at_start(tmp_path, kind):
    program = build(kind, tmp_path, "--version", "bad", "--broken")
    done = subprocess.run([str(program)], env={**os.environ, "LISTEN_PORT": str(free_port())},
                          capture_output=True, timeout=10)
    assert done.returncode == 1
    assert b"broken on purpose" in done.stderr


def test_padding_makes_a_big_file_that_still_runs(tmp_path):
    program = build("api", tmp_path, "--version", "big", "--pad-mb", "3")
    assert program.stat().st_size >= 3 * 1024 * 1024
    with Running(program) as running:
        assert json.loads(http_get(running.port, "/api/v1/health")[2])["version"] == "big"


def test_same_arguments_build_the_same_bytes(tmp_path):
    first = build("stream", tmp_path, "--version", "7", "--pad-mb", "1")
    second = build("stream", tmp_path, "--version", "7", "--pad-mb", "1")
    other = build("stream", tmp_path, "--version", "8", "--pad-mb", "1")
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()


def test_sigterm_exits_zero_quickly_even_with_an_open_websocket(tmp_path):
    with Running(build("api", tmp_path, "--version", "1")) as running:
        ws = wsclient.connect("127.0.0.1", running.port, "/api/v1/ws")
        try:
            ws.recv_text(timeout=5)
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            assert running.process.wait(timeout=5) == 0
            assert time.monotonic() - started < 2
        finally:
            ws.close(timeout=0.5)


def test_bad_version_argument_is_refused(tmp_path):
    done = subprocess.run([PYTHON, str(SCRIPTS / "build-demo-api"), "--version", "", "-o", str(tmp_path / "x")],
                          capture_output=True, timeout=30)
    assert done.returncode == 2 and not (tmp_path / "x").exists()

"""The remote Incus transport's pure parts (fabfile/incus.py): the exec request, the stdin and interrupt
commands (run for real with the local sh), the operation's outcome, the CLI's remote configuration and
the route check's reading of ``ip -json route get``."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from fabfile import incus
from fabfile.incus import IncusError


def test_a_remote_exec_records_its_output_and_waits_for_no_websocket():
    request = incus.remote_exec_request("echo 'a b'", 5, "m1")
    assert request["record-output"] is True and request["wait-for-websocket"] is False
    assert request["interactive"] is False
    assert request["command"] == ["timeout", "-k", str(incus.KILL_AFTER), "5", "sh", "-c", "echo 'a b'"]
    assert request["environment"] == {incus.EXEC_MARK: "m1"}
    assert incus.remote_exec_request("true", None, "m2")["command"] == ["sh", "-c", "true"]


@pytest.mark.parametrize("command, expected", [
    ("cat", "line one\nline 'two' $HOME\n"),
    ("false; cat; echo after", "line one\nline 'two' $HOME\nafter\n"),  # statements keep their own meaning
    ("read first; echo \"[$first]\"", "[line one]\n"),
])
def test_stdin_comes_from_the_pushed_file_which_is_gone_before_the_command_runs(tmp_path, command, expected):
    path = tmp_path / "stdin it's"
    path.write_text("line one\nline 'two' $HOME\n")
    script = incus.with_stdin_file(f"test -e {incus.q(str(path))} && echo still there; {command}", str(path))
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert done.stdout == expected
    assert not path.exists()


def test_stdin_that_cannot_be_opened_fails_before_the_command():
    done = subprocess.run(["sh", "-c", incus.with_stdin_file("echo ran", "/nonexistent/veza-stdin")],
                          capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "ran" not in done.stdout and "cannot open" in done.stderr


def test_ending_a_marked_exec_kills_its_processes_and_no_others():
    mark, other = "unit-" + os.urandom(6).hex(), "unit-" + os.urandom(6).hex()
    started = [subprocess.Popen(["sh", "-c", "sleep 30 & wait"], env={**os.environ, incus.EXEC_MARK: m})
               for m in (mark, other)]
    try:
        time.sleep(0.3)
        subprocess.run(["sh", "-c", incus.end_marked_command(mark)], timeout=10, check=True)
        assert started[0].wait(timeout=5) == -9
        assert started[1].poll() is None
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)


def test_an_operation_tells_whether_the_command_ended_its_code_and_its_output_files():
    assert incus.exec_outcome({"status": "Running", "metadata": {}}) == (False, None, {})
    outputs = {"1": "/1.0/instances/x/logs/exec-output/exec_a.stdout", "2": "/1.0/instances/x/logs/exec-output/exec_a.stderr"}
    assert incus.exec_outcome({"status": "Success", "metadata": {"return": 7, "output": outputs}}) == (True, 7, outputs)
    with pytest.raises(IncusError, match="Instance is not running"):
        incus.exec_outcome({"status": "Failure", "err": "Instance is not running", "metadata": {}})
    with pytest.raises(IncusError, match="without exit code"):
        incus.exec_outcome({"status": "Success", "metadata": {"return": 0}})


CONFIG = {"default-remote": "local", "remotes": {
    "incus-2": {"addr": "https://10.181.40.50:8443", "protocol": "incus", "auth_type": "tls"},
    "other-port": {"addr": "https://10.181.40.51:9443"},
    "images": {"addr": "https://images.linuxcontainers.org", "protocol": "simplestreams"},
    "local": {"addr": "unix://", "protocol": "incus"},
}}


def test_a_remote_is_found_in_the_cli_configuration_with_its_certificates():
    point = incus.remote_endpoint(CONFIG, "incus-2", "/conf")
    assert (point.host, point.port) == ("10.181.40.50", 8443)
    assert (point.server_cert, point.client_cert, point.client_key) == (
        "/conf/servercerts/incus-2.crt", "/conf/client.crt", "/conf/client.key")
    assert incus.remote_endpoint(CONFIG, "other-port", "/conf").port == 9443


@pytest.mark.parametrize("remote, message", [
    ("incus-9", "not configured on this machine; add it: incus remote add incus-9 TOKEN"),
    ("images", "not an Incus HTTPS remote"),
    ("local", "not an Incus HTTPS remote"),
])
def test_a_remote_that_cannot_be_reached_over_https_is_one_clear_line(remote, message):
    with pytest.raises(IncusError, match=message) as caught:
        incus.remote_endpoint(CONFIG, remote, "/conf")
    assert "\n" not in str(caught.value)


def test_the_route_device_is_read_from_ip_route_get():
    assert incus.route_device('[{"dst":"10.181.40.50","dev":"vezabr0","prefsrc":"10.181.40.1"}]') == "vezabr0"
    assert incus.route_device('[{"dst":"192.0.2.1","gateway":"10.0.0.1","dev":"eth0"}]') == "eth0"
    assert incus.route_device("") == "" and incus.route_device("[]") == "" and incus.route_device("RTNETLINK") == ""


def test_file_push_headers_create_the_file_root_owned_with_its_mode():
    headers = incus.file_headers(12, "640")
    assert headers["X-Incus-mode"] == "0640" and headers["Content-Length"] == "12"
    assert (headers["X-Incus-uid"], headers["X-Incus-gid"], headers["X-Incus-write"]) == ("0", "0", "overwrite")
    assert incus.files_path("h-x", "/etc/a b") == "/1.0/instances/h-x/files?path=/etc/a%20b"

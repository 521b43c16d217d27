"""Shared fixtures. Lab tests (marker `lab`) run against the real local Incus lab that `inv lab.up` builds."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# A shell that starts pytest in the background (`cmd &` without job control) makes it ignore
# SIGINT, and an ignored signal stays ignored in every child: the Ctrl-C tests would then
# interrupt nothing. A handler, unlike SIG_IGN, is reset to the default on exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
INV = [sys.executable, "-m", "invoke"]  # the inv of whatever environment runs pytest
BUILD = REPO / ".lab" / "build"


def inv(*args, check=True, timeout=600):
    """Run a real `inv` command from the repo root; return the completed process (text)."""
    done = subprocess.run([*INV, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"inv {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def assert_one_error_line(done, code, *needles):
    """Exit ``code``, stderr exactly one ``error:`` line (no traceback), naming ``needles``."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def end_process(process, grace=5):
    """End a process this test session started (by its Popen handle): TERM, then KILL, bounded."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace)


def build_demo(kind, version, *extra):
    """Build a stand-in binary (api or stream) into .lab/build and return its path."""
    BUILD.mkdir(parents=True, exist_ok=True)
    name = "veza-api" if kind == "api" else "stream-server"
    path = BUILD / f"{name}-{version}{'-'.join([''] + [e.strip('-') for e in extra])}"
    script = REPO / "scripts" / ("build-demo-api" if kind == "api" else "build-demo-stream")
    subprocess.run([sys.executable, str(script), "--version", version, "-o", str(path), *extra], check=True, timeout=300)
    return path


@pytest.fixture(scope="session")
def lab():
    """The lab is up (idempotent): containers running, addresses answering."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (Incus)")
    inv("lab.up", timeout=1800)
    return REPO / "hosts.yaml"


@pytest.fixture(scope="session")
def haproxy_ready(lab):
    inv("haproxy.setup")
    return lab


@pytest.fixture(scope="session")
def deployed_lab(haproxy_ready):
    """HAProxy configured, both services set up and running the v1 stand-ins, the monitor watching them
    (the failover gates check their alerts in Alertmanager)."""
    api_v1, stream_v1 = build_demo("api", "v1"), build_demo("stream", "v1")
    inv("api.setup")
    inv("api.deploy", "--binary", str(api_v1))
    inv("stream.setup")
    inv("stream.deploy", "--binary", str(stream_v1))
    inv("monitor.setup")
    return haproxy_ready

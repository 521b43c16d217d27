"""What every part of the lab shares: its paths, its error, its progress lines, running commands.

Commands go through the project's one subprocess helper and one Incus driver;
progress lines go through the one output module (masked like every task's).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_atomic
from ..incus import IncusError
from ..incus_api import Incus
from ..output import Output
from ..paths import REPO_ROOT
from ..process import ProcessNotFound, run_argv

LAB_DIR = REPO_ROOT / ".lab"
SSH_KEY = LAB_DIR / "ssh" / "id_ed25519"
KNOWN_HOSTS = LAB_DIR / "ssh" / "known_hosts"
IMAGE_CACHE = LAB_DIR / "image"
INCUSD = "/usr/libexec/incus/incusd"
INCUSD_LOG = LAB_DIR / "incusd.log"
# incusd repeats its log on stderr; kept apart so incusd.log has each line once, yet panics are not lost.
INCUSD_CONSOLE = LAB_DIR / "incusd.console.log"
INCUSD_PID = LAB_DIR / "incusd.pid"

STORAGE_POOL = "default"
SUPPORTED_CODENAMES = ("bookworm", "trixie")
# Codenames whose main suite lacks Incus: it comes from <codename>-backports.
INCUS_FROM_BACKPORTS = ("bookworm",)
BASE_PACKAGES = "systemd,systemd-sysv,dbus,iproute2,openssh-server,ca-certificates,curl,python3"
BUILD_TIMEOUT = 1200  # seconds for debootstrap; a slow mirror is fine, a hung one is not
APT_TIMEOUT = 900
BOOT_TIMEOUT = 60  # seconds for a container's systemd and sshd to come up
HEARTBEAT = 10  # seconds between progress lines of a long step
# Set last when a container is fully prepared: one without it was half-made and is recreated.
READY_KEY = "user.veza-lab.ready"
ROLE_SERVICES = ("haproxy", "keepalived", "veza-backend-api", "veza-stream-server")
SECRET_NAMES = ("database_password", "jwt_secret", "stream_signing_key")
# The VRRP password of the balancer pair: VRRP authentication carries 8 bytes.
SHORT_SECRET_NAMES = ("vrrp_password",)


class LabError(Exception):
    """A lab step failed; the message is what the user sees."""


@dataclass
class Step:
    name: str
    changed: bool
    seconds: float
    detail: str = ""


@dataclass
class LabReport:
    """What one ``lab.up`` did, phase by phase."""

    steps: list = field(default_factory=list)

    @property
    def changed(self) -> list:
        return [step for step in self.steps if step.changed]


class Progress:
    """One step line per phase (ok/changed + seconds), kept for the summary."""

    output = Output()

    def __init__(self):
        self.report = LabReport()
        self.started = time.monotonic()
        self._lock = threading.Lock()  # container phases finish on worker threads

    def record(self, name: str, changed: bool, seconds: float, detail: str = "") -> None:
        with self._lock:
            self.report.steps.append(Step(name, changed, seconds, detail))
        self.output.step("lab", "changed" if changed else "ok", seconds, name, detail)

    def phase(self, name: str, action, *args):
        """Run ``action(*args) -> (changed, detail)`` as one reported phase."""
        started = time.monotonic()
        changed, detail = action(*args)
        self.record(name, changed, time.monotonic() - started, detail)

    @classmethod
    def note(cls, text: str) -> None:
        """A progress line inside a long phase."""
        cls.output.line(f"      {text}")


def run(argv: list, *, timeout: float = 120, check: bool = True, input: str | None = None, env: dict | None = None):
    """Run a command without a shell; raise LabError naming it when it fails."""
    try:
        result = run_argv(argv, timeout=timeout, stdin=input.encode() if input is not None else None, env=env)
    except ProcessNotFound as exc:
        raise LabError(str(exc)) from None
    if check and not result.ok:
        raise LabError(f"`{result.command}` failed (exit {result.exited}): {tail(result.stderr or result.stdout, 5)}")
    return result


def tail(text: str, lines: int) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class LabIncus(Incus):
    """The project's Incus driver, its failures raised as LabError."""

    def run(self, *args, **kwargs):
        try:
            return super().run(*args, **kwargs)
        except (IncusError, ProcessNotFound) as exc:
            raise LabError(str(exc)) from None


INCUS = LabIncus()


def require_root(verb: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"lab.{verb} must run as root: it installs packages and drives the Incus daemon")


def write_atomically(path: Path, text: str, mode: int) -> None:
    """``files.write_atomic``: an interrupted run never leaves half a file."""
    write_atomic(path, text, mode, make_parents=True)


def display_path(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)

"""The one place that starts a local process: argv in, ``Result`` out, bounded in time.

The transports (local sh, incus exec/file push), the lab's Incus calls and the
failover stoppers all come through ``run_argv``; none opens a local shell.
Long-running processes (the Incus daemon, debootstrap with progress lines, the
VIP samplers) are started by ``start_argv``; their owner ends them by PID.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from .shell import argv_line


class ProcessNotFound(Exception):
    """The program to run is not installed; the message says which."""


@dataclass
class Result:
    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = 5) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:])


TimeoutExpired = subprocess.TimeoutExpired  # what Popen.wait raises, for owners of start_argv processes
TIMED_OUT = 124  # what timeout(1) reports, so callers can tell a hang from a failure


def run_argv(argv: list, *, timeout: float | None = 120, stdin: bytes | None = None, env: dict | None = None,
             shown: str | None = None) -> Result:
    """Run ``argv`` without a shell; stdin closed unless given; never raises for a non-zero exit."""
    shown = shown if shown is not None else argv_line(argv)
    try:
        done = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Result(shown, TIMED_OUT, "", f"timed out after {timeout}s")
    except FileNotFoundError:
        raise ProcessNotFound(f"`{argv[0]}` not found; is it installed?") from None
    return Result(shown, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


def start_argv(argv: list, *, stdout, stderr, new_session: bool = False, text: bool = False,
               cwd: str | None = None) -> subprocess.Popen:
    """Start ``argv`` without a shell, stdin closed; the caller owns the process and ends it by PID.

    ``new_session`` detaches it from this task's terminal (a daemon that must outlive the task and
    not receive its Ctrl-C); ``text`` gives line-buffered text pipes (a sampler read line by line).
    """
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd,
                                start_new_session=new_session, close_fds=True, text=text, bufsize=1 if text else -1)
    except FileNotFoundError:
        raise ProcessNotFound(f"`{argv[0]}` not found; is it installed?") from None

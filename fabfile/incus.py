"""The one Incus driver: argv builders (pure) and ``Incus`` that runs them.

Used by the incus transport, the lab and the failover stopper. Every instance
name goes after ``--`` and is validated, so a name such as ``--all`` can never
become an option (``incus stop --force --all`` would stop every instance).
"""

from __future__ import annotations

import json
import re

from .process import ProcessNotFound, Result, run_argv

INCUS = "incus"
# Incus's own rule: letters, digits and dashes, not starting with a digit or dash.
_INSTANCE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")
_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class IncusError(Exception):
    """Incus refused or failed; the message names the command and what it said."""


def instance_ref(name: str, remote: str = "local") -> str:
    """``NAME`` or ``REMOTE:NAME`` after checking both are plain names."""
    if not _INSTANCE_NAME.fullmatch(str(name)):
        raise IncusError(f"incus instance name {name!r} is not valid (letters, digits, '-', starting with a letter)")
    if remote in (None, "", "local"):
        return name
    if not _REMOTE_NAME.fullmatch(str(remote)):
        raise IncusError(f"incus remote {remote!r} is not a plain remote name")
    return f"{remote}:{name}"


def exec_argv(ref: str, command: str) -> list:
    return [INCUS, "exec", "--", ref, "sh", "-c", command]


def push_argv(local_path: str, ref: str, remote_path: str, mode: str | None = None) -> list:
    options = ["--mode", str(mode)] if mode else []
    return [INCUS, "file", "push", *options, "--", local_path, f"{ref}{remote_path}"]


def stop_argv(ref: str, force: bool = True) -> list:
    return [INCUS, "stop", *(["--force"] if force else []), "--", ref]


def start_argv(ref: str) -> list:
    return [INCUS, "start", "--", ref]


class Incus:
    """Runs ``incus`` sub-commands; ``check`` turns a failure into one IncusError line."""

    def run(self, *args, timeout: float = 120, check: bool = True, stdin: bytes | None = None) -> Result:
        result = run_argv([INCUS, *args], timeout=timeout, stdin=stdin)
        if check and not result.ok:
            raise IncusError(f"`{result.command}` failed (exit {result.exited}): {result.tail()}")
        return result

    def json(self, *args):
        """``incus ARGS --format json`` parsed."""
        return json.loads(self.run(*args, "--format", "json").stdout or "null")

    def query(self, path: str):
        """GET one API object; None when it does not exist."""
        done = self.run("query", "--", path, check=False, timeout=30)
        return json.loads(done.stdout) if done.ok else None

    def answers(self) -> bool:
        """True when a daemon answers (incus installed and incusd up)."""
        try:
            return self.run("info", check=False, timeout=15).ok
        except ProcessNotFound:
            return False

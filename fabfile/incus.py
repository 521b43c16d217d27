"""Incus commands as data (pure): instance references checked, and the argv of every ``incus`` call we make.

``incus_api.py`` runs them (``Incus``, the CLI) or talks to the local daemon (``LocalAPI``). Used by
the incus transport, the lab and the failover stopper. Every instance name goes after ``--`` and is
validated, so a name such as ``--all`` can never become an option (``incus stop --force --all``
would stop every instance).

``incus_api.LocalAPI`` talks to the local daemon's REST API over its unix socket (the standard
library's ``http.client``, and the ``websockets`` library for exec's streams): an
``incus exec`` costs a Go CLI start (about 20 ms of CPU) per call, a large part of a
no-op play's per-host cost on a small machine. pylxd speaks the same API but is written
for LXD (its headers and socket), brings ws4py, requests and cryptography into every
task's start-up, and we use three of its endpoints. Remotes keep the CLI, which owns
their addresses and certificates.
"""

from __future__ import annotations

import re

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


# Seconds between the TERM a timed-out command gets inside the instance and the KILL.
KILL_AFTER = 2


def remote_argv(command: str, timeout: float | None = None) -> list:
    """``sh -c COMMAND`` as run inside the instance; with a timeout, under coreutils ``timeout`` there,
    so a command that overruns is ended on the host too (ending the local client does not end it)."""
    shell = ["sh", "-c", command]
    if timeout is None:
        return shell
    return ["timeout", "-k", str(KILL_AFTER), f"{float(timeout):g}", *shell]


def exec_argv(ref: str, command: str, timeout: float | None = None) -> list:
    return [INCUS, "exec", "--", ref, *remote_argv(command, timeout)]


def push_argv(local_path: str, ref: str, remote_path: str, mode: str | None = None) -> list:
    options = ["--mode", str(mode)] if mode else []
    return [INCUS, "file", "push", *options, "--", local_path, f"{ref}{remote_path}"]


def stop_argv(ref: str, force: bool = True) -> list:
    return [INCUS, "stop", *(["--force"] if force else []), "--", ref]


def start_argv(ref: str) -> list:
    return [INCUS, "start", "--", ref]

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
task's start-up, and we use three of its endpoints. ``incus_remote.RemoteAPI`` talks to a
remote's API over HTTPS with the CLI's own client certificate and remote configuration; the
requests it sends, where a remote is and how its answers read are built and read here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .shell import q

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


def file_headers(size: int, mode: str) -> dict:
    """Headers of a file push (``POST /1.0/instances/NAME/files``): root-owned, created with ``mode``."""
    return {"Content-Type": "application/octet-stream", "Content-Length": str(size), "X-Incus-type": "file",
            "X-Incus-write": "overwrite", "X-Incus-uid": "0", "X-Incus-gid": "0",
            "X-Incus-mode": format(int(str(mode), 8), "04o")}


def files_path(name: str, remote_path: str) -> str:
    return f"/1.0/instances/{quote(name)}/files?path={quote(remote_path)}"


def check_push_answer(status: int, raw: bytes) -> None:
    """IncusError with the daemon's own words when a file push was refused."""
    if status == 200:
        return
    try:
        message = json.loads(raw).get("error") or raw.decode(errors="replace")
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")
    raise IncusError(message.strip() or f"HTTP {status}")


# A remote's exec (incus_remote.RemoteAPI): the daemon records stdout and stderr in two files that are
# read and deleted after the command's end, over the one kept HTTPS connection. No websocket: each
# would be a new TLS connection per stream, and a threaded websocket client reading and writing one
# TLS socket from two threads at once loses the upgrade request now and then (see incus_remote.py).
EXEC_MARK = "VEZA_EXEC"  # environment variable naming one exec, so an interrupted one can be ended


def remote_exec_request(command: str, timeout: float | None, mark: str) -> dict:
    """The body of ``POST /1.0/instances/NAME/exec`` for a command whose output the daemon records."""
    return {"command": remote_argv(command, timeout), "environment": {EXEC_MARK: mark}, "interactive": False,
            "wait-for-websocket": False, "record-output": True}


def with_stdin_file(command: str, path: str) -> str:
    """``command`` reading standard input from ``path`` (pushed before), which it removes first: a recorded
    exec has no input stream. Separate lines, so a command of several statements keeps its own meaning;
    the shell exits before the command when the file cannot be opened (a failed ``exec`` redirection)."""
    return f"exec < {q(path)}\nrm -f -- {q(path)}\n{command}"


def end_marked_command(mark: str) -> str:
    """Kill every process of the exec marked ``mark`` (its environment says so): an interrupted client's
    command ends inside too, as an ``incus exec`` client's does when it is killed."""
    wanted = q(f"{EXEC_MARK}={mark}")
    # One grep over every process's environment, not one per process: where a container's processes
    # are many (or on a host, which sees its containers' too) a fork each took seconds.
    return (f"for f in $(grep -lzx -- {wanted} /proc/[0-9]*/environ 2>/dev/null); do p=${{f#/proc/}}; "
            f"kill -KILL \"${{p%/environ}}\" 2>/dev/null; done; true")


def exec_outcome(operation: dict) -> tuple:
    """(finished, exit code, {"1": stdout URL, "2": stderr URL}) from a recorded exec's operation; IncusError
    when the daemon could not run the command."""
    status = operation.get("status")
    if status in ("Pending", "Running"):
        return False, None, {}
    metadata = operation.get("metadata") or {}
    if status != "Success":
        raise IncusError(operation.get("err") or f"exec ended {status}")
    outputs = metadata.get("output") or {}
    if "return" not in metadata or not all(isinstance(outputs.get(fd), str) for fd in ("1", "2")):
        raise IncusError(f"exec answer without exit code or output files: {json.dumps(metadata)[:200]}")
    return True, int(metadata["return"]), {fd: outputs[fd] for fd in ("1", "2")}


@dataclass(frozen=True)
class RemoteEndpoint:
    """Where a remote's API is and the certificates that reach it (the incus CLI's own files)."""

    name: str
    host: str
    port: int
    server_cert: str  # pinned when the remote was added
    client_cert: str
    client_key: str

    @property
    def shown(self) -> str:
        return f"incus remote {self.name} ({self.host}:{self.port})"


def remote_endpoint(config: dict, remote: str, directory: str) -> RemoteEndpoint:
    """The endpoint of ``remote`` from the CLI's parsed ``config.yml`` in ``directory``; IncusError naming the fix."""
    entry = ((config or {}).get("remotes") or {}).get(remote)
    if not isinstance(entry, dict):
        raise IncusError(f"incus remote {remote!r} is not configured on this machine; add it: incus remote add {remote} TOKEN")
    address = urlsplit(str(entry.get("addr", "")))
    try:
        port = address.port or 8443
    except ValueError:
        port = None
    if address.scheme != "https" or not address.hostname or port is None or entry.get("protocol", "incus") != "incus":
        raise IncusError(f"incus remote {remote!r} is not an Incus HTTPS remote ({entry.get('addr')}); "
                         f"only those are reached through their API")
    return RemoteEndpoint(remote, address.hostname, port, f"{directory}/servercerts/{remote}.crt",
                          f"{directory}/client.crt", f"{directory}/client.key")


def route_device(ip_route_json: str) -> str:
    """The device of ``ip -json route get ADDRESS``'s answer ('' when it has none)."""
    try:
        routes = json.loads(ip_route_json)
        return str(routes[0].get("dev", "")) if routes and isinstance(routes[0], dict) else ""
    except ValueError:
        return ""

"""One interface to reach a host, whatever carries it: ``run`` and ``put``.

The subset of ``fabric.Connection`` the roles need. Every command string the
roles build is quoted with ``shlex.quote`` before it gets here; the transports
hand it to ``sh -c`` as a single argument, never through a local shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from .inventory import Host

CONNECT_TIMEOUT = 10  # seconds to open an SSH connection
CONNECT_ATTEMPTS = 3  # bounded retries for a failed SSH connection, with backoff


class TransportError(Exception):
    """The host could not be reached at all (not a command that failed)."""


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


class CommandFailed(Exception):
    def __init__(self, host: str, result: Result):
        self.host = host
        self.result = result
        super().__init__(f"{host}: exit {result.exited}: {result.tail()}")


def q(value) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(str(value))


class Transport:
    """Base: run a shell command on the host, put a file on the host."""

    def __init__(self, host: Host):
        self.host = host
        self.name = host.name

    @property
    def vars(self) -> dict:
        return self.host.vars

    def run(self, command: str, *, warn: bool = False, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        result = self._run(command, timeout=timeout, stdin=stdin)
        if not result.ok and not warn:
            raise CommandFailed(self.name, result)
        return result

    def put(self, source, remote: str, *, owner: str | None = None, group: str | None = None, mode: str | None = None) -> None:
        """Copy a local path or bytes to ``remote``, then set owner/group/mode."""
        if isinstance(source, (bytes, bytearray)):
            with tempfile.NamedTemporaryFile(prefix="veza-put-", delete=False) as handle:
                handle.write(source)
            try:
                self._put(handle.name, remote, mode)
            finally:
                os.unlink(handle.name)
        else:
            self._put(os.fspath(source), remote, mode)
        if owner or group:
            self.run(f"chown {q((owner or '') + (':' + group if group else ''))} {q(remote)}")

    def close(self) -> None:
        pass

    # Subclasses provide these two.
    def _run(self, command, *, timeout, stdin) -> Result:
        raise NotImplementedError

    def _put(self, local_path: str, remote: str, mode: str | None) -> None:
        raise NotImplementedError


def _subprocess(argv: list, command: str, timeout, stdin) -> Result:
    try:
        done = subprocess.run(argv, input=stdin if stdin is not None else b"", capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Result(command, 124, "", f"timed out after {timeout}s")
    except FileNotFoundError as exc:
        raise TransportError(f"{argv[0]} not found ({exc.strerror}); is it installed?") from None
    return Result(command, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))


class LocalTransport(Transport):
    """The machine the tool runs on."""

    def _run(self, command, *, timeout, stdin):
        return _subprocess(["sh", "-c", command], command, timeout, stdin)

    def _put(self, local_path, remote, mode):
        staging = remote + ".veza-put"
        try:
            shutil.copyfile(local_path, staging)
            if mode:
                os.chmod(staging, int(str(mode), 8))
            os.replace(staging, remote)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot write {remote}: {exc.strerror}") from None


class IncusTransport(Transport):
    """``incus exec [REMOTE:]NAME -- sh -c CMD`` and ``incus file push``."""

    def __init__(self, host: Host):
        super().__init__(host)
        remote = host.vars.get("incus_remote") or "local"
        instance = host.vars.get("incus_name", host.name)
        self.instance = instance if remote == "local" else f"{remote}:{instance}"

    def _run(self, command, *, timeout, stdin):
        result = _subprocess(["incus", "exec", self.instance, "--", "sh", "-c", command], command, timeout, stdin)
        if result.exited != 0 and result.stderr.startswith("Error:") and not result.stdout:
            # incus itself failed (instance missing or stopped), not the command.
            raise TransportError(f"{self.name}: incus exec failed: {result.stderr.strip()}")
        return result

    def _put(self, local_path, remote, mode):
        argv = ["incus", "file", "push", local_path, f"{self.instance}{remote}" if remote.startswith("/") else f"{self.instance}/{remote}"]
        if mode:
            argv += ["--mode", str(mode)]
        result = _subprocess(argv, " ".join(map(q, argv)), 300, None)
        if not result.ok:
            raise TransportError(f"{self.name}: incus file push to {remote} failed: {result.tail()}")


class SshTransport(Transport):
    """fabric.Connection with strict host keys by default and bounded reconnects.

    Inventory vars: ``address``, ``ssh_user`` (root), ``ssh_port`` (22),
    ``ssh_key_file``, ``ssh_known_hosts`` (extra known_hosts file), and
    ``ssh_host_key_policy``: ``strict`` (default, unknown keys rejected) or
    ``accept-new``.
    """

    def __init__(self, host: Host):
        super().__init__(host)
        self._connection = None

    def _connect(self):
        if self._connection is not None:
            return self._connection
        import fabric
        import paramiko

        v = self.host.vars
        kwargs = {"banner_timeout": CONNECT_TIMEOUT, "auth_timeout": CONNECT_TIMEOUT}
        if v.get("ssh_key_file"):
            kwargs["key_filename"] = os.path.expanduser(v["ssh_key_file"])
            kwargs["look_for_keys"] = False
            kwargs["allow_agent"] = False
        policy = v.get("ssh_host_key_policy", "strict")
        if policy not in ("strict", "accept-new"):
            raise TransportError(f"{self.name}: ssh_host_key_policy '{policy}' is unknown; use strict or accept-new")
        last_error = None
        for attempt in range(CONNECT_ATTEMPTS):
            connection = fabric.Connection(
                host=v["address"], user=v.get("ssh_user", "root"), port=int(v.get("ssh_port", 22)),
                connect_timeout=CONNECT_TIMEOUT, connect_kwargs=kwargs,
            )
            client = connection.client
            client.load_system_host_keys()
            if v.get("ssh_known_hosts"):
                known = os.path.expanduser(v["ssh_known_hosts"])
                if os.path.exists(known):
                    client.load_host_keys(known)
            client.set_missing_host_key_policy(
                paramiko.AutoAddPolicy() if policy == "accept-new" else paramiko.RejectPolicy()
            )
            try:
                connection.open()
                self._connection = connection
                return connection
            except paramiko.SSHException as exc:
                if "not found in known_hosts" in str(exc) or "Bad host key" in str(exc.__class__.__name__):
                    raise TransportError(
                        f"{self.name}: host key of {v['address']} is not known; add it to ssh_known_hosts "
                        "or set ssh_host_key_policy: accept-new"
                    ) from None
                last_error = exc
            except OSError as exc:
                last_error = exc
            time.sleep(0.5 * 2**attempt)
        raise TransportError(f"{self.name}: ssh to {v['address']} failed after {CONNECT_ATTEMPTS} attempts: {last_error}")

    def _run(self, command, *, timeout, stdin):
        import io

        connection = self._connect()
        result = connection.run(
            command, hide=True, warn=True, timeout=timeout, in_stream=io.BytesIO(stdin or b""),
        )
        return Result(command, result.exited, result.stdout, result.stderr)

    def _put(self, local_path, remote, mode):
        connection = self._connect()
        connection.put(local_path, remote=remote)
        if mode:
            self.run(f"chmod {q(mode)} {q(remote)}")

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None


TRANSPORT_CLASSES = {"incus": IncusTransport, "ssh": SshTransport, "local": LocalTransport}


def connect(host: Host) -> Transport:
    return TRANSPORT_CLASSES[host.connection](host)

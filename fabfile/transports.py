"""One interface to reach a host, whatever carries it: ``run`` and ``put``.

The subset of ``fabric.Connection`` the roles need. Command strings arrive
already quoted (``shell.q``); the transports hand them to ``sh -c`` as a single
argument, never through a local shell. Fabric and Paramiko are imported only
when an ssh host is actually reached, so tasks on incus or local hosts start fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from . import incus, incus_api
from .files import atomic_file
from .process import TIMED_OUT, ProcessNotFound, Result, run_argv
from .shell import Command, Upload, q

CONNECT_TIMEOUT = 10  # seconds to open an SSH connection
CONNECT_ATTEMPTS = 3  # bounded retries for a connection that could not be opened (never for auth or host keys)
PUSH_TIMEOUT = 300


class TransportError(Exception):
    """The host could not be reached at all (not a command that failed)."""


class CommandFailed(Exception):
    def __init__(self, host: str, result: Result):
        self.host = host
        self.result = result
        super().__init__(f"{host}: exit {result.exited}: {result.tail()}")


class Transport:
    """Base: run a shell command on the host, put a file on the host."""

    def __init__(self, host):
        self.host = host
        self.name = host.name

    @property
    def vars(self) -> dict:
        return self.host.vars

    def run(self, command, *, warn: bool = False, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        """Run a ``Command`` (or a quoted string); raise CommandFailed on a non-zero exit unless ``warn``."""
        if isinstance(command, Command):
            timeout = command.timeout if timeout is None else timeout
            command = command.command
        result = self._run(command, timeout=timeout, stdin=stdin)
        if not result.ok and not warn:
            raise CommandFailed(self.name, result)
        return result

    def put(self, source, remote: str | None = None, *, mode: str = "0600") -> None:
        """Copy a local path or bytes to ``remote``; the file is born with ``mode`` (never wider first)."""
        if isinstance(source, Upload):
            source, remote, mode = source.content, source.remote, source.mode
        if isinstance(source, (bytes, bytearray)):
            handle, staging = tempfile.mkstemp(prefix="veza-put-")  # 0600 from birth
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(source)
                self._put(staging, remote, mode)
            finally:
                os.unlink(staging)
        else:
            self._put(os.fspath(source), remote, mode)

    def close(self) -> None:
        pass

    def warm(self) -> None:
        """Start opening the connection in the background (nothing runs on the host); the first command
        then finds it open. A failure is left for that command to meet and report."""

    # Subclasses provide these two.
    def _run(self, command, *, timeout, stdin) -> Result:
        raise NotImplementedError

    def _put(self, local_path: str, remote: str, mode: str) -> None:
        raise NotImplementedError


def _local(argv: list, command: str, timeout, stdin) -> Result:
    try:
        return run_argv(argv, timeout=timeout, stdin=stdin, shown=command)
    except ProcessNotFound as exc:
        raise TransportError(str(exc)) from None


class LocalTransport(Transport):
    """The machine the tool runs on."""

    def _run(self, command, *, timeout, stdin):
        return _local(["sh", "-c", command], command, timeout, stdin)

    def _put(self, local_path, remote, mode):
        # A fresh name made with O_EXCL in the target directory, born with its mode: no planted symlink is
        # followed, and the file appears complete or not at all.
        try:
            with atomic_file(remote, int(str(mode), 8), apply_umask=False) as staging, \
                    open(local_path, "rb") as source, open(staging, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot write {remote}: {exc.strerror}") from None


class IncusTransport(Transport):
    """An instance through its daemon's REST API, no CLI process per call: the local daemon over its
    unix socket (``incus_api.LocalAPI``), a remote's over HTTPS with the CLI's client certificate
    (``incus_remote.RemoteAPI``, kept connections). Without the local socket, ``incus exec -- NAME sh -c
    CMD`` and ``incus file push --mode``. Either way a timeout also ends the command inside the instance."""

    def __init__(self, host):
        super().__init__(host)
        name, remote = host.vars.get("incus_name", host.name), host.vars.get("incus_remote")
        try:
            self.instance = incus.instance_ref(name, remote)
        except incus.IncusError as exc:
            raise TransportError(f"{host.name}: {exc}") from None
        self.api_name = name  # an API addresses the instance within its own daemon
        if self.instance != name:  # REMOTE:NAME
            from .incus_remote import remote_api

            try:
                self.api = remote_api(remote, host.vars.get("incus_remote_any_route") is True)
            except incus.IncusError as exc:
                raise TransportError(f"{host.name}: {exc}") from None
            return
        socket_path = incus_api.local_socket()
        self.api = incus_api.LocalAPI(socket_path) if socket_path else None

    def warm(self) -> None:
        if self.instance != self.api_name:  # a remote's: the TLS connection (the local socket needs none)
            self.api.warm()

    def _run(self, command, *, timeout, stdin):
        started = time.monotonic()
        if self.api is not None:
            try:
                result = self.api.exec(self.api_name, command, timeout, stdin)
            except incus.IncusError as exc:
                raise TransportError(f"{self.name}: incus exec failed: {exc}") from None
        else:
            result = _local(incus.exec_argv(self.instance, command, timeout), command,
                            None if timeout is None else timeout + incus.KILL_AFTER + 1, stdin)
            if result.exited != 0 and result.stderr.startswith("Error:") and not result.stdout \
                    and not self._instance_running():
                # incus itself failed (instance missing or stopped), not the command (nft, for one, also
                # starts its messages with "Error:", hence the question to the daemon).
                raise TransportError(f"{self.name}: incus exec failed: {result.stderr.strip()}")
        if timeout is not None and result.exited == TIMED_OUT and time.monotonic() - started >= timeout:
            # Ended by the timeout inside the instance: said as a local timeout says it.
            result = Result(result.command, TIMED_OUT, result.stdout, result.stderr or f"timed out after {timeout}s")
        return result

    def _instance_running(self) -> bool:
        remote, _, name = self.instance.rpartition(":")
        state = incus_api.Incus().query(f"{remote + ':' if remote else ''}/1.0/instances/{name}/state")
        return isinstance(state, dict) and state.get("status") == "Running"

    def _put(self, local_path, remote, mode):
        # The file is created with its mode by incus itself, so it is never readable by others first.
        remote = remote if remote.startswith("/") else f"/{remote}"
        if self.api is not None:
            try:
                return self.api.push(self.api_name, local_path, remote, mode)
            except incus.IncusError as exc:
                raise TransportError(f"{self.name}: incus file push to {remote} failed: {exc}") from None
        argv = incus.push_argv(local_path, self.instance, remote, mode)
        result = _local(argv, " ".join(map(q, argv)), PUSH_TIMEOUT, None)
        if not result.ok:
            raise TransportError(f"{self.name}: incus file push to {remote} failed: {result.tail()}")


class SshTransport(Transport):
    """fabric.Connection with strict host keys by default; see ``ssh_connection`` for the policy.

    With ``become`` (``ansible_become``), every command runs through ``sudo -n -u become_user``
    (root by default) and uploads are staged in a private temporary file of the login user, then
    copied into place by the become user. sudo must not ask for a password (NOPASSWD)."""

    def __init__(self, host):
        super().__init__(host)
        self._connection = None
        v = host.vars
        self.login_user = v.get("ssh_user", "root")
        self.become_user = v.get("become_user", "root") if v.get("become") is True else None
        if self.become_user == self.login_user:
            self.become_user = None  # already that user: nothing to escalate

    def _connect(self):
        if self._connection is None:
            from .ssh_connection import open_connection

            self._connection = open_connection(self.host, TransportError, CONNECT_TIMEOUT, CONNECT_ATTEMPTS)
        return self._connection

    def _run(self, command, *, timeout, stdin):
        if self.become_user is None:
            return self._ssh(command, timeout=timeout, stdin=stdin)
        result = self._ssh(f"sudo -n -H -u {q(self.become_user)} -- sh -c {q(command)}", timeout=timeout, stdin=stdin)
        if result.exited == 127 and "sudo" in result.stderr and "not found" in result.stderr:
            raise TransportError(f"{self.name}: become needs sudo, which is not installed; install it or log in as "
                                 f"{self.become_user}")
        if result.exited == 1 and "sudo:" in result.stderr and "password is required" in result.stderr:
            raise TransportError(f"{self.name}: sudo asks {self.login_user} for a password; become passwords are not "
                                 f"supported: allow NOPASSWD sudo to {self.become_user} for {self.login_user}")
        return Result(command, result.exited, result.stdout, result.stderr)

    def _ssh(self, command, *, timeout=None, stdin=None) -> Result:
        """``command`` as the login user."""
        import io

        from invoke.exceptions import CommandTimedOut

        connection = self._connect()
        try:
            result = connection.run(command, hide=True, warn=True, timeout=timeout, in_stream=io.BytesIO(stdin or b""))
        except CommandTimedOut:
            return Result(command, 124, "", f"timed out after {timeout}s")
        except (OSError, EOFError) as exc:
            self.close()
            raise TransportError(f"{self.name}: ssh connection lost: {exc}") from None
        return Result(command, result.exited, result.stdout, result.stderr)

    def _put(self, local_path, remote, mode):
        if self.become_user is None:
            self._upload(local_path, remote)
        else:
            # The login user cannot write there: stage privately, then the become user copies it in.
            staging = self._ssh("umask 077 && mktemp /tmp/.veza-put.XXXXXXXX")
            if not staging.ok:
                raise TransportError(f"{self.name}: cannot make a temporary file: {staging.tail()}")
            path = staging.stdout.strip()
            try:
                self._upload(local_path, path, created=True)
                self.run(f"umask 077 && set -C && cat -- {q(path)} > {q(remote)}")
            finally:
                self._ssh(f"rm -f -- {q(path)}")
        if int(str(mode), 8) != 0o600:
            self.run(f"chmod {q(mode)} {q(remote)}")

    def _upload(self, local_path, remote, created=False):
        """SFTP as the login user into a file born private: created empty under umask 077 (refusing an
        existing name) unless ``created`` already."""
        if not created:
            self.run(f"umask 077 && set -C && : > {q(remote)}")
        try:
            self._connect().put(local_path, remote=remote)
        except (OSError, EOFError) as exc:
            raise TransportError(f"{self.name}: upload to {remote} failed: {exc}") from None

    def close(self):
        if self._connection is not None:
            self._connection.close()
            self._connection = None


TRANSPORT_CLASSES = {"incus": IncusTransport, "ssh": SshTransport, "local": LocalTransport}


def connect(host) -> Transport:
    return TRANSPORT_CLASSES[host.connection](host)


def warm(hosts) -> None:
    """Start opening the connections to ``hosts`` (``Transport.warm``) while the caller does local work;
    a host whose transport cannot even be made is left for its run to report."""
    for host in hosts:
        try:
            connect(host).warm()
        except TransportError:
            pass

"""Incus at run time: ``Incus`` runs the CLI (remotes, the lab), ``LocalAPI`` talks to the local daemon's
REST API over its unix socket (the incus transport's exec and push). The argv and names they use are
built in ``incus.py``, commands as data."""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
from urllib.parse import quote

from .incus import INCUS, KILL_AFTER, IncusError, check_push_answer, file_headers, files_path, remote_argv
from .process import TIMED_OUT, ProcessNotFound, Result, run_argv


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


def local_socket() -> str | None:
    """The local daemon's unix socket where the incus CLI looks for it, when it is there."""
    path = os.environ.get("INCUS_SOCKET") or os.path.join(os.environ.get("INCUS_DIR", "/var/lib/incus"), "unix.socket")
    return path if os.path.exists(path) else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None):
        super().__init__("incus", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


REQUEST_TIMEOUT = 60  # seconds for one API request that is not a wait (the daemon answers at once)


def _drop(streams) -> None:
    """Close websockets without the closing handshake: the daemon never answers one on a stream
    it is still writing, so a polite close would wait out its timeout on each."""
    for stream in streams:
        try:
            stream.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed
        stream.socket.close()


class LocalAPI:
    """Exec and file push through the local daemon's REST API over its unix socket.

    Exec is the CLI's own exchange without the CLI: the exec request, then one websocket per
    stream (control, stdin, stdout, stderr, opened with the ``websockets`` library, already our
    dependency for the load tests) and the operation's end for the exit code. (Recording the output
    on the daemon instead costs four more requests, each loading the instance: more daemon CPU
    than the CLI it replaces.) A ``timeout`` bounds both ends: the wait here and the command inside
    the instance (``remote_argv``). An interrupted exec drops its streams at once; what the
    command does then is the daemon's doing, as when an ``incus exec`` client is killed.
    """

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def _request(self, connection, method: str, path: str, body=None, headers=None, timeout=REQUEST_TIMEOUT):
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise IncusError(f"incus API {method} {path}: {exc}") from None

    def _call(self, connection, method: str, path: str, payload=None, **kwargs) -> dict:
        """A JSON request; the daemon's error (instance missing, not running...) raised as IncusError."""
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        _, raw = self._request(connection, method, path, body, headers, **kwargs)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise IncusError(f"incus API {method} {path}: unreadable answer {raw[:200]!r}") from None
        if answer.get("type") == "error":
            raise IncusError(answer.get("error") or f"error {answer.get('error_code')}")
        return answer

    def get(self, path: str):
        """One API object's metadata; None when the daemon says it does not exist."""
        connection = _UnixHTTPConnection(self.socket_path, REQUEST_TIMEOUT)
        try:
            return self._call(connection, "GET", path).get("metadata")
        except IncusError:
            return None
        finally:
            connection.close()

    def exec(self, name: str, command: str, timeout: float | None = None, stdin: bytes | None = None,
             shown: str | None = None) -> Result:
        """Run ``sh -c command`` in instance ``name`` (a checked name); stdout, stderr and the exit code."""
        import contextlib
        import threading
        import time

        # Imported here: only a task that reaches the local daemon pays for it.
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import unix_connect

        shown = command if shown is None else shown
        # The client stops waiting a little after the command's own timeout has ended it inside.
        grace = None if timeout is None else math.ceil(timeout) + KILL_AFTER + 1
        deadline = None if grace is None else time.monotonic() + grace
        timed_out = threading.Event()

        def remaining():
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        def collect(stream, chunks):
            try:
                while True:
                    message = stream.recv(timeout=remaining())
                    chunks.append(message if isinstance(message, bytes) else message.encode())
            except TimeoutError:
                timed_out.set()
            except (WebSocketException, OSError):
                pass  # the daemon closes a stream when the command's end of it closed

        connection = _UnixHTTPConnection(self.socket_path, REQUEST_TIMEOUT)
        opened = []
        with contextlib.closing(connection), contextlib.ExitStack() as streams:
            started = self._call(connection, "POST", f"/1.0/instances/{quote(name)}/exec", {
                "command": remote_argv(command, timeout), "environment": {}, "interactive": False,
                "wait-for-websocket": True, "record-output": False})
            operation, secrets = started["operation"], started["metadata"]["metadata"]["fds"]
            try:
                for fd in ("control", "0", "1", "2"):  # the daemon starts the command once all four are open
                    opened.append(streams.enter_context(unix_connect(
                        self.socket_path, f"ws://incus{operation}/websocket?secret={quote(secrets[fd])}",
                        compression=None, ping_interval=None, max_size=None, user_agent_header=None,
                        open_timeout=REQUEST_TIMEOUT, close_timeout=5)))
                _, to_stdin, from_stdout, from_stderr = opened
                if stdin:
                    to_stdin.send(bytes(stdin))
                to_stdin.close()  # end of input: the command reads EOF
                stdout, stderr = [], []
                reader = threading.Thread(target=collect, args=(from_stderr, stderr), daemon=True)
                reader.start()
                collect(from_stdout, stdout)
                reader.join(remaining())
            except (WebSocketException, OSError, KeyError) as exc:
                _drop(opened)
                raise IncusError(f"incus exec streams: {exc}") from None
            except BaseException:  # Ctrl-C (or SIGTERM raised as one): let go at once
                _drop(opened)
                raise
            if timed_out.is_set() or reader.is_alive():
                _drop(opened)
                return Result(shown, TIMED_OUT, b"".join(stdout).decode(errors="replace"), f"timed out after {timeout}s")
            wait = -1 if grace is None else max(1, math.ceil(remaining()))
            done = self._call(connection, "GET", f"{operation}/wait?timeout={wait}",
                              timeout=None if grace is None else wait + REQUEST_TIMEOUT)["metadata"]
            if done.get("status") != "Success":
                raise IncusError(done.get("err") or f"exec ended {done.get('status')}")
            code = (done.get("metadata") or {}).get("return", -1)
            return Result(shown, int(code), b"".join(stdout).decode(errors="replace"),
                          b"".join(stderr).decode(errors="replace"))

    def push(self, name: str, local_path: str, remote_path: str, mode: str) -> None:
        """Write ``local_path`` to ``remote_path`` in the instance, root-owned, created with ``mode``."""
        connection = _UnixHTTPConnection(self.socket_path, REQUEST_TIMEOUT)
        try:
            with open(local_path, "rb") as source:
                status, raw = self._request(connection, "POST", files_path(name, remote_path), source,
                                            file_headers(os.fstat(source.fileno()).st_size, mode), timeout=300)
        finally:
            connection.close()
        check_push_answer(status, raw)

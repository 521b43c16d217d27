"""The REST API of another Incus host (an ``incus remote``) over HTTPS, with the incus CLI's client certificate.

Where a remote is and which server certificate it has are read from the CLI's own configuration
(``config.yml``, ``servercerts/NAME.crt``, ``client.crt``/``client.key`` in ``INCUS_CONF`` or
``~/.config/incus``), so a remote added by hand (``incus remote add NAME TOKEN``) works as one the lab
added. The server must present exactly the pinned certificate: that answer proves it is our remote,
whatever else listens on the way. Before the first request to a remote, the kernel's route to its
address must go through an Incus-managed bridge of this machine (the lab's), never the default route,
unless the inventory says the remote is on a real network (``incus_remote_any_route: true``).

Connections are kept and reused (``http.client``, no TLS handshake per command): one per remote in a
sequential run, one per concurrent caller in a parallel play, each returned after an exchange read to
its end. A kept connection the daemon closed while idle is noticed before use, or its first failure
is retried once on a new one (the daemon never acted on a request it did not read).

Exec records the output on the daemon (``record-output``) and waits on the operation: four requests
on the kept connection (exec, wait, two reads), no websocket; a sweeper thread deletes the read files
on a connection of its own, off the commands' path (a run waits for it at its end, bounded). The
websocket exchange the local transport uses needs a TLS connection per stream, and with the
``websockets`` sync client over TLS the upgrade request was now and then never read by the daemon
(its log: no request for that stream, then "Timed out waiting for websockets to connect"): that
client reads the TLS socket in a thread while the caller's thread writes the request on it, and an
``ssl`` socket is not safe for both at once (the Go server's TLS 1.3 session tickets arrive just
then); its failure path then joined that reader, blocked in a TLS read no close wakes, for ever.
"""

from __future__ import annotations

import atexit
import http.client
import json
import math
import os
import secrets
import select
import ssl
import threading
import time
from urllib.parse import quote

import yaml

from .incus import (KILL_AFTER, IncusError, RemoteEndpoint, check_push_answer, end_marked_command, exec_outcome,
                    file_headers, files_path, remote_endpoint, remote_exec_request, route_device, with_stdin_file)
from .process import TIMED_OUT, ProcessNotFound, Result, run_argv

CONNECT_TIMEOUT = 5  # seconds to open a connection (TCP and TLS) to a remote
REQUEST_TIMEOUT = 30  # seconds for an answer the daemon gives at once
WAIT_STEP = 30  # seconds per operation wait: a command without a timeout is waited for in bounded steps
PUSH_TIMEOUT = 300
INTERRUPT_TIMEOUT = 3  # seconds for ending an interrupted command inside
SWEEP_TIMEOUT = 5  # seconds a run waits at its end for the last output files' deletion


def config_dir() -> str:
    """Where the incus CLI keeps its remotes and certificates."""
    return os.environ.get("INCUS_CONF") or os.path.join(os.path.expanduser("~"), ".config", "incus")


def endpoint(remote: str) -> RemoteEndpoint:
    directory = config_dir()
    try:
        with open(os.path.join(directory, "config.yml"), encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except OSError as exc:
        raise IncusError(f"cannot read the incus client configuration {directory}/config.yml ({exc.strerror}); "
                         f"add the remote: incus remote add {remote} TOKEN") from None
    except yaml.YAMLError:
        raise IncusError(f"{directory}/config.yml is not readable YAML; check it with: incus remote list") from None
    point = remote_endpoint(config if isinstance(config, dict) else {}, remote, directory)
    missing = [path for path in (point.server_cert, point.client_cert, point.client_key) if not os.path.exists(path)]
    if missing:
        raise IncusError(f"incus remote {remote!r}: {', '.join(missing)} missing; add the remote again "
                         f"(incus remote remove {remote}; incus remote add {remote} TOKEN)")
    return point


def tls_context(point: RemoteEndpoint) -> ssl.SSLContext:
    """Our client certificate presented; the server's must be the one pinned for this remote (its name is
    not the address, so only the certificate is checked, as the incus CLI does)."""
    try:
        context = ssl.create_default_context(cafile=point.server_cert)
        context.load_cert_chain(point.client_cert, point.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise IncusError(f"{point.shown}: unusable certificates in {config_dir()} ({exc}); add the remote again") from None
    context.check_hostname = False
    return context


def check_route(point: RemoteEndpoint) -> None:
    """Refuse ``point`` unless the kernel routes its address through an Incus-managed bridge of this machine."""
    from .incus_api import LocalAPI, local_socket

    try:
        device = route_device(run_argv(["ip", "-json", "route", "get", point.host], timeout=10).stdout)
    except ProcessNotFound:
        device = ""
    socket_path = local_socket()
    network = LocalAPI(socket_path).get(f"/1.0/networks/{quote(device)}") if device and socket_path else None
    if not (isinstance(network, dict) and network.get("managed") and network.get("type") == "bridge"):
        raise IncusError(f"{point.shown}: {point.host} is routed through '{device or '?'}', not a lab bridge; "
                         f"refusing to send anything there (inv lab.up adds the lab's route; for a remote on a "
                         f"real network set incus_remote_any_route: true)")


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)


def _still_open(connection) -> bool:
    """Whether an idle kept connection can carry the next request: nothing waits on it, or only TLS records
    for the connection itself (TLS 1.3 session tickets, which the server sends after the handshake: a
    connection opened ahead and not used yet has them pending), not an answer or the daemon's close."""
    sock = connection.sock
    if sock is None:
        return False
    if not select.select([sock], [], [], 0)[0]:
        return True
    sock.settimeout(0)  # the next request sets its own timeout again
    try:
        sock.recv(1)  # TLS processes the records; application data or the end means it is not reusable
    except ssl.SSLWantReadError:
        return True
    except OSError:
        return False
    return False


class RemoteAPI:
    """Exec and file push on one remote's instances, over kept HTTPS connections."""

    def __init__(self, point: RemoteEndpoint, any_route: bool = False):
        self.point = point
        self.any_route = any_route
        self._context = None
        self._idle = []
        self._lock = threading.Lock()
        self._route_checked = False
        self._sweeper = Sweeper(self)

    # -- connections

    def _connection(self):
        """(connection, reused): an idle kept one that is still open, else a new one."""
        with self._lock:
            if not self._route_checked and not self.any_route:
                check_route(self.point)
            self._route_checked = True
            if self._context is None:
                self._context = tls_context(self.point)
            while self._idle:
                connection = self._idle.pop()
                if _still_open(connection):
                    return connection, True
                connection.close()  # the daemon closed it (or said something unasked): not reusable
        return http.client.HTTPSConnection(self.point.host, self.point.port, timeout=CONNECT_TIMEOUT,
                                           context=self._context), False

    def _request(self, method: str, path: str, body=None, headers=None, timeout: float = REQUEST_TIMEOUT):
        """(status, body) of one exchange; IncusError in one line when the remote cannot be reached."""
        for attempt in (1, 2):
            connection, reused = self._connection()
            doing = "connecting"
            try:
                if connection.sock is None:
                    connection.timeout = min(CONNECT_TIMEOUT, timeout)
                    connection.connect()
                connection.sock.settimeout(timeout)
                doing = f"waiting for {method} {path.split('?')[0]}"
                if hasattr(body, "seek"):
                    body.seek(0)
                connection.request(method, path, body=body, headers=headers or {})
                response = connection.getresponse()
                answer = response.status, response.read()
            except _STALE as exc:
                connection.close()
                if reused and attempt == 1:
                    continue  # closed by the daemon while idle: it never read this request
                raise IncusError(f"{self.point.shown}: connection lost ({exc or type(exc).__name__})") from None
            except ssl.SSLCertVerificationError:
                connection.close()
                raise IncusError(f"{self.point.shown} presents another certificate than the one pinned when the "
                                 f"remote was added; refusing it (add the remote again if it was reinstalled)") from None
            except TimeoutError:
                connection.close()
                raise IncusError(f"{self.point.shown} unreachable: no answer {doing} (timeout {timeout:g}s); "
                                 f"is it up? (inv lab.status)") from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
                raise IncusError(f"{self.point.shown} unreachable: {reason}; is it up? (inv lab.status)") from None
            except BaseException:  # Ctrl-C: the exchange is cut in the middle, the connection unusable
                connection.close()
                raise
            if connection.sock is not None:  # else the daemon asked to close it after this answer
                with self._lock:
                    self._idle.append(connection)
            return answer
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, payload=None, timeout: float = REQUEST_TIMEOUT) -> dict:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        status, raw = self._request(method, path, body, headers, timeout)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise IncusError(f"{self.point.shown}: unreadable answer to {method} {path} (HTTP {status})") from None
        if answer.get("type") == "error" or status == 403:
            error = answer.get("error") or f"error {answer.get('error_code', status)}"
            if status == 403:
                error += f" (is this machine's certificate still trusted there? incus remote add {self.point.name} TOKEN)"
            raise IncusError(error)
        return answer

    def warm(self) -> None:
        """Open a kept connection ahead of the first request (route checked, TLS handshake done) in a thread
        of its own, while the caller plans: a no-op play then waits only for its command. Best effort: a
        failure here is met again, and reported, by the first request."""

        def open_one():
            connection = None
            try:
                connection, reused = self._connection()
                if not reused:
                    connection.timeout = CONNECT_TIMEOUT
                    connection.connect()
            except (IncusError, OSError, http.client.HTTPException):
                if connection is not None:
                    connection.close()
                return
            with self._lock:
                self._idle.append(connection)

        threading.Thread(target=open_one, name=f"incus-warm-{self.point.name}", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._idle.pop().close()

    # -- exec and push

    def exec(self, name: str, command: str, timeout: float | None = None, stdin: bytes | None = None,
             shown: str | None = None) -> Result:
        """Run ``sh -c command`` in instance ``name``; stdout, stderr and the exit code, as ``LocalAPI.exec``."""
        shown = command if shown is None else shown
        if stdin:
            path = f"/tmp/.veza-stdin-{secrets.token_hex(12)}"
            self.push_bytes(name, bytes(stdin), path, "0600")
            command = with_stdin_file(command, path)
        mark = secrets.token_hex(12)
        grace = None if timeout is None else math.ceil(timeout) + KILL_AFTER + 1
        operation = self._start(name, command, timeout, mark)
        try:
            outcome = self._finish(operation, None if grace is None else time.monotonic() + grace)
        except IncusError:
            raise  # the remote is gone: the command's own timeout (if any) ends it there
        except BaseException:  # Ctrl-C (or SIGTERM raised as one): the command ends inside too
            self._end(name, mark, operation)
            raise
        if outcome is None:  # still running after its timeout and the kill that follows
            self._end(name, mark, operation)
            return Result(shown, TIMED_OUT, "", f"timed out after {timeout}s")
        code, stdout, stderr = outcome
        return Result(shown, code, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    def _start(self, name: str, command: str, timeout: float | None, mark: str) -> str:
        started = self._call("POST", f"/1.0/instances/{quote(name)}/exec", remote_exec_request(command, timeout, mark),
                             timeout=REQUEST_TIMEOUT if timeout is None else min(REQUEST_TIMEOUT, timeout))
        operation = started.get("operation")
        if not isinstance(operation, str) or not operation.startswith("/1.0/operations/"):
            raise IncusError(f"{self.point.shown}: exec answer without an operation")
        return operation

    def _finish(self, operation: str, deadline: float | None):
        """(exit code, stdout, stderr) once the operation ended, its output files read and deleted; None when
        ``deadline`` came first. Waits in bounded steps, each a request the daemon answers in time."""
        while True:
            step = WAIT_STEP if deadline is None else max(1, min(WAIT_STEP, math.ceil(deadline - time.monotonic())))
            try:
                done = self._call("GET", f"{operation}/wait?timeout={step}", timeout=step + REQUEST_TIMEOUT)
            except IncusError:
                # Incus 6.0 answers a wait that ran out with an error ("context deadline exceeded"), not with
                # the running operation: ask for the operation itself (a lost remote fails here again).
                done = self._call("GET", operation)
            finished, code, outputs = exec_outcome(done.get("metadata") or {})
            if finished:
                return code, self._output(outputs["1"]), self._output(outputs["2"])
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _output(self, url: str) -> bytes:
        """A recorded output file's content; the file is handed to the sweeper (the daemon keeps them otherwise)."""
        status, raw = self._request("GET", url)
        if status != 200:
            raise IncusError(f"{self.point.shown}: reading the command's output: HTTP {status}")
        self._sweeper.add(url)
        return raw

    def flush(self, timeout: float | None = None) -> None:
        """Wait (bounded) until every output file read so far is deleted."""
        self._sweeper.flush(SWEEP_TIMEOUT if timeout is None else timeout)

    def _end(self, name: str, mark: str, operation: str) -> None:
        """Best effort, bounded: kill what is left of the exec marked ``mark``, then delete its output files."""
        try:
            killer = self._start(name, end_marked_command(mark), INTERRUPT_TIMEOUT, secrets.token_hex(12))
            self._finish(killer, time.monotonic() + INTERRUPT_TIMEOUT)
            self._finish(operation, time.monotonic() + 1)
        except (IncusError, KeyboardInterrupt):
            pass  # the remote is gone or the user insists: nothing more to do from here

    def push(self, name: str, local_path: str, remote_path: str, mode: str) -> None:
        """Write ``local_path`` to ``remote_path`` in the instance, root-owned, created with ``mode``."""
        with open(local_path, "rb") as source:
            self._push(name, source, os.fstat(source.fileno()).st_size, remote_path, mode)

    def push_bytes(self, name: str, content: bytes, remote_path: str, mode: str) -> None:
        self._push(name, content, len(content), remote_path, mode)

    def _push(self, name, body, size, remote_path, mode) -> None:
        status, raw = self._request("POST", files_path(name, remote_path), body, file_headers(size, mode), PUSH_TIMEOUT)
        check_push_answer(status, raw)


class Sweeper:
    """Deletes a remote's read output files off the commands' path (two requests per command, a third of
    its cost), in a thread of its own with its own kept connection; a run waits for it at its end."""

    def __init__(self, api: RemoteAPI):
        self.api = api
        self.urls = []
        self.changed = threading.Condition()
        self.thread = None

    def add(self, url: str) -> None:
        with self.changed:
            self.urls.append(url)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name=f"incus-sweep-{self.api.point.name}", daemon=True)
                self.thread.start()
                atexit.register(self.flush, SWEEP_TIMEOUT)
            self.changed.notify_all()

    def _run(self) -> None:
        while True:
            with self.changed:
                while not self.urls:
                    self.changed.wait()
                url = self.urls[0]
            try:
                self.api._request("DELETE", url)
            except IncusError:
                pass  # a file left on the remote, not a wrong answer; the remote may be gone
            with self.changed:
                self.urls.pop(0)
                self.changed.notify_all()

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.urls and time.monotonic() < deadline:
                self.changed.wait(max(0.0, deadline - time.monotonic()))


_apis: dict = {}
_apis_lock = threading.Lock()


def remote_api(remote: str, any_route: bool = False) -> RemoteAPI:
    """One RemoteAPI (one TLS context, its kept connections) per remote for the whole run."""
    with _apis_lock:
        api = _apis.get((remote, any_route))
        if api is None:
            api = _apis[(remote, any_route)] = RemoteAPI(endpoint(remote), any_route)
        return api

"""Synchronous helpers on the load engine, for test.failover and the lab tests (HTTP: aiohttp, WebSocket: websockets).

    load = BackgroundLoad("http://10.181.40.10:80", "/api/v1/health", rate=20, timeout=2, max_seconds=420)
    load.start(); ...; load.stop()            # True if every request ended in time (load.wait(s): until max_seconds)
    load.samples                                # [Sample(t, outcome, status, instance, seconds, error, lag)]
    phase_counts(load.samples, [("before_kill", t_start), ("kill_to_down", t0), ...])

    reply = fetch("http://10.181.40.10:80", "/api/v1/health", timeout=2)   # Reply(status, headers, body, seconds)

    session = open_session("ws://10.181.40.10:80/api/v1/ws", cookie="SERVERID=backend-api-1")
    session.greeting["instance"]; session.cookie("SERVERID"); session.echo("hi")["instance"]
    session.wait_closed(5.0)                    # how it ended, or None if still open; then session.close()

Samples' ``t`` is the intended send time on ``time.monotonic`` (the failover clock).
Outcomes: ok, status, timeout, reset, refused, other, dropped (see outcomes.py);
a BackgroundLoad opens a new connection per request and sends no cookie, so
HAProxy's round robin decides where each lands.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .http_load import HttpTarget, open_session as open_http_session
from .keepalive import kind_counts
from .outcomes import OK, REFUSED, RESET, STATUS, TIMEOUT, Sample, cookie_from_set_cookie
from .schedule import Schedule, default_in_flight, run_open_loop

JOIN_GRACE = 2.0  # seconds beyond the drain for the thread to end


class BackgroundLoad:
    """Open-model requests at ``rate``/s in a thread with its own event loop, until stop() or ``max_seconds``.

    GETs of ``path``; with ``unsafe_every`` N, every Nth request is instead a POST to
    ``unsafe_path?id=<id_prefix>-<index>`` (an id the backend's access log carries, so a
    replayed POST would show on two backends)."""

    def __init__(self, base_url: str, path: str, rate: float = 20.0, timeout: float = 2.0, max_seconds: float = 300.0,
                 headers: dict | None = None, unsafe_every: int = 0, unsafe_path: str = "", id_prefix: str = "load"):
        if rate <= 0:
            raise ValueError(f"load rate must be > 0 requests/s, got {rate}")
        self.target = HttpTarget(base_url)
        self.path, self.rate, self.timeout, self.max_seconds = path, rate, timeout, max_seconds
        self.headers = headers
        self.unsafe_every, self.unsafe_path, self.id_prefix = unsafe_every, unsafe_path, id_prefix
        self.samples: list = []  # in completion order; list.append is atomic, so reading while running is safe
        self.stop_reason = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    async def _run(self) -> None:
        cap = default_in_flight(self.rate, self.timeout)
        schedule = Schedule(self.rate, self.max_seconds, cap, drain_timeout=self.timeout + 1.0)
        async with open_http_session(max_in_flight=cap, timeout=self.timeout) as session:
            async def send(index: int, due: float) -> Sample:
                if self.method_of(index) == "POST":
                    return await self.target.request(session, f"{self.unsafe_path}?id={self.unsafe_id(index)}", due,
                                                     method="POST", headers=self.headers, key=self.unsafe_id(index))
                return await self.target.request(session, self.path, due, headers=self.headers)

            result = await run_open_loop(send, schedule, self.samples.append, should_stop=self._stopping.is_set,
                                         method_of=self.method_of)
        self.stop_reason = "stopped" if result.stopped_early else f"time cap ({self.max_seconds:g}s)"

    def method_of(self, index: int) -> str:
        return "POST" if self.unsafe_every and index % self.unsafe_every == self.unsafe_every - 1 else "GET"

    def unsafe_id(self, index: int) -> str:
        return f"{self.id_prefix}-{index}"

    def start(self) -> None:
        # Daemon: an interpreter that dies mid-run must not hang on this thread.
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name="background-load", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the load to end by itself (its ``max_seconds``); True when it did."""
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        return self._thread is None or not self._thread.is_alive()

    def stop(self) -> bool:
        """Stop sending and wait for the requests in flight; False if they did not end in time."""
        self._stopping.set()
        if self._thread is None:
            return True
        self._thread.join(timeout=self.timeout + 1.0 + JOIN_GRACE)
        return not self._thread.is_alive()


@dataclass
class PhaseCounts:
    """Counts of one phase (the failover report's ``by_phase`` entries)."""

    total: int = 0
    failed: int = 0
    non_200: int = 0
    timeouts: int = 0
    errors: int = 0  # connection trouble: reset, refused, other
    by_outcome: Counter = field(default_factory=Counter)
    by_instance: Counter = field(default_factory=Counter)
    by_method: dict = field(default_factory=dict)  # method -> Counter of outcomes
    samples: list = field(default_factory=list)  # for the counts per client kind (keepalive.kind_counts)

    def add(self, sample: Sample) -> None:
        self.total += 1
        self.failed += sample.failed
        self.non_200 += sample.outcome == STATUS
        self.timeouts += sample.outcome == TIMEOUT
        self.errors += sample.outcome not in (OK, STATUS, TIMEOUT)
        self.by_outcome[sample.outcome] += 1
        self.by_method.setdefault(sample.method, Counter())[sample.outcome] += 1
        self.samples.append(sample)
        if sample.instance:
            self.by_instance[sample.instance] += 1

    def to_dict(self) -> dict:
        return {"total": self.total, "failed": self.failed, "non_200": self.non_200, "timeouts": self.timeouts,
                "errors": self.errors, "by_outcome": dict(self.by_outcome), "by_instance": dict(self.by_instance),
                "by_method": {method: dict(outcomes) for method, outcomes in sorted(self.by_method.items())},
                "by_kind": kind_counts(self.samples)}


def phase_counts(samples, phase_starts) -> dict:
    """Counts per phase. ``phase_starts``: ordered (name, start time or None); a phase without a start
    did not happen and is left out; each runs until the next one that did; earlier samples go to the first."""
    happened = [(name, start) for name, start in phase_starts if start is not None]
    if not happened:
        return {}
    counts = {name: PhaseCounts() for name, _ in happened}
    for sample in samples:
        current = happened[0][0]
        for name, start in happened:
            if sample.t >= start:
                current = name
        counts[current].add(sample)
    return {name: phase.to_dict() for name, phase in counts.items()}


@dataclass
class Reply:
    """One HTTP answer: status, headers as (name, value) pairs, body, seconds."""

    status: int
    headers: list
    body: str
    seconds: float

    @property
    def instance(self) -> str | None:
        from .outcomes import instance_from_body

        return instance_from_body(self.body)

    def cookie(self, name: str) -> str | None:
        return cookie_from_set_cookie([v for k, v in self.headers if k.lower() == "set-cookie"], name)


def fetch(base_url: str, path: str, headers: dict | None = None, timeout: float = 2.0) -> Reply:
    """One GET on a new connection. Raises TimeoutError, ConnectionRefusedError, ConnectionResetError
    or OSError when there is no answer."""
    return asyncio.run(_fetch(base_url, path, headers, timeout))


async def _fetch(base_url: str, path: str, headers, timeout: float) -> Reply:
    from .outcomes import classify_exception, describe_exception

    started = time.monotonic()
    try:
        async with open_http_session(max_in_flight=1, timeout=timeout) as session:
            async with session.get(base_url.rstrip("/") + path, headers=headers, allow_redirects=False) as response:
                body = await response.text(errors="replace")
                return Reply(response.status, list(response.headers.items()), body, time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - re-raised as the builtin matching its class
        kind = classify_exception(exc)
        error = {TIMEOUT: TimeoutError, REFUSED: ConnectionRefusedError, RESET: ConnectionResetError}.get(kind, OSError)
        raise error(describe_exception(exc)) from exc


class SessionClosed(Exception):
    """The server closed the WebSocket (close frame or a broken connection)."""


class WsSession:
    """One open WebSocket (``websockets``' threaded client) through the balancer."""

    def __init__(self, connection, greeting: dict):
        self.connection = connection
        self.greeting = greeting

    @property
    def cookies(self) -> list:
        """The raw Set-Cookie values of the handshake response."""
        return self.connection.response.headers.get_all("Set-Cookie")

    def cookie(self, name: str) -> str | None:
        return cookie_from_set_cookie(self.cookies, name)

    def send_text(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.connection.send(text)
        except ConnectionClosed as exc:
            raise SessionClosed(str(exc)) from None

    def recv_text(self, timeout: float = 5.0) -> str:
        """The next text message; TimeoutError after ``timeout``, SessionClosed when the server closed."""
        from websockets.exceptions import ConnectionClosed

        try:
            message = self.connection.recv(timeout=timeout)
        except ConnectionClosed as exc:
            raise SessionClosed(str(exc)) from None
        return message if isinstance(message, str) else message.decode("utf-8", errors="replace")

    def echo(self, text: str, timeout: float = 5.0) -> dict:
        """Send ``text`` and return the echo JSON ``{"instance", "echo"}``; ValueError if it is not that echo."""
        self.send_text(text)
        answer = self.recv_text(timeout)
        try:
            echoed = json.loads(answer)
        except ValueError:
            echoed = None
        if not isinstance(echoed, dict) or echoed.get("echo") != text:
            raise ValueError(f"sent {text!r}, got back {answer[:200]!r}")
        return echoed

    def wait_closed(self, timeout: float) -> str | None:
        """Wait up to ``timeout`` for the server to end the session: how it ended, or None if still open."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):  # messages that arrive meanwhile are not a close: keep waiting, bounded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.recv_text(remaining)
            except SessionClosed as exc:
                return str(exc) or "closed"
            except TimeoutError:
                return None
        return None

    def close(self) -> None:
        self.connection.close()


def open_session(url: str, cookie: str | None = None, timeout: float = 5.0, headers: dict | None = None) -> WsSession:
    """Open a WebSocket (``cookie``: a Cookie header value such as ``SERVERID=backend-api-1``) and read
    its greeting. Raises TimeoutError/OSError, or ``websockets.exceptions.InvalidStatus`` (``.response.status_code``)
    when the server does not switch protocols."""
    from websockets.sync.client import connect

    extra = dict(headers or {}) | ({"Cookie": cookie} if cookie else {})
    # legacy=True: the documented way to hold a connection outside a ``with`` block (closed by close()).
    connection = connect(url, additional_headers=extra, open_timeout=timeout, proxy=None, compression=None,
                         ping_interval=None, close_timeout=2.0, legacy=True)
    try:
        greeting = json.loads(connection.recv(timeout=timeout))
    except BaseException:
        connection.close()
        raise
    return WsSession(connection, greeting if isinstance(greeting, dict) else {})

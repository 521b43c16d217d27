"""Keep-alive load: requests on a few persistent connections, as browsers and service clients send them.

    load = KeepAliveLoad("http://10.181.40.100:80", "/api/v1/health", rate=60, connections=8, timeout=2,
                         max_seconds=300)                   # retry_idempotent=True: the browser-like client
    load.start(); ...; load.stop()                          # same interface as facade.BackgroundLoad
    load.samples                                            # Sample(..., connection="keepalive", retried=...)
    load.connections_opened                                 # first opens + reopens after a close

    mixed = MixedLoad(base_url, path, rate=120, keepalive_share=0.5, connections=8)   # both kinds at once
    kind_counts(mixed.samples)   # {"new": {...}, "keepalive": {...}}: totals, failed, retried, by method+outcome

The client is the standard library's ``http.client``: one ``HTTPConnection`` per
connection, each in its own thread, reused for every request it is given and
reopened only after the server closed it (an answer with ``Connection: close``)
or a request on it failed. It retries nothing by itself, so a server that
closes an idle connection under a client shows as the failure that client
meets (``RemoteDisconnected`` / reset). aiohttp is not used here on purpose:
its pool retries an idempotent request that failed on a reused connection
(``retry_persistent_connection``, aiohttp >= 3.10) and drops pooled connections
that saw a FIN before reuse, so it would hide exactly what this load measures.

``retry_idempotent=True`` is the browser's rule instead: a GET/HEAD/OPTIONS/PUT/DELETE
that broke on a REUSED connection before any answer (reset, closed without an
answer) is sent once more on a fresh connection; its Sample is marked ``retried``
and its latency covers both tries. Timeouts are never retried.

Schedule (open model, like schedule.py): request ``i`` is due at ``t0 + i / rate``
and goes to connection ``i % connections``; a connection still busy with its
previous request sends it late, and its latency still counts from the due time
(``lag`` says how late it left). Bounded by ``ceil(rate * max_seconds)``
requests, ``max_seconds`` of sending and each socket operation's ``timeout``.
"""

from __future__ import annotations

import http.client
import math
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

from . import LoadTestError
from .outcomes import KEEPALIVE, NEW_CONNECTION, OK, RESET, Sample, classify_exception, describe_exception, \
    instance_from_body, outcome_of_status

MAX_CONNECTIONS = 64  # one thread each; far more than a browser keeps to one origin (6)
MAX_BODY = 64 * 1024  # bytes: a longer answer is cut and its connection closed (it cannot be reused)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 9.2.2 (TRACE never sent)
JOIN_GRACE = 2.0  # seconds beyond a request's worst case for the threads to end
COUNT_KINDS = (NEW_CONNECTION, KEEPALIVE)


class _Connection(http.client.HTTPConnection):
    """An HTTPConnection that counts its (re)opens and says whether the next request reuses a socket."""

    def __init__(self, host: str, port: int, timeout: float, opened: Counter):
        super().__init__(host, port, timeout=timeout)
        self._opened = opened

    def connect(self):
        super().connect()
        self._opened["opened"] += 1

    @property
    def is_open(self) -> bool:
        return self.sock is not None


class KeepAliveLoad:
    """Open-model requests at ``rate``/s spread over ``connections`` persistent connections, in threads,
    until stop() or ``max_seconds``.

    GETs of ``path`` (or of ``request_of(index)`` -> (path, key), a scenario's requests); with
    ``unsafe_every`` N every Nth request is a POST to ``unsafe_path?id=<id_prefix>-<index>`` (as
    facade.BackgroundLoad). ``headers`` go on every request."""

    def __init__(self, base_url: str, path: str, rate: float = 20.0, connections: int = 8, timeout: float = 2.0,
                 max_seconds: float = 300.0, headers: dict | None = None, unsafe_every: int = 0,
                 unsafe_path: str = "", id_prefix: str = "keepalive", retry_idempotent: bool = False,
                 request_of=None):
        check_keepalive_settings(rate, connections, timeout)
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise LoadTestError(f"target {base_url!r}: expected http://HOST:PORT")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path, self.rate, self.connections, self.timeout = path, rate, connections, timeout
        self.max_seconds, self.headers = max_seconds, dict(headers or {})
        self.unsafe_every, self.unsafe_path, self.id_prefix = unsafe_every, unsafe_path, id_prefix
        self.retry_idempotent = retry_idempotent
        self.request_of = request_of  # index -> (path, key): a scenario's requests instead of GETs of path
        self.samples: list = []  # completion order; list.append is atomic, so reading while running is safe
        self.stop_reason = ""
        self._opened: Counter = Counter()
        self._stopping = threading.Event()
        self._threads: list = []

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.rate * self.max_seconds))

    @property
    def connections_opened(self) -> int:
        """Connections opened so far: one per connection at its first request, plus every reopen."""
        return self._opened["opened"]

    def method_of(self, index: int) -> str:
        return "POST" if self.unsafe_every and index % self.unsafe_every == self.unsafe_every - 1 else "GET"

    def start(self, at: float | None = None) -> None:
        """Start sending; ``at``: the schedule's t0 on time.monotonic (default now), to share one with other loads."""
        started = time.monotonic() if at is None else at
        for slot in range(self.connections):
            # Daemon: an interpreter that dies mid-run must not hang on these threads.
            thread = threading.Thread(target=self._serve_slot, args=(slot, started), daemon=True,
                                      name=f"keepalive-load-{slot}")
            self._threads.append(thread)
            thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the load to end by itself (its ``max_seconds``); True when it did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        done = not any(thread.is_alive() for thread in self._threads)
        if done and not self.stop_reason:
            self.stop_reason = f"time cap ({self.max_seconds:g}s)"
        return done

    def stop(self) -> bool:
        """Stop sending and wait for the requests in flight; False if they did not end in time."""
        self._stopping.set()
        done = self.wait(2 * self.timeout + JOIN_GRACE)  # a request and its one retry
        self.stop_reason = self.stop_reason or "stopped"
        return done

    def _serve_slot(self, slot: int, started: float) -> None:
        connection = _Connection(self.host, self.port, self.timeout, self._opened)
        try:
            for index in range(slot, self.count, self.connections):
                due = started + index / self.rate
                if self._stopping.wait(max(0.0, due - time.monotonic())):
                    return
                lag = max(0.0, time.monotonic() - due)
                sample = self._request(connection, index, due)
                sample.lag = lag
                self.samples.append(sample)
        finally:
            connection.close()

    def _request(self, connection: _Connection, index: int, due: float) -> Sample:
        method = self.method_of(index)
        target, key = self.request_of(index) if self.request_of else (self.path, None)
        if method == "POST":
            key = f"{self.id_prefix}-{index}"
            target = f"{self.unsafe_path}?id={key}"
        reused = connection.is_open
        sample = self._attempt(connection, method, target, due, key)
        if (sample.outcome == RESET and reused and self.retry_idempotent and method in IDEMPOTENT):
            sample = self._attempt(connection, method, target, due, key)  # closed by the failure: a fresh one
            sample.retried = True
        return sample

    def _attempt(self, connection: _Connection, method: str, target: str, due: float, key) -> Sample:
        try:
            connection.request(method, target, headers=self.headers)
            response = connection.getresponse()
            body = response.read(MAX_BODY).decode("utf-8", errors="replace")
            if not response.isclosed():  # longer than MAX_BODY: the rest would be read as the next answer
                connection.close()
        except Exception as exc:  # noqa: BLE001 - every failure is a classified sample
            connection.close()  # whatever state it is in, the next request opens a fresh one
            return Sample(due, classify_exception(exc), seconds=time.monotonic() - due,
                          error=describe_exception(exc), key=key, method=method, connection=KEEPALIVE)
        status = response.status
        outcome = outcome_of_status(status)
        return Sample(due, outcome, status, instance_from_body(body), time.monotonic() - due,
                      "" if outcome == OK else f"HTTP {status}", key=key, method=method, connection=KEEPALIVE)


def check_keepalive_settings(rate: float, connections: int, timeout: float, share: float = 1.0) -> None:
    """LoadTestError (one line) for a keep-alive load that cannot run."""
    checks = [
        (rate > 0, f"load rate must be > 0 requests/s, got {rate:g}"),
        (isinstance(connections, int) and 1 <= connections <= MAX_CONNECTIONS,
         f"keep-alive connections: need 1 to {MAX_CONNECTIONS}, got {connections}"),
        (0 < timeout <= 60, f"request timeout must be > 0 and <= 60 s, got {timeout:g}"),
        (0.0 <= share <= 1.0, f"keep-alive share must be between 0 and 1 (0.5 = half), got {share:g}"),
    ]
    for ok, message in checks:
        if not ok:
            raise LoadTestError(message)


class MixedLoad:
    """``rate``/s in total: ``keepalive_share`` of it on ``connections`` persistent connections
    (KeepAliveLoad), the rest a new connection per request (facade.BackgroundLoad). Same interface
    as either; ``samples`` holds both kinds (``Sample.connection`` tells them apart)."""

    def __init__(self, base_url: str, path: str, rate: float = 20.0, keepalive_share: float = 0.5,
                 connections: int = 8, timeout: float = 2.0, max_seconds: float = 300.0, headers: dict | None = None,
                 unsafe_every: int = 0, unsafe_path: str = "", id_prefix: str = "load",
                 retry_idempotent: bool = False):
        from .facade import BackgroundLoad

        check_keepalive_settings(rate, connections, timeout, keepalive_share)
        self.rate, self.keepalive_share, self.timeout = rate, keepalive_share, timeout
        # The POST ids' prefix; the kept-alive part's ids read '<id_prefix>-ka-<n>'.
        self.id_prefix = id_prefix
        self.parts: list = []
        shared = dict(timeout=timeout, max_seconds=max_seconds, headers=headers, unsafe_every=unsafe_every,
                      unsafe_path=unsafe_path)
        if keepalive_share < 1.0:
            self.parts.append(BackgroundLoad(base_url, path, rate=rate * (1.0 - keepalive_share),
                                             id_prefix=id_prefix, **shared))
        self.keepalive = None
        if keepalive_share > 0.0:
            self.keepalive = KeepAliveLoad(base_url, path, rate=rate * keepalive_share, connections=connections,
                                           id_prefix=f"{id_prefix}-ka", retry_idempotent=retry_idempotent, **shared)
            self.parts.append(self.keepalive)

    @property
    def samples(self) -> list:
        return [sample for part in self.parts for sample in part.samples]

    @property
    def stop_reason(self) -> str:
        return "; ".join(sorted({part.stop_reason for part in self.parts if part.stop_reason}))

    @property
    def connections_opened(self) -> int:
        return self.keepalive.connections_opened if self.keepalive else 0

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all([part.wait(max(0.0, deadline - time.monotonic())) for part in self.parts])

    def stop(self) -> bool:
        for part in self.parts:  # stop sending on both before waiting for either
            part._stopping.set()
        return all([part.stop() for part in self.parts])

    def describe(self) -> dict:
        """The load's shape for a report."""
        return {"rate": self.rate, "keepalive_share": self.keepalive_share,
                "keepalive_connections": self.keepalive.connections if self.keepalive else 0,
                "retry_idempotent": bool(self.keepalive and self.keepalive.retry_idempotent),
                "timeout": self.timeout}


class KindCounts:
    """Counts per client kind, kept up to date one sample at a time (a long run keeps no samples)."""

    def __init__(self):
        self.counts = {kind: {"total": 0, "failed": 0, "retried": 0, "by_method": {}} for kind in COUNT_KINDS}

    def add(self, sample: Sample) -> None:
        entry = self.counts.setdefault(sample.connection, {"total": 0, "failed": 0, "retried": 0, "by_method": {}})
        entry["total"] += 1
        entry["failed"] += sample.failed
        entry["retried"] += sample.retried
        by_outcome = entry["by_method"].setdefault(sample.method, {})
        by_outcome[sample.outcome] = by_outcome.get(sample.outcome, 0) + 1

    def to_dict(self) -> dict:
        return self.counts


def kind_counts(samples) -> dict:
    """Counts per client kind (``new``: a connection per request, ``keepalive``): total, failed,
    retried, and outcomes by method. Both kinds are always present, so a report shows a zero."""
    counts = KindCounts()
    for sample in samples:
        counts.add(sample)
    return counts.to_dict()


def kind_line(counts: dict) -> str:
    """One line for a terminal: ``new 0/120 failed, keepalive 3/118 failed (2 retried)``."""
    parts = []
    for kind, entry in counts.items():
        retried = f" ({entry['retried']} retried)" if entry["retried"] else ""
        parts.append(f"{kind} {entry['failed']}/{entry['total']} failed{retried}")
    return ", ".join(parts)

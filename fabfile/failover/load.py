"""HTTP through the load balancer: single requests and a bounded background load.

Every request opens a NEW connection and sends no cookie, so HAProxy's round
robin (not keep-alive or stickiness) decides where it lands; that is what makes
a dead backend visible to a client at all.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

OUTCOMES = ("ok", "status", "timeout", "error")  # 200 / other HTTP status / no answer in time / connection error
MAX_IN_FLIGHT = 64  # concurrent requests of the background load, whatever the rate


@dataclass
class HttpReply:
    """One HTTP response: status, headers (in order, repeats kept), body, how long it took."""

    status: int
    headers: list
    body: str
    seconds: float

    @property
    def instance(self) -> str | None:
        """The backend that answered, from the health JSON's "instance" (None if not JSON)."""
        try:
            value = json.loads(self.body).get("instance")
        except (ValueError, AttributeError):
            return None
        return str(value) if value is not None else None

    def cookie(self, name: str) -> str | None:
        """The value this response sets for cookie ``name`` (Set-Cookie), or None."""
        return set_cookie_value(self.headers, name)


def set_cookie_value(headers, name: str) -> str | None:
    """Value of cookie ``name`` in the Set-Cookie headers of ``headers`` ((name, value) pairs)."""
    for header, value in headers:
        if header.lower() != "set-cookie":
            continue
        cookie_name, _, rest = value.partition("=")
        if cookie_name.strip() == name:
            return rest.split(";", 1)[0].strip()
    return None


class HttpGetter:
    """GET through one host:port with a fresh connection per request (no keep-alive, no cookie jar)."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port

    def __call__(self, path: str, headers: dict | None = None, timeout: float = 2.0) -> HttpReply:
        """One GET; raises ``socket.timeout``/``OSError``/``http.client.HTTPException`` when there is no answer."""
        started = time.monotonic()
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            return HttpReply(response.status, list(response.getheaders()), body, time.monotonic() - started)
        finally:
            connection.close()


@dataclass
class Sample:
    """One request of the background load. ``t`` is on the load's clock (time.monotonic in real runs)."""

    t: float
    outcome: str  # one of OUTCOMES
    status: int | None
    instance: str | None
    seconds: float
    error: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome != "ok"


def classify(get: Callable, path: str, timeout: float, clock: Callable[[], float], sent: float | None = None) -> Sample:
    """Send one request and turn whatever happens into a Sample (never raises for network trouble).

    ``sent``: when the request was due, if not now; its latency then counts any wait for a worker.
    """
    sent = clock() if sent is None else sent
    try:
        reply = get(path, None, timeout)
    except TimeoutError as exc:  # socket.timeout is TimeoutError since 3.10
        return Sample(sent, "timeout", None, None, clock() - sent, str(exc) or "timed out")
    except (OSError, http.client.HTTPException) as exc:
        return Sample(sent, "error", None, None, clock() - sent, f"{type(exc).__name__}: {exc}")
    outcome = "ok" if reply.status == 200 else "status"
    return Sample(sent, outcome, reply.status, reply.instance, clock() - sent)


class LoadGenerator:
    """Steady GETs in the background: ``rate`` per second, until stopped or a hard cap.

    Open loop: a dispatcher thread sends on a fixed schedule and each request
    runs in a worker of a bounded pool, so a request that hangs on the dying
    backend does not delay the next ones. (A one-request-at-a-time client slows
    down exactly in the seconds that matter and would under-count failures.)
    Bounded three ways: ``max_seconds`` of sending, ``rate * max_seconds``
    requests, and ``MAX_IN_FLIGHT`` workers (each request ends within its timeout).
    """

    def __init__(self, get: Callable, path: str, *, rate: float = 20.0, timeout: float = 2.0,
                 max_seconds: float = 300.0, clock: Callable[[], float] = time.monotonic, wait=None):
        if rate <= 0:
            raise ValueError(f"load rate must be > 0 requests/s, got {rate}")
        self.get = get
        self.path = path
        self.rate = rate
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_requests = max(1, math.ceil(rate * max_seconds))
        self.workers = min(MAX_IN_FLIGHT, math.ceil(rate * timeout) + 1)
        self.clock = clock
        self.samples: list = []  # in completion order; each carries its send time
        self.stop_reason = ""
        self._stopping = threading.Event()
        # wait(seconds) -> True when asked to stop; tests inject one that moves a fake clock.
        self._wait = wait or self._stopping.wait
        self._thread = None

    def _one(self, due: float) -> None:
        self.samples.append(classify(self.get, self.path, self.timeout, self.clock, sent=due))

    def run(self) -> None:
        """The dispatcher (the thread's body; tests call it directly). Returns once every request ended."""
        started = self.clock()
        deadline = started + self.max_seconds
        self.stop_reason = f"request cap ({self.max_requests})"
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="failover-load") as pool:
            for index in range(self.max_requests):
                if self._stopping.is_set():
                    self.stop_reason = "stopped"
                    break
                if self.clock() >= deadline:
                    self.stop_reason = f"time cap ({self.max_seconds:g}s)"
                    break
                pool.submit(self._one, self.clock())
                # The schedule, not the previous request, sets the next send time.
                due = started + (index + 1) / self.rate
                if self._wait(max(0.0, due - self.clock())):
                    self.stop_reason = "stopped"
                    break

    def start(self) -> None:
        # Daemon: an interpreter that dies mid-run must not hang on this thread.
        self._thread = threading.Thread(target=self.run, name="failover-load", daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        """Stop sending and wait for the requests in flight; False if they did not end in time."""
        self._stopping.set()
        if self._thread is None:
            return True
        # A request's timeout bounds each socket operation (connect, then read): two of them.
        self._thread.join(timeout=2 * self.timeout + 2.0)
        return not self._thread.is_alive()


@dataclass
class PhaseCounts:
    total: int = 0
    failed: int = 0
    non_200: int = 0
    timeouts: int = 0
    errors: int = 0
    by_instance: dict = field(default_factory=dict)

    def add(self, sample: Sample) -> None:
        self.total += 1
        self.failed += sample.failed
        self.non_200 += sample.outcome == "status"
        self.timeouts += sample.outcome == "timeout"
        self.errors += sample.outcome == "error"
        if sample.instance:
            self.by_instance[sample.instance] = self.by_instance.get(sample.instance, 0) + 1


def count_by_phase(samples, phase_starts) -> dict:
    """Counts per phase. ``phase_starts``: ordered (name, start time or None); a phase without a
    start did not happen and is left out, and each phase runs until the next one that did."""
    happened = [(name, start) for name, start in phase_starts if start is not None]
    if not happened:
        return {}
    counts = {name: PhaseCounts() for name, _ in happened}
    for sample in samples:
        current = None
        for name, start in happened:
            if sample.t >= start:
                current = name
        # A request sent before the first mark still belongs to the first phase.
        counts[current or happened[0][0]].add(sample)
    return {name: asdict(phase) for name, phase in counts.items()}

"""HAProxy's view of some servers, sampled on one balancer in a thread for a whole drill.

One ``show stat`` through the balancer's runtime API every ``interval`` (about 50 ms a round trip on the
lab), bounded in count and time; only changes are kept, per watched server, on the test's clock. A
missed read is counted, never fatal: the sampler watches while the rest of the drill strikes and waits.
"""

from __future__ import annotations

import threading
import time


class PeriodicSampler:
    """``sample()`` every ``interval`` seconds in a thread until ``stop()``, bounded in count and in time
    (``max_seconds``). The gates' samplers of a balancer's state (this file, reload_test's workers)."""

    def __init__(self, name: str, interval: float, max_seconds: float, clock=time.monotonic):
        self.interval, self.max_seconds, self.clock = interval, max_seconds, clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=self.interval + 30)

    def _loop(self) -> None:
        deadline = self.clock() + self.max_seconds
        for _ in range(int(self.max_seconds / self.interval) + 1):
            if self._stopping.is_set() or self.clock() >= deadline:
                return
            started = self.clock()
            self.tick()
            self._stopping.wait(max(0.0, started + self.interval - self.clock()))

    def tick(self) -> None:
        """One round: take a sample (a subclass keeping what ``sample`` returns overrides this)."""
        self.sample()

    def sample(self):
        raise NotImplementedError


class ServerSampler(PeriodicSampler):
    """``runtime``: ``show_stat()`` -> ServerStat rows; ``servers``: ``host_outage.Server``s to watch."""

    def __init__(self, runtime, servers, interval: float, max_seconds: float, clock=time.monotonic):
        super().__init__("server-sampler", interval, max_seconds, clock)
        self.runtime, self.servers = runtime, list(servers)
        self.changes: dict = {server: [] for server in self.servers}  # Server -> [(t, status)]
        self.reads = 0
        self.errors: list = []  # (t, message), the last few
        self.error_count = 0

    def sample(self) -> None:
        try:
            rows = self.runtime.show_stat()
        except Exception as exc:  # noqa: BLE001 - a missed read is a gap, reported, not a failure
            self.error_count += 1
            self.errors = (self.errors + [(self.clock(), f"{type(exc).__name__}: {exc}")])[-5:]
            return
        now = self.clock()
        self.reads += 1
        seen = {(row.pool, row.server): row.status for row in rows}
        for server, changes in self.changes.items():
            status = seen.get((server.pool, server.name), "absent")
            if not changes or changes[-1][1] != status:
                changes.append((now, status))

    def status(self, server) -> str | None:
        changes = self.changes.get(server) or []
        return changes[-1][1] if changes else None

    def all(self, predicate) -> bool:
        """Every watched server's last status satisfies ``predicate``."""
        return all(self.status(server) is not None and predicate(self.status(server)) for server in self.servers)

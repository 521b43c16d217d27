"""Fakes the unit tests share."""


class Clock:
    """A monotonic clock that moves only when someone sleeps: a test's time costs no wall time."""

    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeLoad:
    """The background load of a gate: one request of each client kind due every ``period`` seconds of fake
    time, answered at once. ``failure(kind, t, since_start)`` names the outcome of a request that fails
    (``None``: it succeeds); ``instance`` is the backend that answers."""

    timeout = 2.0

    def __init__(self, clock, period, failure, instance=None, keepalive_connections=8):
        from types import SimpleNamespace

        self.clock, self.period, self.failure, self.instance = clock, period, failure, instance
        self.started, self.stopped = None, None
        self.keepalive = SimpleNamespace(connections=keepalive_connections)

    def start(self):
        self.started = self.clock()

    def stop(self):
        self.stopped = self.clock()
        return True

    @property
    def samples(self):
        from fabfile.loadtest.outcomes import Sample

        out, t = [], self.started
        while t is not None and t < (self.stopped or self.clock()):
            for kind in ("new", "keepalive"):
                failed = self.failure(kind, t, t - self.started)
                out.append(Sample(t, failed or "ok", None if failed else 200, self.instance, seconds=0.01,
                                  connection=kind))
            t += self.period
        return out

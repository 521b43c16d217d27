"""Requests through the balancer: the seed's five GETs and the continuous background load, judged per phase.

Safe requests (GET) must never fail. Unsafe ones (POST) sent to the victim between its
failure and DOWN may fail: HAProxy must not replay them (the request may have been
processed), so they are counted apart as caught in the failure window; a POST failing
outside that window is a failure like any other."""

from __future__ import annotations

from collections import Counter

from .checks import PHASES, SAFE_METHODS, StepFailed, instance_counts
from ..loadtest.facade import phase_counts
from ..loadtest.keepalive import kind_counts, kind_line


class LoadChecks:
    """Requests through the LB for one ``FailoverTest``: ``http_get`` for the GET steps
    (``loadtest.facade.fetch``), ``load`` for the background load (``loadtest.keepalive.MixedLoad``:
    new-connection requests and requests on kept-alive connections, both open-model; or None)."""

    def __init__(self, test, http_get, load=None):
        self.test = test
        self.http_get = http_get
        self.load = load

    def _gets(self, count: int) -> list:
        """``count`` GETs of the health path through the LB: [(Reply or None, error text)]."""
        replies = []
        for _ in range(count):
            try:
                replies.append((self.http_get(self.test.settings.health_path, None, self.test.settings.request_timeout), ""))
            except OSError as exc:  # fetch raises the builtin matching its class: timeout, refused, reset
                replies.append((None, f"{type(exc).__name__}: {exc}"))
        return replies

    def _check_gets(self, forbidden_instance: str | None = None):
        """Steps 1 and 4: every GET 200 (and, while DOWN, none served by the victim)."""
        replies = self._gets(self.test.settings.checks_requests)
        data = {"responses": [{"status": r.status if r else None, "instance": r.instance if r else None,
                               "seconds": round(r.seconds, 3) if r else None, "error": error}
                              for r, error in replies]}
        bad = []
        for number, (reply, error) in enumerate(replies, 1):
            if reply is None:
                bad.append(f"request {number}: no response ({error})")
            elif reply.status != 200:
                source = f" from {reply.instance}" if reply.instance else ""
                bad.append(f"request {number}: HTTP {reply.status}{source}: {reply.body[:120]!r}")
            elif forbidden_instance and reply.instance == forbidden_instance:
                bad.append(f"request {number}: served by {forbidden_instance}, which should be down")
        served = instance_counts(r.instance for r, _ in replies if r is not None)
        ok = len(replies) - len(bad)
        data.update(ok=ok, failed=len(bad))
        if bad:
            raise StepFailed(f"{ok}/{len(replies)} ok; " + "; ".join(bad), data)
        return f"{ok}/{len(replies)} HTTP 200, served by {served}", data

    def baseline(self):
        return self._check_gets()

    def down_window(self):
        return self._check_gets(forbidden_instance=self.test.settings.victim)

    def flowing(self):
        self.test.marks["load_started"] = self.test.clock()
        self.load.start()
        self.test.sleep(self.test.settings.load_lead_in)
        samples = list(self.load.samples)
        failed = [sample for sample in samples if sample.failed]
        if not samples or failed:
            raise StepFailed(f"{len(samples)} requests in the first {self.test.settings.load_lead_in:g}s, "
                             f"{len(failed)} failed; fix the pool before killing a backend")
        return f"{len(samples)} requests in {self.test.settings.load_lead_in:g}s, all 200, served by " \
               f"{instance_counts(s.instance for s in samples)}"

    def while_down(self):
        """Hold the victim down for ``down_dwell`` after DOWN; all that traffic must go to the others, fine."""
        remaining = self.test.marks["down"] + self.test.settings.down_dwell - self.test.clock()
        if remaining > 0:
            self.test.sleep(remaining)
        window = [sample for sample in list(self.load.samples) if sample.t > self.test.marks["down"]]
        failed = [sample for sample in window if sample.failed]
        from_victim = [sample for sample in window if sample.instance == self.test.settings.victim]
        detail = (f"{len(window)} requests in {self.test.clock() - self.test.marks['down']:.1f}s after DOWN, {len(failed)} failed, "
                  f"served by {instance_counts(s.instance for s in window if not s.failed)}")
        if not window or failed or from_victim:
            raise StepFailed(detail)
        return detail

    def phase_starts(self) -> list:
        m = self.test.marks
        return list(zip(PHASES, (m.get("load_started"), m.get("stop_issued"), m.get("down"), m.get("start_issued"))))

    def _in_failure_window(self, sample) -> bool:
        """Sent while the victim could already be dead but was not yet DOWN (or still open at the stop)."""
        stop, down = self.test.marks.get("stop_issued"), self.test.marks.get("down", self.test.marks.get("start_issued"))
        if stop is None:
            return False
        return stop - self.test.settings.request_timeout <= sample.t <= (down if down is not None else float("inf"))

    def _caught(self, sample) -> bool:
        """A failed unsafe request caught in the failure window: counted apart, never replayed."""
        return sample.failed and sample.method not in SAFE_METHODS and self._in_failure_window(sample)

    def unsafe_caught(self, samples) -> list:
        return [s for s in samples if self._caught(s)]

    def total(self):
        samples = list(self.load.samples)
        phases = phase_counts(samples, self.phase_starts())
        caught = self.unsafe_caught(samples)
        failed = [s for s in samples if s.failed and not self._caught(s)]
        by_method = Counter((s.method, "failed" if s.failed else "ok") for s in samples)
        methods = ", ".join(f"{method} {by_method[(method, 'ok')]} ok/{by_method[(method, 'failed')]} failed"
                            for method in sorted({m for m, _ in by_method}))
        detail = f"{len(failed)} of {len(samples)} requests failed ({methods}); per phase: " + ", ".join(
            f"{name} {phase['failed']}/{phase['total']}" + (f" ({phase['timeouts']} timeouts)" if phase["timeouts"] else "")
            for name, phase in phases.items())
        detail += f"; by client kind: {kind_line(kind_counts(samples))}"
        if caught:
            detail += f"; {len(caught)} POST caught in the failure window (not replayed, not counted)"
        if failed:
            raise StepFailed(detail)
        return detail

    def stop(self) -> None:
        if self.load is None or "load_started" not in self.test.marks:
            return
        if "up" in self.test.marks and not self.test.interrupted:
            self.test.sleep(self.test.settings.load_tail)
        self.test.marks["load_stopped"] = self.test.clock()
        if not self.load.stop():
            self.test.output.line("warning: the load thread did not end in time; its last request is not counted")

"""Prometheus checks: what a dashboard sees of the kill, from HAProxy's built-in exporter.

Before the stop: every balancer's exporter answers and shows the victim UP; its
``haproxy_server_check_up_down_total`` is remembered. After the runtime API
showed DOWN (on the first balancer that saw it): ``haproxy_server_status{state="DOWN"}``
must read 1 within ``metrics_grace`` seconds on an exporter, and that exporter's
UP->DOWN counter must have risen by exactly one. With a pair, the balancer carrying
the traffic sees the death first; the other one only by its slower health checks.
"""

from __future__ import annotations

from ..polling import WaitTimeout, wait_until
from .checks import StepFailed
from .metrics import value_of

STATUS, UP_DOWN = "haproxy_server_status", "haproxy_server_check_up_down_total"


class MetricsChecks:
    """HAProxy's exporters for one ``FailoverTest``: ``metrics`` is one ``metrics.ServerMetrics`` per balancer
    (``read()`` -> MetricSample list), or a single one."""

    def __init__(self, test, metrics):
        self.test = test
        self.metrics = metrics
        self.seen: dict = {}  # the victim's exporter values: "before" the stop, at "down"
        self.before_by_exporter: dict = {}  # exporter URL -> the victim's values before the stop

    def _victim_metrics(self, samples) -> dict:
        where = {"proxy": self.test.settings.pool, "server": self.test.settings.victim}
        return {"status_up": value_of(samples, STATUS, state="UP", **where),
                "status_down": value_of(samples, STATUS, state="DOWN", **where),
                "check_up_down_total": value_of(samples, UP_DOWN, **where)}

    def _exporters(self) -> list:
        """One exporter per balancer (a single one is accepted as is)."""
        return list(self.metrics) if isinstance(self.metrics, (list, tuple)) else [self.metrics]

    def _read_each(self) -> dict:
        return {exporter.url: self._victim_metrics(exporter.read()) for exporter in self._exporters()}

    def before(self):
        by_exporter = self._read_each()
        self.before_by_exporter = by_exporter
        self.seen["before"] = next(iter(by_exporter.values()))
        where = f'{{proxy="{self.test.settings.pool}",server="{self.test.settings.victim}"}}'
        for url, seen in by_exporter.items():
            if seen["check_up_down_total"] is None or seen["status_up"] is None:
                raise StepFailed(f"{url}: no {STATUS} / {UP_DOWN} for {where}", seen)
            if seen["status_up"] != 1:
                raise StepFailed(f'{url}: {STATUS}{where[:-1]},state="UP"}} reads {seen["status_up"]:g}, not 1', seen)
        return "; ".join(f'{url}: {STATUS}{{state="UP"}} 1, {UP_DOWN} {seen["check_up_down_total"]:g}'
                         for url, seen in by_exporter.items()) + f" for {self.test.settings.victim}", self.seen["before"]

    def down(self):
        grace = self.test.settings.metrics_grace
        remaining = max(0.0, self.test.marks["down"] + grace - self.test.clock())
        try:
            waited = wait_until(self._read_each, timeout=remaining, interval=self.test.settings.poll_interval,
                                done=lambda each: any(seen["status_down"] == 1 for seen in each.values()),
                                clock=self.test.clock, sleep=self.test.sleep, what="the exporter's DOWN")
            url, seen = next((url, seen) for url, seen in waited.value.items() if seen["status_down"] == 1)
            after_down = self.test.clock() - self.test.marks["down"]
        except WaitTimeout as exc:
            seen = next(iter((exc.last_value or {}).values()), {})
            error = f"; last error: {exc.last_error}" if exc.last_error is not None else ""
            self.seen["down"] = seen
            raise StepFailed(f'{STATUS}{{state="DOWN"}} of {self.test.settings.victim} not 1 within {grace:g}s of the '
                             f'runtime API\'s DOWN (last read {seen.get("status_down")}){error}', seen) from None
        before = self.before_by_exporter[url]["check_up_down_total"]
        rise = (seen["check_up_down_total"] or 0) - before
        seen = seen | {"exporter": url, "seconds_after_down": round(after_down, 3), "up_down_rise": rise}
        self.seen["down"] = seen
        detail = (f'{STATUS}{{state="DOWN"}} 1 at {after_down:.2f}s after the runtime API\'s DOWN '
                  f"(limit {grace:g}s); {UP_DOWN} {before:g} → {seen['check_up_down_total']:g}")
        if rise != 1:
            raise StepFailed(f"{detail}: rose by {rise:g}, not 1", seen)
        return detail + " (+1)", seen

"""The alert check the failover gates run: the right alert fires within its budget after the fault
and resolves within its budget after the repair, as Alertmanager's API shows it.

A gate builds an ``AlertGate`` for the alert its fault should raise (``expect_server_down`` for a
backend or stream server, ``expect_balancer_down`` for a balancer) and calls, in order:

    quiet()              before the fault: that alert is not already firing
    wait_fired(since)    after the fault (``since``: when it happened, on the gate's clock)
    wait_resolved(since) after the repair

Each returns an ``AlertResult`` (passed, one-line detail, data for the report) and records the
clock time it saw the change in ``marks`` (``alert_fired``, ``alert_resolved``) for the timeline.
Every wait is bounded: it polls until twice the budget (plus a few seconds), so a late alert is
measured and reported late, not just "missing".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import rules as alert_rules
from .api import MonitorAPIError
from .settings import MonitoringSettings

POLL_SECONDS = 0.25
EXTRA_WAIT = 5.0  # beyond twice the budget: how long a late alert is still waited for (and measured)


@dataclass(frozen=True)
class AlertExpectation:
    alert: str
    labels: dict
    fire_budget: float
    resolve_budget: float

    def describe(self) -> str:
        return f"{self.alert}{{{', '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}}}"


@dataclass
class AlertResult:
    passed: bool
    detail: str
    data: dict = field(default_factory=dict)


def expect_server_down(settings: MonitoringSettings, rules, pool: str, server: str) -> AlertExpectation:
    rule = alert_rules.find(rules, alert_rules.SERVER_DOWN)
    return AlertExpectation(rule.alert, {"proxy": pool, "server": server}, rule.budget(settings),
                            rule.resolve_budget(settings))


def unwanted_during_vip_move(rules) -> tuple:
    """A VIP move of a healthy pair is over long before the VIP-holder rule's ``for``: it must not fire."""
    return tuple(rule.alert for rule in rules if rule.alert == alert_rules.VIP_HOLDERS)


def expect_balancer_down(settings: MonitoringSettings, rules, balancer: str) -> AlertExpectation:
    rule = alert_rules.find(rules, alert_rules.BALANCER_DOWN)
    return AlertExpectation(rule.alert, {"instance": balancer}, rule.budget(settings), rule.resolve_budget(settings))


class AlertGate:
    """One expected alert, read from Alertmanager through ``read_alerts()`` (-> ``api.Alert`` list)."""

    def __init__(self, read_alerts: Callable[[], list], expectation: AlertExpectation, marks: dict | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 poll: float = POLL_SECONDS, unwanted=()):
        self.read_alerts = read_alerts
        self.expectation = expectation
        # Alerts a good run never raises (a VIP move must not leave the pair without one holder for long):
        # any of them seen in a read is recorded, and ``stayed_silent`` judges it.
        self.unwanted = tuple(unwanted)
        self.unwanted_seen: list = []
        self.marks = marks if marks is not None else {}  # the gate's own timeline, usually handed over by it
        self.clock = clock
        self.sleep = sleep
        self.poll = poll
        self.results: dict = {}  # what the report shows: latencies, budgets, verdicts

    def _firing(self) -> tuple:
        """(whether the expected alert is active, the other active alerts' names, an error or None)."""
        try:
            alerts = self.read_alerts()
        except MonitorAPIError as exc:
            return None, [], str(exc)
        e = self.expectation
        for alert in alerts:
            if alert.name in self.unwanted and alert.name not in self.unwanted_seen:
                self.unwanted_seen.append(alert.name)
        mine = any(alert.matches(e.alert, e.labels) for alert in alerts)
        return mine, sorted({alert.name for alert in alerts if not alert.matches(e.alert, e.labels)}), None

    def quiet(self) -> AlertResult:
        mine, others, error = self._firing()
        if error:
            return AlertResult(False, error)
        also = f"; also active: {', '.join(others)}" if others else "; nothing else active"
        if mine:
            return AlertResult(False, f"{self.expectation.describe()} is already firing before the fault{also}")
        return AlertResult(True, f"{self.expectation.describe()} not firing{also}", {"active_before": others})

    def _wait(self, since: float, budget: float, want_firing: bool, mark: str) -> AlertResult:
        deadline = since + 2 * budget + EXTRA_WAIT
        seen, error = None, None
        for _ in range(int((deadline - self.clock()) / self.poll) + 2):
            mine, _, error = self._firing()
            if mine is want_firing:
                seen = self.clock()
                break
            if self.clock() >= deadline:
                break
            self.sleep(self.poll)
        what = "fired" if want_firing else "resolved"
        key = "fire" if want_firing else "resolve"
        self.results[f"{key}_budget_seconds"] = budget
        if seen is None:
            self.results[f"{key}_seconds"] = None
            self.results[f"{key}_within_budget"] = False
            return AlertResult(False, f"{self.expectation.describe()} not {what} within {deadline - since:.1f}s "
                               f"(budget {budget:g}s){'; ' + error if error else ''}",
                               {f"alert_{key}_seconds": None, f"alert_{key}_budget_seconds": budget})
        self.marks[mark] = seen
        latency = round(seen - since, 3)
        within = latency <= budget
        self.results[f"{key}_seconds"] = latency
        self.results[f"{key}_within_budget"] = within
        return AlertResult(within, f"{self.expectation.describe()} {what} in Alertmanager {latency:.2f}s "
                           f"{'after the fault' if want_firing else 'after the repair'} (budget {budget:g}s"
                           f"{'' if within else ', MISSED'})",
                           {f"alert_{key}_seconds": latency, f"alert_{key}_budget_seconds": budget})

    def wait_fired(self, since: float) -> AlertResult:
        return self._wait(since, self.expectation.fire_budget, True, "alert_fired")

    def wait_resolved(self, since: float) -> AlertResult:
        return self._wait(since, self.expectation.resolve_budget, False, "alert_resolved")

    def stayed_silent(self) -> AlertResult:
        """None of the unwanted alerts was active in any read so far, nor now."""
        self._firing()
        names = ", ".join(self.unwanted)
        self.results["unwanted_seen"] = list(self.unwanted_seen)
        if self.unwanted_seen:
            return AlertResult(False, f"{', '.join(self.unwanted_seen)} fired during the run")
        return AlertResult(True, f"{names} never active during the run")

    def as_step(self, result: AlertResult):
        """The failover sequence's step convention: (detail, data), or StepFailed."""
        from ..failover.engine import StepFailed

        if not result.passed:
            raise StepFailed(result.detail, result.data)
        return result.detail, result.data

    def report(self) -> dict:
        e = self.expectation
        return {"alert": e.alert, "labels": e.labels, "fire_budget_seconds": e.fire_budget,
                "resolve_budget_seconds": e.resolve_budget, **self.results}

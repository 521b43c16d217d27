"""The canary's intervals: HAProxy's counters read at fixed ends, each canary's identity checked in between,
one verdict per interval and the decision (``analysis.Decision``) stepping the weights up, holding, or ending."""

from __future__ import annotations

from ..haproxy_state import merge
from .analysis import (ABORT, FAIL, HOLD, INCONCLUSIVE, NEXT, PROMOTE, CountersRestarted, Decision, Figures,
                       Interval, figures, judge, snapshot)

IDENTITY_EVERY = 1.0  # seconds between checks that each canary still runs the deployed process
NAP = 0.25  # the longest sleep: an interrupt or a crash is seen this fast


class IntervalWatch:
    """Intervals until the decision; ``run()`` returns PROMOTE or ABORT and ``reason`` says why."""

    def __init__(self, plan, mode, instances, runtime, weights, journal, output, clock, sleep, elapsed):
        self.plan, self.mode, self.instances = plan, mode, instances
        self.runtime, self.weights, self.journal, self.output = runtime, weights, journal, output
        self.clock, self.sleep, self.elapsed = clock, sleep, elapsed
        self.pool, self.names = weights.pool, weights.names
        self.intervals = []
        self.reason = ""

    def run(self) -> str:
        decision = Decision(self.plan)
        pids = {i.name: i.soak_probe()[0] for i in self.instances}
        before = snapshot(self.runtime.per_balancer(), self.pool)
        number = 0
        started = self.clock()
        due = started + self.plan.interval  # fixed ends: reading the counters does not stretch the canary
        while True:
            number += 1
            problem = self._wait_interval(due, pids)
            per_balancer = self.runtime.per_balancer()
            after = snapshot(per_balancer, self.pool)
            self.weights.keep()
            states = {s.server: s.status for s in merge([rows for _, rows in per_balancer])
                      if s.pool == self.pool and s.server in self.names}
            interval = Interval(number, decision.step, self.clock() - started, Figures(), Figures(), at=self.elapsed())
            started = self.clock()
            due = max(due + self.plan.interval, started + self.plan.interval / 2)
            self._judge(interval, before, after, states, problem)
            action = decision.after(interval)
            if action in (PROMOTE, ABORT):
                self.reason = decision.reason
                return action
            if action == NEXT:
                self.weights.set_step(decision.step, "analysing")
            elif action == HOLD and interval.verdict == FAIL:
                self.output.line(f"canary: holding at {decision.step:g}% ({decision.failed} of {self.plan.checks} "
                                 "failed intervals)")
            before = after

    def _judge(self, interval, before, after, states, problem):
        """The interval's figures, canary against stable, and its verdict, printed and audited."""
        try:
            interval.canary = figures(before, after, self.names)
            interval.stable = figures(before, after, self.weights.stables)
            judge(interval, self.plan, states, problem)
        except CountersRestarted as exc:
            interval.verdict, interval.reasons = INCONCLUSIVE, [str(exc)]
            if problem:
                interval.verdict, interval.reasons, interval.hard = FAIL, [problem], True
        self.intervals.append(interval)
        self.output.line(interval.line(self.mode))
        self.journal.event("canary-interval", **interval.to_dict(), outcome=interval.verdict,
                           detail=f"step {interval.step:g}%: canary {interval.canary.requests} req "
                                  f"{interval.canary.error_share:.1%} 5xx, stable {interval.stable.requests} req "
                                  f"{interval.stable.error_share:.1%} 5xx" + (f"; {'; '.join(interval.reasons)}"
                                                                              if interval.reasons else ""))

    def _wait_interval(self, due, pids) -> str | None:
        """Sleep until ``due``, the interval's end; every ``IDENTITY_EVERY`` s each canary must still run the
        deployed process (same main PID, answering): a crash ends the interval at once with the reason."""
        last_probe = self.clock()
        while True:
            left = due - self.clock()
            if left <= 0:
                return self._identity(pids)
            self.sleep(min(NAP, left))
            if self.clock() - last_probe >= IDENTITY_EVERY:
                last_probe = self.clock()
                problem = self._identity(pids)
                if problem:
                    return problem

    def _identity(self, pids) -> str | None:
        for instance in self.instances:
            pid, code = instance.soak_probe()
            if pid != pids[instance.name]:
                return (f"{instance.name}'s main process changed (pid {pids[instance.name]} -> {pid or 'none'}): "
                        "it crashed or was restarted")
            if code in ("", "000"):
                pid, code = instance.soak_probe()  # no answer at all is asked once more, as the soak does
            if code != "200":
                return f"{instance.name} health {code or 'no answer'}"
        return None

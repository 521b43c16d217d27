"""The canary's orchestration: weights on every balancer, the canary's deploy through every gate of today,
one analysis per interval from HAProxy's counters, then promote (the caller rolls the rest) or abort.

Abort: the canaries' weight 0 (no new requests but sticky ones), their rollback to ``.prev`` through the
rollout's gates (drain, maint, swap, restart, identity, health, soak), then every weight back to its
configured (initial) value. Ctrl-C or SIGTERM at any step does the same, then re-raises (exit 130/143).
Weights are checked every interval and put back if something (a reload without the server-state file) lost
them. The canary's state is published on the lock balancer (``publish``) for ``api.status``.
"""

from __future__ import annotations

import time

from .analysis import PROMOTE, exposed_share
from .watch import IntervalWatch
from .weights import CanaryJournal, CanaryWeights


class Canary:
    """One canary run. ``deploy_rollout(names)`` makes a rollout over the named instances (the caller's
    ``Rollout``; with no artifact it rolls back); ``instances`` are the canaries' ``Instance`` objects.
    Its collaborators: ``journal`` (audit, published state), ``weights`` (every balancer's weights) and,
    once the canaries are deployed, ``watch`` (the intervals and the decision)."""

    def __init__(self, plan, mode, instances, runtime, pool, output, *, deploy_rollout, audit=None, publish=None,
                 notes=(), clock=time.monotonic, sleep=time.sleep):
        self.plan, self.mode, self.instances = plan, mode, list(instances)
        self.runtime, self.pool, self.output = runtime, pool, output
        self.make_rollout = deploy_rollout
        self.clock, self.sleep = clock, sleep
        self.names = [instance.name for instance in self.instances]
        self.notes = list(notes)  # lines printed as the canary starts (what may make a share differ from its step)
        self.journal = CanaryJournal(pool, self.names, output, audit, publish)
        self.weights = CanaryWeights(runtime, pool, self.names, mode, output, self.journal, self._elapsed)
        self.watch = IntervalWatch(plan, mode, self.instances, runtime, self.weights, self.journal, output, clock,
                                   sleep, self._elapsed)
        self.decision = ""
        self.reason = ""
        self.started = None  # clock when the canaries took traffic
        self.decided = None
        self.deploy_outcomes = []
        self.rollback_outcomes = []

    def _elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def run(self, artifact, facts, force=False) -> str:
        """Deploy the canaries, analyse, decide; returns "promoted" or "aborted". An interrupt (Ctrl-C,
        SIGTERM) makes everything safe first, then is raised again."""
        self.weights.read_pool()
        if self.mode == "keys":
            self.output.line(f"canary: {self.pool} hashes its keys (consistent hash): a weight moves a share of the "
                             "tracks, not of the requests; each track stays on one server, so the canary's share of "
                             "requests is what those tracks are played")
        for note in self.notes:
            self.output.line(f"canary: {note}")
        self.journal.event("canary-start", steps=list(self.plan.steps), interval=self.plan.interval,
                           checks=self.plan.checks, canaries=self.names, mode=self.mode,
                           detail=f"{', '.join(self.names)}: steps {','.join(f'{s:g}' for s in self.plan.steps)}%, "
                                  f"{self.plan.interval:g}s intervals, {self.plan.checks} checks")
        try:
            self.weights.set_step(self.plan.steps[0], "deploying")
            rollout = self.make_rollout(self.names)
            try:
                rollout.run(artifact, {name: facts[name] for name in self.names}, force)
            finally:
                self.deploy_outcomes = list(rollout.outcomes)
            if rollout.failed:
                self._decide("aborted", "the canary failed the deploy's own gates (it is back on its previous "
                                        "binary)")
                self.weights.restore()
                return self.decision
            self.started = self.clock()
            self.journal.publish("analysing", step=self.plan.steps[0], weights=self.weights.wanted)
            if self.watch.run() == PROMOTE:
                self._decide("promoted", f"passed every step ({', '.join(f'{s:g}%' for s in self.plan.steps)})")
                self.weights.restore()
            else:
                self._decide("aborted", self.watch.reason)
                self._roll_back(artifact)
                self.weights.restore()
            return self.decision
        except KeyboardInterrupt as interrupt:
            self.output.line(f"canary: interrupted ({str(interrupt) or 'SIGINT'}): weight 0, canary back to its previous "
                             "binary, weights restored (interrupt again to stop at once)")
            self._decide("interrupted", f"interrupted ({str(interrupt) or 'SIGINT'})")
            self._make_safe(artifact)
            raise
        finally:
            self.journal.publish("done", decision=self.decision)

    def _decide(self, decision, reason):
        self.decision, self.reason = decision, reason
        self.decided = self.clock()
        exposed = exposed_share(self.watch.intervals)
        self.journal.event("canary-" + decision, reason=reason, exposed_share=round(exposed, 4),
                           seconds=round(self._elapsed(), 2), outcome=decision, detail=reason)
        if decision != "interrupted":
            self.output.line(f"canary {decision.upper()} after {self._elapsed():.1f}s: {reason}; exposed share "
                             f"{exposed:.1%}")

    def _make_safe(self, artifact):
        """After an interrupt: canaries on the new binary go back to their previous one; weights restored."""
        try:
            self._roll_back(artifact)
        finally:
            self.weights.restore()

    def _roll_back(self, artifact):
        """Weight 0 for the canaries, then back to ``.prev`` through the gates (only those on the new binary)."""
        self.weights.zero()
        on_new = [i.name for i in self.instances if artifact is not None and i.facts()["sha256"] == artifact.sha256]
        if not on_new:
            return
        rollout = self.make_rollout(on_new)
        facts = {i.name: i.facts() for i in self.instances if i.name in on_new}
        try:
            rollout.run(None, facts, False)
        finally:
            self.rollback_outcomes = list(rollout.outcomes)

    def report(self) -> dict:
        return {
            "decision": self.decision,
            "reason": self.reason,
            "canaries": self.names,
            "pool": self.pool,
            "moves": "tracks" if self.mode == "keys" else "requests",
            "plan": {"steps": list(self.plan.steps), "interval": self.plan.interval, "checks": self.plan.checks,
                     "max_5xx": self.plan.max_5xx, "max_slowdown": self.plan.max_slowdown,
                     "min_requests": self.plan.min_requests, "count": self.plan.count},
            "exposed_share": round(exposed_share(self.watch.intervals), 4),
            "seconds_to_decision": None if self.started is None or self.decided is None
            else round(self.decided - self.started, 2),
            "weights": self.weights.steps,
            "intervals": [interval.to_dict() for interval in self.watch.intervals],
        }


__all__ = ["Canary"]

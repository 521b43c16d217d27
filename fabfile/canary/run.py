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

from ..haproxy_state import PoolView, merge
from .analysis import (ABORT, FAIL, HOLD, INCONCLUSIVE, NEXT, PROMOTE, CountersRestarted, Decision, Figures,
                       Interval, exposed_share, figures, judge, snapshot)
from .plan import share_of, weights_for_share

IDENTITY_EVERY = 1.0  # seconds between checks that each canary still runs the deployed process
NAP = 0.25  # the longest sleep: an interrupt or a crash is seen this fast


class Canary:
    """One canary run. ``deploy_rollout(names)`` / ``rollback_rollout(names)`` make rollouts over the named
    instances (the caller's ``Rollout``); ``instances`` are the canaries' ``Instance`` objects."""

    def __init__(self, plan, mode, instances, runtime, pool, output, *, deploy_rollout, audit=None, publish=None,
                 notes=(), clock=time.monotonic, sleep=time.sleep):
        self.plan, self.mode, self.instances = plan, mode, list(instances)
        self.runtime, self.pool, self.output = runtime, pool, output
        self.make_rollout = deploy_rollout
        self.audit = audit or (lambda event, instance=None, **fields: None)
        self.publish = publish or (lambda state: None)
        self.clock, self.sleep = clock, sleep
        self.names = [instance.name for instance in self.instances]
        self.notes = list(notes)  # lines printed as the canary starts (what may make a share differ from its step)
        self.up_stables = []
        self.decision = ""
        self.reason = ""
        self.intervals = []
        self.steps = []  # [{"at", "step", "canary_weight", "stable_weight", "share"}]
        self.started = None  # clock when the canaries took traffic
        self.decided = None
        self.deploy_outcomes = []
        self.rollback_outcomes = []
        self.initial = {}
        self.stables = []
        self.wanted = {}

    # -- helpers ---------------------------------------------------------
    def _event(self, event, instance=None, **fields):
        try:
            self.audit(event, instance, **fields)
        except Exception as exc:  # the audit trail never breaks a canary
            self.output.line(f"warning: audit line '{event}' not written: {exc}")

    def _publish(self, phase, **fields):
        try:
            self.publish({"pool": self.pool, "canaries": self.names, "phase": phase, **fields})
        except Exception as exc:  # status loses a line, the canary goes on
            self.output.line(f"warning: canary state not published: {exc}")

    def _elapsed(self) -> float:
        return 0.0 if self.started is None else self.clock() - self.started

    def _set_step(self, step: float):
        up_stables = self.up_stables or self.stables
        canary_weight, stable_weight = weights_for_share(step / 100, len(self.names), len(up_stables))
        self.wanted = {**{name: canary_weight for name in self.names}, **{name: stable_weight for name in self.stables}}
        self.runtime.set_weights(self.pool, self.wanted)
        share = share_of(canary_weight, stable_weight, len(self.names), len(up_stables))
        what = "of the tracks (consistent hash)" if self.mode == "keys" else "of the requests"
        self.output.line(f"canary step {step:g}%: weight {canary_weight} on {', '.join(self.names)}, {stable_weight} on "
                         f"{', '.join(self.stables)} on every balancer: {share:.1%} {what}")
        self.steps.append({"at": round(self._elapsed(), 2), "step": step, "canary_weight": canary_weight,
                           "stable_weight": stable_weight, "share": round(share, 4)})
        self._event("canary-step", step=step, weights=self.wanted,
                    detail=f"step {step:g}%: " + ", ".join(f"{n}={w}" for n, w in self.wanted.items()))
        self._publish("analysing" if self.started is not None else "deploying", step=step, weights=self.wanted)

    def restore_weights(self):
        """Every server of the pool back to its configured (initial) weight, on every balancer."""
        self.runtime.set_weights(self.pool, {name: initial for name, (_, initial) in self.initial.items()})
        self.wanted = {}
        self.output.line(f"canary: weights back to the configured ones on every balancer "
                         f"({', '.join(f'{n}={w}' for n, (_, w) in self.initial.items())})")
        self._event("canary-weights", weights={n: w for n, (_, w) in self.initial.items()},
                    detail="configured weights back: " + ", ".join(f"{n}={w}" for n, (_, w) in self.initial.items()))

    def _keep_weights(self):
        """The weights this step set, put back if a balancer lost them (a reload without the state file)."""
        if not self.wanted:
            return
        for balancer, weights in self.runtime.weights(self.pool, list(self.wanted)):
            lost = {name: current for name, (current, _) in weights.items() if current != self.wanted[name]}
            if lost:
                self.output.line(f"warning: {balancer} lost the canary's weights ({lost}); setting them again")
                self._event("canary-weights", balancer=balancer, found=lost, detail=f"{balancer} lost them: set again")
                self.runtime.set_weights(self.pool, self.wanted)
                return

    # -- the canary ------------------------------------------------------
    def run(self, artifact, facts, force=False) -> str:
        """Deploy the canaries, analyse, decide; returns "promoted" or "aborted". An interrupt (Ctrl-C,
        SIGTERM) makes everything safe first, then is raised again."""
        view = PoolView.read(self.runtime, self.pool)
        self.stables = [name for name in view.names if name not in self.names]
        self.up_stables = [name for name in self.stables if name in view.up]
        servers = view.names
        self.initial = self.runtime.weights(self.pool, servers)[0][1]
        if self.mode == "keys":
            self.output.line(f"canary: {self.pool} hashes its keys (consistent hash): a weight moves a share of the "
                             "tracks, not of the requests; each track stays on one server, so the canary's share of "
                             "requests is what those tracks are played")
        for note in self.notes:
            self.output.line(f"canary: {note}")
        self._event("canary-start", steps=list(self.plan.steps), interval=self.plan.interval, checks=self.plan.checks,
                    canaries=self.names, mode=self.mode,
                    detail=f"{', '.join(self.names)}: steps {','.join(f'{s:g}' for s in self.plan.steps)}%, "
                           f"{self.plan.interval:g}s intervals, {self.plan.checks} checks")
        deployed = False
        try:
            self._set_step(self.plan.steps[0])
            rollout = self.make_rollout(self.names)
            try:
                rollout.run(artifact, {name: facts[name] for name in self.names}, force)
            finally:
                self.deploy_outcomes = list(rollout.outcomes)
            deployed = not rollout.failed
            if not deployed:
                self._decide("aborted", "the canary failed the deploy's own gates (it is back on its previous "
                                        "binary)")
                self.restore_weights()
                return self.decision
            self.started = self.clock()
            self._publish("analysing", step=self.plan.steps[0], weights=self.wanted)
            if self._analyse() == PROMOTE:
                self._decide("promoted", f"passed every step ({', '.join(f'{s:g}%' for s in self.plan.steps)})")
                self.restore_weights()
            else:
                self._decide("aborted", self.reason)
                self._roll_back(artifact)
                self.restore_weights()
            return self.decision
        except KeyboardInterrupt as interrupt:
            self.output.line(f"canary: interrupted ({str(interrupt) or 'SIGINT'}): weight 0, canary back to its previous "
                             "binary, weights restored (interrupt again to stop at once)")
            self._decide("interrupted", f"interrupted ({str(interrupt) or 'SIGINT'})")
            self._make_safe(artifact)
            raise
        finally:
            self._publish("done", decision=self.decision)

    def _decide(self, decision, reason):
        self.decision, self.reason = decision, reason
        self.decided = self.clock()
        self._event("canary-" + decision, reason=reason, exposed_share=round(exposed_share(self.intervals), 4),
                    seconds=round(self._elapsed(), 2), outcome=decision, detail=reason)
        if decision != "interrupted":
            self.output.line(f"canary {decision.upper()} after {self._elapsed():.1f}s: {reason}; exposed share "
                             f"{exposed_share(self.intervals):.1%}")

    def _make_safe(self, artifact):
        """After an interrupt: canaries on the new binary go back to their previous one; weights restored."""
        try:
            self._roll_back(artifact)
        finally:
            self.restore_weights()

    def _roll_back(self, artifact):
        """Weight 0 for the canaries, then back to ``.prev`` through the gates (only those on the new binary)."""
        self.runtime.set_weights(self.pool, {name: 0 for name in self.names})
        self._event("canary-weights", canaries=self.names, detail="weight 0 on " + ", ".join(self.names))
        on_new = [i.name for i in self.instances if artifact is not None and i.facts()["sha256"] == artifact.sha256]
        if not on_new:
            return
        rollout = self.make_rollout(on_new)
        facts = {i.name: i.facts() for i in self.instances if i.name in on_new}
        try:
            rollout.run(None, facts, False)
        finally:
            self.rollback_outcomes = list(rollout.outcomes)

    def _analyse(self) -> str:
        """Intervals until the decision: PROMOTE or ABORT (``self.reason`` says why)."""
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
            self._keep_weights()
            states = {s.server: s.status for s in merge([rows for _, rows in per_balancer])
                      if s.pool == self.pool and s.server in self.names}
            interval = Interval(number, decision.step, self.clock() - started, Figures(), Figures(), at=self._elapsed())
            started = self.clock()
            due = max(due + self.plan.interval, started + self.plan.interval / 2)
            try:
                interval.canary = figures(before, after, self.names)
                interval.stable = figures(before, after, self.stables)
                judge(interval, self.plan, states, problem)
            except CountersRestarted as exc:
                interval.verdict, interval.reasons = INCONCLUSIVE, [str(exc)]
                if problem:
                    interval.verdict, interval.reasons, interval.hard = FAIL, [problem], True
            self.intervals.append(interval)
            self.output.line(interval.line(self.mode))
            self._event("canary-interval", **interval.to_dict(), outcome=interval.verdict,
                        detail=f"step {interval.step:g}%: canary {interval.canary.requests} req "
                               f"{interval.canary.error_share:.1%} 5xx, stable {interval.stable.requests} req "
                               f"{interval.stable.error_share:.1%} 5xx" + (f"; {'; '.join(interval.reasons)}"
                                                                           if interval.reasons else ""))
            action = decision.after(interval)
            if action in (PROMOTE, ABORT):
                self.reason = decision.reason
                return action
            if action == NEXT:
                self._set_step(decision.step)
            elif action == HOLD and interval.verdict == FAIL:
                self.output.line(f"canary: holding at {decision.step:g}% ({decision.failed} of {self.plan.checks} "
                                 "failed intervals)")
            before = after

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

    # -- report ----------------------------------------------------------
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
            "exposed_share": round(exposed_share(self.intervals), 4),
            "seconds_to_decision": None if self.started is None or self.decided is None
            else round(self.decided - self.started, 2),
            "weights": self.steps,
            "intervals": [interval.to_dict() for interval in self.intervals],
        }


__all__ = ["Canary"]

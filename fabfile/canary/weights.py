"""The canary's weights on every balancer and its trail: what a step sets, what an abort restores.

``CanaryJournal``: the audit lines and the published state (``api.status``); neither may break a canary.
``CanaryWeights``: reads the pool once (stables, the stables that are UP, each server's configured weight),
sets a step's weights, puts back weights a balancer lost (a reload without the server-state file), gives the
canaries weight 0 before a rollback and restores the configured weights at the end.
"""

from __future__ import annotations

from ..haproxy_state import PoolView
from .plan import share_of, weights_for_share


class CanaryJournal:
    """Audit lines and published state of one canary run; a failure to write one is a warning."""

    def __init__(self, pool, names, output, audit=None, publish=None):
        self.pool, self.names, self.output = pool, names, output
        self.audit = audit or (lambda event, instance=None, **fields: None)
        self.publisher = publish or (lambda state: None)

    def event(self, event, instance=None, **fields):
        try:
            self.audit(event, instance, **fields)
        except Exception as exc:  # the audit trail never breaks a canary
            self.output.line(f"warning: audit line '{event}' not written: {exc}")

    def publish(self, phase, **fields):
        try:
            self.publisher({"pool": self.pool, "canaries": self.names, "phase": phase, **fields})
        except Exception as exc:  # status loses a line, the canary goes on
            self.output.line(f"warning: canary state not published: {exc}")


class CanaryWeights:
    """The pool's weights on every balancer (``runtime``) while the canaries ``names`` run."""

    def __init__(self, runtime, pool, names, mode, output, journal, elapsed):
        self.runtime, self.pool, self.names, self.mode = runtime, pool, names, mode
        self.output, self.journal, self.elapsed = output, journal, elapsed
        self.initial = {}  # server -> (current, configured) as read before the first step
        self.wanted = {}  # what the current step set; empty once restored
        self.stables = []
        self.up_stables = []
        self.steps = []  # [{"at", "step", "canary_weight", "stable_weight", "share"}]

    def read_pool(self):
        """The stables, those UP, and every server's configured weight, before anything changes."""
        view = PoolView.read(self.runtime, self.pool)
        self.stables = [name for name in view.names if name not in self.names]
        self.up_stables = [name for name in self.stables if name in view.up]
        self.initial = self.runtime.weights(self.pool, view.names)[0][1]

    def set_step(self, step: float, phase: str):
        """The weights that give the canaries ``step`` % of the traffic, on every balancer."""
        up_stables = self.up_stables or self.stables
        canary_weight, stable_weight = weights_for_share(step / 100, len(self.names), len(up_stables))
        self.wanted = {**{name: canary_weight for name in self.names}, **{name: stable_weight for name in self.stables}}
        self.runtime.set_weights(self.pool, self.wanted)
        share = share_of(canary_weight, stable_weight, len(self.names), len(up_stables))
        what = "of the tracks (consistent hash)" if self.mode == "keys" else "of the requests"
        self.output.line(f"canary step {step:g}%: weight {canary_weight} on {', '.join(self.names)}, {stable_weight} on "
                         f"{', '.join(self.stables)} on every balancer: {share:.1%} {what}")
        self.steps.append({"at": round(self.elapsed(), 2), "step": step, "canary_weight": canary_weight,
                           "stable_weight": stable_weight, "share": round(share, 4)})
        self.journal.event("canary-step", step=step, weights=self.wanted,
                           detail=f"step {step:g}%: " + ", ".join(f"{n}={w}" for n, w in self.wanted.items()))
        self.journal.publish(phase, step=step, weights=self.wanted)

    def keep(self):
        """The weights this step set, put back if a balancer lost them (a reload without the state file)."""
        if not self.wanted:
            return
        for balancer, weights in self.runtime.weights(self.pool, list(self.wanted)):
            lost = {name: current for name, (current, _) in weights.items() if current != self.wanted[name]}
            if lost:
                self.output.line(f"warning: {balancer} lost the canary's weights ({lost}); setting them again")
                self.journal.event("canary-weights", balancer=balancer, found=lost,
                                   detail=f"{balancer} lost them: set again")
                self.runtime.set_weights(self.pool, self.wanted)
                return

    def zero(self):
        """Weight 0 for the canaries: no new requests, sticky ones still reach them."""
        self.runtime.set_weights(self.pool, {name: 0 for name in self.names})
        self.journal.event("canary-weights", canaries=self.names, detail="weight 0 on " + ", ".join(self.names))

    def restore(self):
        """Every server of the pool back to its configured (initial) weight, on every balancer."""
        configured = {name: initial for name, (_, initial) in self.initial.items()}
        self.runtime.set_weights(self.pool, configured)
        self.wanted = {}
        shown = ", ".join(f"{n}={w}" for n, w in configured.items())
        self.output.line(f"canary: weights back to the configured ones on every balancer ({shown})")
        self.journal.event("canary-weights", weights=configured, detail=f"configured weights back: {shown}")

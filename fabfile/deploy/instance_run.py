"""One instance's pass through a rollout: take it out, install or swap, bring it back through the gates;
every failure rolls back, an interrupt makes it safe. One ``InstanceRun`` object per instance and pass."""

from __future__ import annotations

from ..polling import WaitTimeout
from .artifact import DeployError
from .control import Stopped
from .gates import Gates
from .instance import InstanceOutcome


class InstanceRun:
    """``run()`` is the per-instance sequence; ``artifact`` None swaps back to ``.prev`` (a rollback)."""

    def __init__(self, context, instance, artifact, facts: dict, force: bool, outcomes: list, soaking=None):
        self.ctx = context
        self.instance = instance
        self.artifact = artifact
        self.current = facts[instance.name]
        self.force = force
        self.outcomes = outcomes  # the rollout's: this run's outcome joins it as soon as it exists
        self.soaking = soaking  # called as the soak starts (the scheduler's pipelining)
        self.gates = Gates(context, instance)

    def run(self) -> InstanceOutcome:
        """An interrupt or a stop of the rollout before it is taken out leaves it untouched (raised, no
        outcome)."""
        ctx, instance, artifact, current = self.ctx, self.instance, self.artifact, self.current
        ctx.control.start_worker()
        started = ctx.clock()
        target = artifact.sha256 if artifact is not None else current["prev_sha256"]
        old = current["sha256"]
        on_disk = artifact is not None and current["sha256"] == artifact.sha256  # an earlier run got this far
        if on_disk:
            old = current["prev_sha256"]
        staging_error = None
        ctx.control.checkpoint()
        if artifact is not None and not on_disk:
            # Uploaded and verified while it still serves (usually while the instance before it soaked);
            # an interrupt or a stop while waiting for it leaves the instance untouched.
            try:
                uploaded = ctx.staging.wait(instance)
            except Exception as exc:  # noqa: BLE001 - any upload failure stops before taking it out
                staging_error = exc
            ctx.control.checkpoint()
        outcome = InstanceOutcome(instance.name, "changed", target=target, old=old)
        self.outcomes.append(outcome)
        if staging_error is not None:
            self.give_back(outcome, DeployError(f"{instance.name}: upload failed: {staging_error}"), taken_out=False)
            outcome.state, outcome.seconds = "as before", round(ctx.clock() - started, 3)
            return outcome
        if artifact is not None and not on_disk:
            outcome.phases["stage"] = round(ctx.clock() - started, 3)
            ctx.say(instance.name, "stage", outcome.phases["stage"],
                    f"{artifact.size / 1e6:.1f} MB uploaded, sha256 {artifact.sha256[:12]} verified "
                    f"({uploaded:.2f}s, while in service)")
        taken_out = swapped = False
        try:
            try:
                self.take_out(outcome)
                taken_out = True
                if on_disk:
                    ctx.say(instance.name, "converge", 0, "target binary already on disk; restart and gates")
                elif artifact is not None:
                    ctx.timed(outcome, "install", instance.install, "staged binary renamed into place")
                    ctx.staging.installed.add(instance.name)
                    ctx.event("pushed", instance.name, **{"from": old, "to": target})
                else:
                    ctx.timed(outcome, "swap", instance.swap_with_prev, "previous binary is live")
                    ctx.event("swapped", instance.name, **{"from": old, "to": target})
                swapped = True
                self.gates.bring_back(outcome, target, soaking=self.soaking)
                ctx.event("done", instance.name, **{"from": old, "to": target}, outcome="changed",
                          seconds=round(ctx.clock() - started, 3))
            except KeyboardInterrupt as interrupt:
                self.interrupted(outcome, target, old, interrupt)
                raise
            except Exception as exc:  # every failure is the rollback path
                if swapped:
                    if artifact is None:
                        restore = instance.swap_with_prev
                    elif old == "none":
                        restore = lambda: None  # first deploy: there is nothing to go back to
                    else:
                        restore = instance.restore_prev
                    self.recover(outcome, exc, restore, None if old == "none" else old)
                else:  # a failure (or a stop) inside the drain wait leaves it DRAIN: back to ready too
                    self.give_back(outcome, exc, taken_out or outcome.state in ("DRAIN", "MAINT"))
        finally:
            outcome.seconds = round(ctx.clock() - started, 3)
        return outcome

    def take_out(self, outcome):
        """Drain then maint; the batch it belongs to was chosen within the floor."""
        ctx, name = self.ctx, self.instance.name
        outcome.state = "DRAIN"
        ctx.runtime.set_state(ctx.pool, name, "drain")
        ctx.event("drained", name)

        def sessions():
            return ctx.runtime.server(ctx.pool, name).current_sessions

        started = ctx.clock()
        try:
            waited = ctx.wait(sessions, lambda n: not n, ctx.timeouts.drain, f"{name} sessions to drain",
                              runtime_probe=True)
            note = f"sessions 0 after {waited.elapsed:.2f}s"
        except WaitTimeout as exc:
            note = f"drain timeout, going on: {exc}"
        ctx.runtime.set_state(ctx.pool, name, "maint")
        outcome.state = "MAINT"
        outcome.phases["drain"] = round(ctx.clock() - started, 3)
        ctx.event("maint", name, seconds=outcome.phases["drain"])
        ctx.say(name, "drain", outcome.phases["drain"], note + "; maint")

    def through(self, outcome):
        """The balancers that answer now; when some do not, the outcome says so (re-run once they do)."""
        runtime = self.ctx.answering()
        if runtime is not self.ctx.runtime:
            missing = [name for name in self.ctx.runtime.name.split(",") if name not in runtime.name.split(",")]
            outcome.detail += (f"; put back through {runtime.name} only: {', '.join(missing)} does not answer "
                               "(its state of this server is whatever it had); re-run once it answers")
        return runtime

    def _failed(self, outcome, error):
        self.ctx.control.recovering()  # a stop of the rollout does not interrupt this
        if not isinstance(error, Stopped):
            self.ctx.control.count_failure(self.instance.name)
        self.ctx.say(self.instance.name, "FAILED", 0, str(error))
        outcome.detail = str(error)

    def recover(self, outcome, error, restore, expected):
        """After a failure on an instance: out of rotation at once (maint, no drain wait: it may be in
        rotation already), then the previous binary back through the same gates, through the
        balancers that answer."""
        ctx, name = self.ctx, self.instance.name
        self._failed(outcome, error)
        try:
            runtime = self.through(outcome)
            runtime.set_state(ctx.pool, name, "maint")
            outcome.state = "MAINT"
            restore()
            self.gates.bring_back(outcome, expected, runtime=runtime)
            outcome.status = "rolled-back"
            ctx.event("rolled-back", name, to=expected, outcome="rolled-back", detail=outcome.detail)
            where = "" if runtime is ctx.runtime else f" on {runtime.name}"
            ctx.say(name, "rolled-back", 0, f"previous binary is live and UP again{where}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report whatever broke the recovery, with the instance's name
            outcome.status = "failed"
            outcome.detail += f"; recovery failed too: {exc}"
            ctx.event("failed", name, outcome="failed", detail=outcome.detail)
            ctx.say(name, "FAILED", 0, f"recovery failed: {exc}; left {outcome.state or 'as is'}")

    def give_back(self, outcome, error, taken_out):
        """A failure before the binary was touched: put the server back in service, restart nothing."""
        ctx, name = self.ctx, self.instance.name
        self._failed(outcome, error)
        outcome.status = "failed"
        if taken_out:
            try:
                self.through(outcome).set_state(ctx.pool, name, "ready")
                outcome.state = "ready"
            except Exception as exc:
                outcome.detail += f"; could not return it to ready: {exc}"
                ctx.say(name, "FAILED", 0, f"still {outcome.state}: {exc}")
        ctx.event("failed", name, outcome="failed", detail=outcome.detail)

    def make_safe(self, outcome, target, old):
        """After an interrupt: finish the gates if the target is on disk, else put the old binary back
        and return the instance to ready. Bounded by the same timeouts."""
        instance = self.instance
        facts = instance.facts()
        if target and facts["sha256"] == target:
            try:
                self.gates.bring_back(outcome, target, restart=facts["running_sha256"] != target)
                outcome.detail = "interrupted; finished its gates on the new binary"
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self.ctx.say(instance.name, "FAILED", 0, f"finishing after the interrupt: {exc}")
                if old and old != "none" and facts["prev_sha256"] == old:
                    instance.restore_prev()
                facts = instance.facts()
        restart = facts["running_sha256"] != facts["sha256"] or facts["unit"] != "active"
        self.gates.bring_back(outcome, facts["sha256"], restart=restart)
        outcome.detail = "interrupted; back on its previous binary"

    def interrupted(self, outcome, target, old, interrupt):
        """Make the current instance safe (bounded); a second interrupt stops at once."""
        ctx, name = self.ctx, self.instance.name
        outcome.status = "interrupted"
        ctx.control.recovering()
        ctx.say(name, "INTERRUPTED", 0, f"{interrupt or 'SIGINT'}: making it safe (interrupt again to stop at once)")
        try:
            self.make_safe(outcome, target, old)
            ctx.event("interrupted", name, outcome="made safe", detail=outcome.detail)
        except KeyboardInterrupt:
            ctx.control.abandoned = True
            outcome.detail = "second interrupt: left as it was"
            ctx.event("interrupted", name, outcome="abandoned")
        except Exception as exc:
            outcome.detail = f"interrupted; making it safe failed: {exc}"
            ctx.say(name, "FAILED", 0, outcome.detail)

"""The per-instance sequence of a rollout: take out, push or swap, bring back through the gates
(restart, identity, health, ready + health up, soak, HAProxy UP); every failure rolls back, an
interrupt makes the instance safe. A mixin of ``Rollout``."""

from __future__ import annotations

import json

from ..haproxy_runtime import RuntimeAPIError
from ..polling import WaitTimeout
from .artifact import DeployError
from .instance import InstanceOutcome


class Stopped(DeployError):
    """Raised in a worker once the rollout stops (max-fail reached): its instance goes back as on a failure,
    and does not count as one more failed instance."""


class InstanceGates:
    """Mixin of Rollout: uses its runtime, timeouts, output and audit."""

    # -- per instance ----------------------------------------------------
    def _take_out(self, instance, outcome, force):
        """Drain then maint; the batch it belongs to was chosen within the floor (``_next_batch``)."""
        outcome.state = "DRAIN"
        self.runtime.set_state(self.pool, instance.name, "drain")
        self._event("drained", instance.name)

        def sessions():
            return self.runtime.server(self.pool, instance.name).current_sessions

        started = self.clock()
        try:
            waited = self._wait(sessions, lambda n: not n, self.timeouts.drain, f"{instance.name} sessions to drain",
                                runtime_probe=True)
            note = f"sessions 0 after {waited.elapsed:.2f}s"
        except WaitTimeout as exc:
            note = f"drain timeout, going on: {exc}"
        self.runtime.set_state(self.pool, instance.name, "maint")
        outcome.state = "MAINT"
        outcome.phases["drain"] = round(self.clock() - started, 3)
        self._event("maint", instance.name, seconds=outcome.phases["drain"])
        self._say(instance.name, "drain", outcome.phases["drain"], note + "; maint")

    def _health_detail(self, waited):
        try:
            version = json.loads(waited.value[1]).get("version", "?")
        except (ValueError, AttributeError):
            version = "?"
        return f"{waited.value[0]} version={version}"

    def _bring_back(self, instance, outcome, expected: str | None, restart: bool = True, runtime=None, soaking=None):
        """Restart, prove the main process runs ``expected`` (identity), health 200, ready, then the soak:
        health must stay 200 (and the process the same binary) for ``soak`` seconds while HAProxy
        takes it back. A failure raises; the caller rolls back. ``runtime``: the balancers to put it
        back through (default: every one); ``soaking()`` is called as the soak starts."""
        runtime = runtime or self.runtime
        if restart:
            self._timed(outcome, "restart", instance.restart)
            self._event("restarted", instance.name, to=expected)
        if expected and expected != "none":
            self._timed(outcome, "identity", lambda: self._wait(
                instance.running_sha256, lambda sha: sha == expected, self.timeouts.health,
                f"{instance.name}'s main process to run sha256 {expected[:12]}"),
                lambda w: f"/proc/MainPID/exe sha256 {w.value[:12]}")
        self._timed(outcome, "health", lambda: self._wait(
            instance.health, lambda v: v[0] == "200", self.timeouts.health,
            f"{instance.name} {instance.settings.health_path} to answer 200"), self._health_detail)
        # Our gates just proved it healthy: no need to wait for `rise` checks (its checks keep running).
        runtime.set_state(self.pool, instance.name, "ready", health="up")
        outcome.state = "ready"
        self._event("ready", instance.name, sha256=expected)
        up = False  # HAProxy reported it UP inside the soak's last nap: no wait for UP after the soak
        if soaking is not None:
            soaking()
        if self.timeouts.soak > 0:
            started = self.clock()
            step = max(self.timeouts.interval, self.timeouts.soak_interval)

            first_pid = []

            def soak_probe():
                # The identity gate proved the main process runs the target; a crash that systemd
                # restarts shows as another main PID.
                pid, code = instance.soak_probe()
                if code in ("", "000"):
                    # No answer at all (curl's 000: refused or timed out) is seen on a loaded machine from
                    # a healthy instance: asked once more before it is a crash. Any answer but 200 fails at once.
                    pid, code = instance.soak_probe()
                first_pid[:] = first_pid or [pid]
                if code != "200":
                    return f"health {code or 'no answer'}"
                if pid != first_pid[0]:
                    return f"main process changed (pid {first_pid[0]} -> {pid})"
                return None

            failure = soak_probe()
            while not failure and self.clock() - started < self.timeouts.soak:
                # The wait for UP overlaps the soak: HAProxy is asked in the naps, until it says UP and
                # once more in the last one (UP then still holds within one nap of the soak's end).
                if not up or self.timeouts.soak - (self.clock() - started) <= step:
                    up = self._is_up(runtime, instance.name)
                # The last nap ends at the soak's end, then one last probe: the soak lasts what it says.
                remaining = self.timeouts.soak - (self.clock() - started)
                if remaining > 0:
                    self._nap(min(step, remaining))
                failure = soak_probe()
            outcome.phases["soak"] = round(self.clock() - started, 3)
            if failure:  # the rollback path pulls it out of rotation first
                self._say(instance.name, "soak", outcome.phases["soak"], f"FAILED: {failure}")
                raise DeployError(f"{instance.name}: crashed inside the {self.timeouts.soak:g}s soak ({failure})")
            self._say(instance.name, "soak", outcome.phases["soak"], "health stayed 200")
        if up:
            outcome.phases["haproxy"] = 0.0
            self._say(instance.name, "haproxy", 0, "UP (seen during the soak's last nap)")
        else:
            self._timed(outcome, "haproxy", lambda: self._wait(
                lambda: runtime.server(self.pool, instance.name), lambda s: s.is_up, self.timeouts.haproxy_up,
                f"HAProxy to report {self.pool}/{instance.name} UP", runtime_probe=True), lambda w: w.value.status)
        outcome.state = "ready (UP)"

    def _is_up(self, runtime, name) -> bool:
        try:
            return runtime.server(self.pool, name).is_up
        except RuntimeAPIError:  # not answered now: the wait after the soak decides, with its grace
            return False

    def _through(self, outcome):
        """The balancers that answer now; when some do not, the outcome says so (re-run once they do)."""
        runtime = self._answering()
        if runtime is not self.runtime:
            missing = [name for name in self.runtime.name.split(",") if name not in runtime.name.split(",")]
            outcome.detail += (f"; put back through {runtime.name} only: {', '.join(missing)} does not answer "
                               "(its state of this server is whatever it had); re-run once it answers")
        return runtime

    def _recover(self, instance, outcome, error, restore, expected):
        """After a failure on an instance: out of rotation at once (maint, no drain wait: it may be in
        rotation already), then the previous binary back through the same gates, through the
        balancers that answer."""
        self._worker_state()["recovering"] = True  # a stop of the rollout does not interrupt this
        if not isinstance(error, Stopped):
            self._count_failure(instance.name)
        self._say(instance.name, "FAILED", 0, str(error))
        outcome.detail = str(error)
        try:
            runtime = self._through(outcome)
            runtime.set_state(self.pool, instance.name, "maint")
            outcome.state = "MAINT"
            restore()
            self._bring_back(instance, outcome, expected, runtime=runtime)
            outcome.status = "rolled-back"
            self._event("rolled-back", instance.name, to=expected, outcome="rolled-back", detail=outcome.detail)
            where = "" if runtime is self.runtime else f" on {runtime.name}"
            self._say(instance.name, "rolled-back", 0, f"previous binary is live and UP again{where}")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report whatever broke the recovery, with the instance's name
            outcome.status = "failed"
            outcome.detail += f"; recovery failed too: {exc}"
            self._event("failed", instance.name, outcome="failed", detail=outcome.detail)
            self._say(instance.name, "FAILED", 0, f"recovery failed: {exc}; left {outcome.state or 'as is'}")

    def _give_back(self, instance, outcome, error, taken_out):
        """A failure before the binary was touched: put the server back in service, restart nothing."""
        self._worker_state()["recovering"] = True
        if not isinstance(error, Stopped):
            self._count_failure(instance.name)
        outcome.status = "failed"
        outcome.detail = str(error)
        self._say(instance.name, "FAILED", 0, str(error))
        if taken_out:
            try:
                self._through(outcome).set_state(self.pool, instance.name, "ready")
                outcome.state = "ready"
            except Exception as exc:
                outcome.detail += f"; could not return it to ready: {exc}"
                self._say(instance.name, "FAILED", 0, f"still {outcome.state}: {exc}")
        self._event("failed", instance.name, outcome="failed", detail=outcome.detail)

    def _make_safe(self, instance, outcome, target, old):
        """After an interrupt: finish the gates if the target is on disk, else put the old binary back
        and return the instance to ready. Bounded by the same timeouts."""
        facts = instance.facts()
        if target and facts["sha256"] == target:
            try:
                self._bring_back(instance, outcome, target, restart=facts["running_sha256"] != target)
                outcome.detail = "interrupted; finished its gates on the new binary"
                return
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                self._say(instance.name, "FAILED", 0, f"finishing after the interrupt: {exc}")
                if old and old != "none" and facts["prev_sha256"] == old:
                    instance.restore_prev()
                facts = instance.facts()
        restart = facts["running_sha256"] != facts["sha256"] or facts["unit"] != "active"
        self._bring_back(instance, outcome, facts["sha256"], restart=restart)
        outcome.detail = "interrupted; back on its previous binary"

    def _one(self, instance, artifact, facts, force, soaking=None) -> InstanceOutcome:
        """The per-instance sequence: its staged upload, take out, install or swap, bring back; every
        failure rolls back. An interrupt or a stop of the rollout before it is taken out leaves it
        untouched (raised, no outcome); ``soaking()`` is called as its soak starts."""
        self._worker_state().clear()
        started = self.clock()
        current = facts[instance.name]
        target = artifact.sha256 if artifact is not None else current["prev_sha256"]
        old = current["sha256"]
        on_disk = artifact is not None and current["sha256"] == artifact.sha256  # an earlier run got this far
        if on_disk:
            old = current["prev_sha256"]
        staging_error = None
        self._checkpoint()
        if artifact is not None and not on_disk:
            # Uploaded and verified while it still serves (usually while the instance before it soaked);
            # an interrupt or a stop while waiting for it leaves the instance untouched.
            try:
                uploaded = self.staging.wait(instance)
            except Exception as exc:  # noqa: BLE001 - any upload failure stops before taking it out
                staging_error = exc
            self._checkpoint()
        outcome = InstanceOutcome(instance.name, "changed", target=target, old=old)
        self.outcomes.append(outcome)
        if staging_error is not None:
            self._give_back(instance, outcome, DeployError(f"{instance.name}: upload failed: {staging_error}"),
                            taken_out=False)
            outcome.state, outcome.seconds = "as before", round(self.clock() - started, 3)
            return outcome
        if artifact is not None and not on_disk:
            outcome.phases["stage"] = round(self.clock() - started, 3)
            self._say(instance.name, "stage", outcome.phases["stage"],
                      f"{artifact.size / 1e6:.1f} MB uploaded, sha256 {artifact.sha256[:12]} verified "
                      f"({uploaded:.2f}s, while in service)")
        taken_out = swapped = False
        try:
            try:
                self._take_out(instance, outcome, force)
                taken_out = True
                if on_disk:
                    self._say(instance.name, "converge", 0, "target binary already on disk; restart and gates")
                elif artifact is not None:
                    self._timed(outcome, "install", instance.install, "staged binary renamed into place")
                    self.staging.installed.add(instance.name)
                    self._event("pushed", instance.name, **{"from": old, "to": target})
                else:
                    self._timed(outcome, "swap", instance.swap_with_prev, "previous binary is live")
                    self._event("swapped", instance.name, **{"from": old, "to": target})
                swapped = True
                self._bring_back(instance, outcome, target, soaking=soaking)
                self._event("done", instance.name, **{"from": old, "to": target}, outcome="changed",
                            seconds=round(self.clock() - started, 3))
            except KeyboardInterrupt as interrupt:
                self._interrupted(instance, outcome, target, old, interrupt)
                raise
            except Exception as exc:  # every failure is the rollback path
                if swapped:
                    if artifact is None:
                        restore = instance.swap_with_prev
                    elif old == "none":
                        restore = lambda: None  # first deploy: there is nothing to go back to
                    else:
                        restore = instance.restore_prev
                    self._recover(instance, outcome, exc, restore, None if old == "none" else old)
                else:  # a failure (or a stop) inside the drain wait leaves it DRAIN: back to ready too
                    self._give_back(instance, outcome, exc, taken_out or outcome.state in ("DRAIN", "MAINT"))
        finally:
            outcome.seconds = round(self.clock() - started, 3)
        return outcome

    def _interrupted(self, instance, outcome, target, old, interrupt):
        """Make the current instance safe (bounded); a second interrupt stops at once."""
        outcome.status = "interrupted"
        self._worker_state()["recovering"] = True
        self._say(instance.name, "INTERRUPTED", 0, f"{interrupt or 'SIGINT'}: making it safe (interrupt again to stop at once)")
        try:
            self._make_safe(instance, outcome, target, old)
            self._event("interrupted", instance.name, outcome="made safe", detail=outcome.detail)
        except KeyboardInterrupt:
            self.abandoned = True
            outcome.detail = "second interrupt: left as it was"
            self._event("interrupted", instance.name, outcome="abandoned")
        except Exception as exc:
            outcome.detail = f"interrupted; making it safe failed: {exc}"
            self._say(instance.name, "FAILED", 0, outcome.detail)

    abandoned = False

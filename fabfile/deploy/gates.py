"""Bringing one instance back into service through the gates: restart, identity (the main process runs
the expected bytes), health, ready + ``health up``, the soak, HAProxy's UP. A failure raises; the
instance's run (``instance_run.InstanceRun``) decides what to do about it."""

from __future__ import annotations

import json

from ..haproxy_runtime import RuntimeAPIError
from .artifact import DeployError


class Gates:
    """The gates of one instance, on the rollout's shared context."""

    def __init__(self, context, instance):
        self.ctx = context
        self.instance = instance

    def bring_back(self, outcome, expected: str | None, restart: bool = True, runtime=None, soaking=None):
        """Restart, prove the main process runs ``expected`` (identity), health 200, ready, then the soak:
        health must stay 200 (and the process the same binary) for ``soak`` seconds while HAProxy
        takes it back. ``runtime``: the balancers to put it back through (default: every one);
        ``soaking()`` is called as the soak starts."""
        ctx, instance = self.ctx, self.instance
        runtime = runtime or ctx.runtime
        if restart:
            ctx.timed(outcome, "restart", instance.restart)
            ctx.event("restarted", instance.name, to=expected)
        if expected and expected != "none":
            ctx.timed(outcome, "identity", lambda: self._identity(expected),
                      lambda w: f"/proc/MainPID/exe sha256 {w.value[0][:12]}")
        ctx.timed(outcome, "health", lambda: ctx.wait(
            instance.health, lambda v: v[0] == "200", ctx.timeouts.health,
            f"{instance.name} {instance.settings.health_path} to answer 200"), self._health_detail)
        # Our gates just proved it healthy: no need to wait for `rise` checks (its checks keep running).
        runtime.set_state(ctx.pool, instance.name, "ready", health="up")
        outcome.state = "ready"
        ctx.event("ready", instance.name, sha256=expected)
        if soaking is not None:
            soaking()
        up = self._soak(outcome, runtime) if ctx.timeouts.soak > 0 else False
        if up:  # HAProxy reported it UP inside the soak's last nap: no wait for UP after the soak
            outcome.phases["haproxy"] = 0.0
            ctx.say(instance.name, "haproxy", 0, "UP (seen during the soak's last nap)")
        else:
            ctx.timed(outcome, "haproxy", lambda: ctx.wait(
                lambda: runtime.server(ctx.pool, instance.name), lambda s: s.is_up, ctx.timeouts.haproxy_up,
                f"HAProxy to report {ctx.pool}/{instance.name} UP", runtime_probe=True), lambda w: w.value.status)
        outcome.state = "ready (UP)"

    def _identity(self, expected: str):
        """Wait until the main process runs ``expected``; a process that keeps dying (systemd restarted it
        since our restart) fails at once rather than after the health timeout."""
        ctx, instance = self.ctx, self.instance
        waited = ctx.wait(instance.identity, lambda seen: seen[0] == expected or seen[1] > 0, ctx.timeouts.health,
                          f"{instance.name}'s main process to run sha256 {expected[:12]}")
        sha, restarts = waited.value
        if sha != expected:
            raise DeployError(f"{instance.name}: its main process exited and systemd restarted it {restarts} time(s) "
                              f"within {waited.elapsed:.1f}s of the restart (a crash loop): sha256 {expected[:12]} "
                              f"does not stay up; see journalctl -u {instance.settings.unit}")
        return waited

    @staticmethod
    def _health_detail(waited):
        try:
            version = json.loads(waited.value[1]).get("version", "?")
        except (ValueError, AttributeError):
            version = "?"
        return f"{waited.value[0]} version={version}"

    def _soak(self, outcome, runtime) -> bool:
        """Health must stay 200 and the main PID the same for ``soak`` seconds; returns whether HAProxy said UP
        in the soak's last nap. A crash raises (the rollback path pulls it out of rotation first)."""
        ctx, instance = self.ctx, self.instance
        started = ctx.clock()
        step = max(ctx.timeouts.interval, ctx.timeouts.soak_interval)
        first_pid = []
        up = False

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
        while not failure and ctx.clock() - started < ctx.timeouts.soak:
            # The wait for UP overlaps the soak: HAProxy is asked in the naps, until it says UP and
            # once more in the last one (UP then still holds within one nap of the soak's end).
            if not up or ctx.timeouts.soak - (ctx.clock() - started) <= step:
                up = self._is_up(runtime)
            # The last nap ends at the soak's end, then one last probe: the soak lasts what it says.
            remaining = ctx.timeouts.soak - (ctx.clock() - started)
            if remaining > 0:
                ctx.nap(min(step, remaining))
            failure = soak_probe()
        outcome.phases["soak"] = round(ctx.clock() - started, 3)
        if failure:
            ctx.say(instance.name, "soak", outcome.phases["soak"], f"FAILED: {failure}")
            raise DeployError(f"{instance.name}: crashed inside the {ctx.timeouts.soak:g}s soak ({failure})")
        ctx.say(instance.name, "soak", outcome.phases["soak"], "health stayed 200")
        return up

    def _is_up(self, runtime) -> bool:
        try:
            return runtime.server(self.ctx.pool, self.instance.name).is_up
        except RuntimeAPIError:  # not answered now: the wait after the soak decides, with its grace
            return False

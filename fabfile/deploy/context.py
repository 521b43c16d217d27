"""What every part of one rollout shares, owned by ``Rollout`` and handed to each collaborator: the
runtime API, the pool and its floor, the output, the timeouts, the clock, the audit trail and the
``RolloutControl``; plus the small helpers they all use (a timed phase, a bounded wait, a line)."""

from __future__ import annotations

from dataclasses import dataclass

from ..polling import wait_until


@dataclass
class RolloutContext:
    runtime: object  # show_stat(), server(), set_state() (and answering() for a BalancerSet)
    pool: str
    floor: object  # capacity.CapacityFloor
    output: object
    timeouts: object  # instance.Timeouts
    clock: object
    sleep: object
    audit: object  # (event, instance=None, **fields)
    control: object  # control.RolloutControl
    staging: object = None  # staging.Staging of a deploy (a rollback swaps .prev)

    def say(self, name, phase, seconds, detail=""):
        self.output.line(f"{name:<16} {phase:<11} {seconds:6.2f}s  {detail}".rstrip())

    def nap(self, seconds):
        self.control.checkpoint()
        self.sleep(seconds)

    def wait(self, probe, done, timeout, what, runtime_probe=False):
        """``wait_until`` on the rollout's clock. A ``runtime_probe`` (HAProxy's runtime API) failing for
        ``runtime_grace`` seconds in a row ends the wait: that balancer is gone, not restarting."""
        grace = self.timeouts.runtime_grace if runtime_probe else None
        return wait_until(probe, timeout=timeout, interval=self.timeouts.interval, done=done, what=what,
                          clock=self.clock, sleep=self.nap, error_grace=grace)

    def timed(self, outcome, phase, action, detail=""):
        self.control.checkpoint()
        started = self.clock()
        value = action()
        seconds = self.clock() - started
        outcome.phases[phase] = round(seconds, 3)
        self.say(outcome.name, phase, seconds, detail(value) if callable(detail) else detail)
        return value

    def event(self, event, instance, **fields):
        try:
            self.audit(event, instance, **fields)
        except Exception as exc:  # the audit trail never breaks a rollout; say so once per event
            self.output.line(f"warning: audit line '{event}' not written: {exc}")

    def answering(self):
        """The balancers that answer now: the ones a recovery can still put the instance back through."""
        answering = getattr(self.runtime, "answering", None)
        return answering() if answering else self.runtime

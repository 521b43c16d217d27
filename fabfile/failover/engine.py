"""The one engine every failover gate runs on: steps, their outcomes, the timeline, the request samples
and the report's common part. ``test.failover`` (a backend dies) and ``test.lb-failover`` (the VIP
holder dies) are two configurations of it; a new gate is a third.

- ``StepEngine``: runs ``PlannedStep``s in order (``needs``: an earlier step that must have passed;
  ``abort_on_failure``: the rest is skipped), records one ``StepOutcome`` per step (the only step-result
  type), prints one line per step and keeps going after a failed check. ``step(name, action)`` runs one
  check on its own; an action returns a detail string or ``(detail, data)`` and raises ``StepFailed``.
- ``Timeline``: the clock marks of a run (``started``, ``stop_issued``, ``t0``, ...); every time in a
  report is seconds relative to ``t0`` (before any stop: relative to the start), via ``rel``.
- ``wait_for``: the one wait loop (``polling.wait_until``), returning the clock time the probe held.
- ``sample_record``: one request sample as every report and plot reads it.
- ``common_report``: the fields every gate's report starts with (passed, interrupted, steps, timeline,
  requests with the per-phase counts and the samples).

How a new gate plugs in (``test.reload``, ``test.host-failover``): write a class that owns its
collaborators (a stopper from ``stoppers.py``, a load from ``loadtest``, its own checks), give it a
``StepEngine`` and a ``Timeline``, build its plan as a list of ``PlannedStep(name, action, ...)``,
call ``engine.run_plan(plan)`` inside ``try/finally`` so its wind-down (bring back what it stopped)
always runs, mark ``t0`` on the timeline when it strikes, and build its report with
``common_report(...) | {its own fields}``. Its task, one module in ``tasks/test/``, only parses flags and wires
the objects; ``report.py``'s ``write_outputs`` writes the JSON report (masked) and the SVG.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..polling import WaitTimeout, wait_until


class StepFailed(Exception):
    """A check did not hold; the message says what was seen."""

    def __init__(self, detail: str, data: dict | None = None):
        super().__init__(detail)
        self.data = data or {}


@dataclass
class StepOutcome:
    name: str
    status: str  # pass | fail | skip
    seconds: float
    detail: str
    data: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_dict(self) -> dict:
        return asdict(self) | {"passed": self.passed}


@dataclass
class PlannedStep:
    name: str
    action: Callable[[], object]
    abort_on_failure: bool = False  # later steps make no sense without this one
    needs: str | None = None  # an earlier step that must have passed


class StepEngine:
    """Runs and records steps; ``steps`` is the list of outcomes in the order they ran."""

    def __init__(self, output, clock: Callable[[], float] = time.monotonic):
        self.output = output
        self.clock = clock
        self.steps: list = []

    def run_plan(self, plan: list) -> None:
        """Every planned step in order; an interrupt skips the rest and is raised again."""
        for index, planned in enumerate(plan):
            if planned.needs and not self.passed(planned.needs):
                self.record(planned.name, "skip", 0.0, f"needs '{planned.needs}' to pass")
                continue
            try:
                passed = self.step(planned.name, planned.action)
            except KeyboardInterrupt:
                self.skip(plan[index + 1:], "not run: interrupted")
                raise
            if not passed and planned.abort_on_failure:
                self.skip(plan[index + 1:], f"not run: '{planned.name}' failed")
                return

    def skip(self, planned_steps: list, reason: str) -> None:
        for planned in planned_steps:
            self.record(planned.name, "skip", 0.0, reason)

    def step(self, name: str, action: Callable) -> bool:
        """Run one check, print and record its outcome; True if it passed."""
        started = self.clock()
        try:
            result = action()
        except StepFailed as exc:
            self.record(name, "fail", self.clock() - started, str(exc), exc.data)
            return False
        except KeyboardInterrupt:
            self.record(name, "fail", self.clock() - started, "interrupted (Ctrl-C)")
            raise
        except Exception as exc:  # noqa: BLE001 - any surprise fails the step, and the wind-down still runs
            self.record(name, "fail", self.clock() - started, f"{type(exc).__name__}: {exc}")
            return False
        detail, data = result if isinstance(result, tuple) else (result, {})
        self.record(name, "pass", self.clock() - started, detail, data)
        return True

    def restore(self, name: str, action: Callable, still_out: str) -> bool:
        """The wind-down's step that brings back what the gate took out. Ctrl-C during it prints
        ``still_out`` (what may still be out, and the command that brings it back) and propagates."""
        try:
            return self.step(name, action)
        except KeyboardInterrupt:
            self.output.line(f"WARNING: interrupted again; {still_out}")
            raise

    def check(self, name: str, passed: bool, detail: str, started: float, data: dict | None = None) -> bool:
        """Record a check decided by the caller (``passed``), timed from ``started``."""
        self.record(name, "pass" if passed else "fail", self.clock() - started, detail, data)
        return bool(passed)

    def record(self, name, status, seconds, detail, data=None) -> StepOutcome:
        outcome = StepOutcome(name, status, round(seconds, 3), detail, data or {})
        self.steps.append(outcome)
        self.output.line(f"{status.upper():<4} {outcome.seconds:7.2f}s  {name:<28} {detail}".rstrip())
        return outcome

    def passed(self, name: str) -> bool:
        return any(step.name == name and step.passed for step in self.steps)

    @property
    def all_passed(self) -> bool:
        return bool(self.steps) and all(step.passed for step in self.steps)


class Timeline(dict):
    """Clock marks by name; ``rel(t)``: seconds after ``t0`` (or after the stop was issued, or the start)."""

    def rel(self, when: float | None) -> float | None:
        if when is None:
            return None
        origin = self.get("t0", self.get("stop_issued", self.get("started", 0.0)))
        return round(when - origin, 3)

    def between(self, start: str, end: str) -> float | None:
        if self.get(start) is not None and self.get(end) is not None:
            return round(self[end] - self[start], 3)
        return None

    def relative(self) -> dict:
        return {name: self.rel(when) for name, when in self.items()}


def wait_for(probe: Callable[[], bool], timeout: float, *, interval: float = 0.05, clock=time.monotonic,
             sleep=time.sleep, what: str = "condition") -> float | None:
    """The clock time at which ``probe()`` first held within ``timeout`` seconds, else None (bounded in
    time and in probes: ``polling.wait_until``)."""
    try:
        wait_until(probe, timeout=timeout, interval=interval, clock=clock, sleep=sleep, what=what)
    except WaitTimeout:
        return None
    return clock()


def sample_record(sample, rel: Callable) -> dict:
    """One request as the reports and plots read it; ``lag``: how late the engine sent it."""
    return {"t": rel(sample.t), "kind": sample.connection, "method": sample.method, "ok": not sample.failed,
            "outcome": sample.outcome, "status": sample.status, "instance": sample.instance,
            "seconds": round(sample.seconds, 4) if sample.seconds is not None else None, "error": sample.error,
            "lag": round(sample.lag, 4)}


def common_report(engine: StepEngine, timeline: Timeline, samples, phases: dict, *, interrupted: bool = False) -> dict:
    """What every gate's report holds: verdict, steps, timeline (relative to t0), requests and samples."""
    samples = sorted(samples, key=lambda sample: sample.t)
    return {
        "passed": not interrupted and engine.all_passed,
        "interrupted": interrupted,
        "steps": [step.to_dict() for step in engine.steps],
        "timeline": timeline.relative(),
        "requests": {"total": len(samples), "failed": sum(sample.failed for sample in samples), "by_phase": phases,
                     "samples": [sample_record(sample, timeline.rel) for sample in samples]},
    }

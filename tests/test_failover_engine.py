"""The one step engine every failover gate runs on: plans, outcomes, the t0-relative timeline, the wait."""

import io

import pytest

from fabfile.failover.engine import PlannedStep, StepEngine, StepFailed, Timeline, common_report, wait_for
from fabfile.loadtest.outcomes import Sample
from fabfile.output import Masker, Output
from fakes import Clock


def engine():
    stream = io.StringIO()
    return StepEngine(Output(Masker(), stream), Clock()), stream


def test_a_failed_abort_step_skips_the_rest_and_needs_skip_what_they_need():
    steps, stream = engine()

    def fails():
        raise StepFailed("pool not all UP", {"pool": "a DOWN"})

    steps.run_plan([PlannedStep("ok", lambda: "fine"), PlannedStep("optional", fails),
                    PlannedStep("dependent", lambda: "never", needs="optional"),
                    PlannedStep("gate", fails, abort_on_failure=True), PlannedStep("after", lambda: "never")])
    assert [(s.name, s.status) for s in steps.steps] == [
        ("ok", "pass"), ("optional", "fail"), ("dependent", "skip"), ("gate", "fail"), ("after", "skip")]
    assert steps.steps[1].data == {"pool": "a DOWN"} and not steps.all_passed
    assert "FAIL" in stream.getvalue() and "needs 'optional' to pass" in stream.getvalue()


def test_an_interrupt_skips_the_rest_and_is_raised_again():
    steps, _ = engine()

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        steps.run_plan([PlannedStep("a", interrupted), PlannedStep("b", lambda: "x")])
    assert [(s.name, s.status) for s in steps.steps] == [("a", "fail"), ("b", "skip")]


def test_report_times_are_relative_to_t0():
    steps, _ = engine()
    steps.record("kill", "pass", 0.1, "done")
    marks = Timeline(started=100.0, stop_issued=104.0, t0=105.0, down=105.5)
    report = common_report(steps, marks, [Sample(t=104.5, outcome="ok", seconds=0.01)], {"before": {}})
    assert report["timeline"] == {"started": -5.0, "stop_issued": -1.0, "t0": 0.0, "down": 0.5}
    assert report["requests"]["samples"][0]["t"] == -0.5 and report["requests"]["samples"][0]["ok"]
    assert report["passed"] and report["steps"][0]["passed"]
    assert Timeline(started=1.0, stop_issued=3.0).rel(4.0) == 1.0  # before t0: relative to the stop


def test_wait_for_is_bounded_and_returns_when_it_held():
    clock = Clock()
    calls = []
    held = wait_for(lambda: calls.append(1) or len(calls) == 3, 5.0, interval=0.5, clock=clock, sleep=clock.sleep)
    assert held == 101.0 and len(calls) == 3
    assert wait_for(lambda: False, 2.0, interval=0.5, clock=clock, sleep=clock.sleep) is None

"""The report of ``test.failover``: the engine's common part (steps, timeline and samples relative to t0)
plus what this gate adds (the victim, its detect/recover times, HAProxy's transitions, the load's
counts, WebSocket and exporter results)."""

from __future__ import annotations

from collections import Counter

from ..loadtest.facade import phase_counts
from ..loadtest.keepalive import kind_counts
from .checks import WS_STEPS
from .engine import common_report


def failover_report(test) -> dict:
    """Everything one ``FailoverTest`` run saw, as plain JSON-able data."""
    settings, marks, load = test.settings, test.marks, test.load.load
    samples = sorted(load.samples, key=lambda sample: sample.t) if load is not None else []
    phases = phase_counts(samples, test.load.phase_starts()) if samples else {}
    caught = test.load.unsafe_caught(samples)
    from_issue = marks.between("stop_issued", "down")
    report = common_report(test.engine, marks, samples, phases, interrupted=test.interrupted)
    requests = report["requests"]
    requests.update({
        "enabled": load is not None,
        "rate_per_second": getattr(load, "rate", None),
        "failed": requests["failed"] - len(caught),
        "timeouts": sum(sample.outcome == "timeout" for sample in samples),
        "non_200": sum(sample.outcome == "status" for sample in samples),
        "by_outcome": dict(Counter(sample.outcome for sample in samples)),
        "by_method": {method: dict(Counter(s.outcome for s in samples if s.method == method))
                      for method in sorted({s.method for s in samples})},
        "by_kind": kind_counts(samples),
        "load": load.describe() if hasattr(load, "describe") else None,
        "post_id_prefix": getattr(load, "id_prefix", None),
        "unsafe_caught_in_failure_window": [
            {"t": marks.rel(s.t), "id": s.key, "outcome": s.outcome, "error": s.error} for s in caught],
    })
    ws_outcomes = {step.name: {"status": step.status, "passed": step.passed, "detail": step.detail}
                   for step in test.engine.steps if step.name in WS_STEPS}
    return report | {
        "victim": settings.victim,
        "pool": settings.pool,
        "others": test.pool.others,
        "stop_method": test.stopper.method,
        "stop_command": test.stopper.describe("stop"),
        "detect_down_seconds": marks.between("t0", "down"),
        "detect_down_from_stop_issued_seconds": from_issue,
        "down_target_seconds": settings.down_target,
        "down_target_met": from_issue is not None and from_issue <= settings.down_target,
        "recover_up_seconds": marks.between("start_issued", "up"),
        "transitions": {label: [{"t": marks.rel(t), "status": status} for t, status in changes]
                        for label, changes in test.pool.transitions.items()},
        "requests": requests,
        "websocket": {"enabled": bool(settings.websocket and test.websocket.ws_connect), "checks": ws_outcomes,
                      "seen": test.websocket.results},
        "metrics": {"enabled": test.metrics.metrics is not None, "url": getattr(test.metrics.metrics, "url", None),
                    "seen": test.metrics.seen},
        "final_pool": test.pool.final_pool,
        "alert": test.alerts.report() if test.alerts is not None else None,
    }


def write_outputs(result: dict, report: str | None, plot: str | None, output, write_svg) -> None:
    """A gate's outputs: the JSON report (private, masked by ``output``'s masker) and its SVG (``write_svg``)."""
    from ..output import write_report

    if report:
        write_report(report, result, output.masker)
        output.line(f"report: {report}")
    if plot:
        write_svg(plot, result)
        output.line(f"plot: {plot}")

"""The failover run as plain JSON-able data (times in seconds after t0), and the final pool line."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

from ..loadtest.facade import phase_counts
from ..loadtest.keepalive import kind_counts
from .checks import WS_STEPS


class Reporting:
    """Mixin of FailoverTest: turns its marks, steps and samples into the report."""

    def _show_final_pool(self) -> None:
        try:
            rows = self._pool_rows()
        except Exception as exc:  # noqa: BLE001 - the report matters more than this line
            self.output.line(f"final {self.settings.pool}: cannot read HAProxy state: {exc}")
            return
        self.final_pool = [{"server": s.server, "status": s.status, "last_check": s.last_check} for s in rows]
        self.output.line(f"final {self.settings.pool}: " + ", ".join(
            f"{s.server} {s.status} ({s.last_check or '-'})" for s in rows))

    @property
    def passed(self) -> bool:
        return not self.interrupted and bool(self.steps) and all(step.passed for step in self.steps)

    def _seconds_between(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return round(self.marks[end] - self.marks[start], 3)
        return None

    def report(self) -> dict:
        """Everything the run saw, as plain JSON-able data (times in seconds after t0)."""
        samples = sorted(self.load.samples, key=lambda sample: sample.t) if self.load is not None else []
        phases = phase_counts(samples, self._phase_starts()) if samples else {}
        from_issue = self._seconds_between("stop_issued", "down")
        caught = self.unsafe_caught(samples)
        return {
            "passed": self.passed,
            "interrupted": self.interrupted,
            "victim": self.settings.victim,
            "pool": self.settings.pool,
            "others": self.others,
            "stop_method": self.stopper.method,
            "stop_command": self.stopper.describe("stop"),
            "steps": [asdict(step) | {"passed": step.passed} for step in self.steps],
            "detect_down_seconds": self._seconds_between("t0", "down"),
            "detect_down_from_stop_issued_seconds": from_issue,
            "down_target_seconds": self.settings.down_target,
            "down_target_met": from_issue is not None and from_issue <= self.settings.down_target,
            "recover_up_seconds": self._seconds_between("start_issued", "up"),
            "timeline": {name: self._rel(when) for name, when in self.marks.items()},
            "transitions": {label: [{"t": self._rel(t), "status": status} for t, status in changes]
                            for label, changes in self.transitions.items()},
            "requests": {
                "enabled": self.load is not None,
                "rate_per_second": getattr(self.load, "rate", None),
                "total": len(samples),
                "failed": sum(sample.failed for sample in samples) - len(caught),
                "timeouts": sum(sample.outcome == "timeout" for sample in samples),
                "non_200": sum(sample.outcome == "status" for sample in samples),
                "by_phase": phases,
                "by_outcome": dict(Counter(sample.outcome for sample in samples)),
                "by_method": {method: dict(Counter(s.outcome for s in samples if s.method == method))
                              for method in sorted({s.method for s in samples})},
                "by_kind": kind_counts(samples),
                "load": self.load.describe() if hasattr(self.load, "describe") else None,
                "post_id_prefix": getattr(self.load, "id_prefix", None),
                "unsafe_caught_in_failure_window": [
                    {"t": self._rel(s.t), "id": s.key, "outcome": s.outcome, "error": s.error}
                    for s in caught],
                "samples": [self._sample_report(sample) for sample in samples],
            },
            "websocket": self._websocket_report(),
            "metrics": {"enabled": self.metrics is not None, "url": getattr(self.metrics, "url", None),
                        "seen": self._metrics_seen},
            "final_pool": self.final_pool,
            "alert": self.alerts.report() if self.alerts is not None else None,
        }

    def _websocket_report(self) -> dict:
        outcomes = {step.name: {"status": step.status, "passed": step.passed, "detail": step.detail}
                    for step in self.steps if step.name in WS_STEPS}
        return {"enabled": bool(self.settings.websocket and self.ws_connect), "checks": outcomes,
                "seen": self._ws_results}

    def _sample_report(self, sample) -> dict:
        """One request as the plot and the JSON consumers read it; ``lag``: how late the engine sent it."""
        return {"t": self._rel(sample.t), "kind": sample.connection, "method": sample.method,
                "outcome": sample.outcome, "status": sample.status,
                "instance": sample.instance, "seconds": round(sample.seconds, 4), "error": sample.error,
                "lag": round(sample.lag, 4)}

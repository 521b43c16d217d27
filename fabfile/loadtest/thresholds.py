"""Pass/fail thresholds in the style of k6: ``p99<50ms``, ``p90<=20ms``, ``errors<0.1%``, ``rate>=100``.

Grammar (spaces ignored; several thresholds may be joined with commas)::

    threshold := [scenario ":"] metric op number [unit]
    scenario  := api | hls | ws                 (default: every scenario of the run)
    metric    := p50 | p90 | p99 | p99.9 | max | mean      latency; unit ms (default), s or us
               | errors                                    error share; "%" or a fraction 0..1
               | rate                                      ok answers per second; unit "/s" optional
               | p99_ratio | rate_ratio                    against --baseline (a plain number)
    op        := "<" | "<=" | ">" | ">="
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from . import SCENARIOS, LoadTestError

LATENCY_METRICS = ("p50", "p90", "p99", "p99.9", "max", "mean")
RATIO_METRICS = ("p99_ratio", "rate_ratio")
METRICS = LATENCY_METRICS + ("errors", "rate") + RATIO_METRICS
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
LATENCY_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 0.001}  # to milliseconds
_SHAPE = re.compile(r"^(?:(?P<scenario>[a-z]+):)?(?P<metric>[a-z0-9_.]+?)(?P<op><=|>=|<|>)"
                    r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[a-z%/]*)$")
EXAMPLE = "expected [SCENARIO:]METRIC OP NUMBER[UNIT], e.g. p99<50ms, p90<=20ms, errors<0.1%, rate>=100"


@dataclass(frozen=True)
class Threshold:
    text: str
    scenario: str | None
    metric: str
    op: str
    limit: float  # milliseconds for latency, a fraction for errors, per second for rate

    def holds(self, observed: float) -> bool:
        return OPERATORS[self.op](observed, self.limit)


def parse_one(text: str) -> Threshold:
    """One threshold; LoadTestError (one line) when it does not parse."""
    compact = re.sub(r"\s+", "", text).lower()
    match = _SHAPE.match(compact)
    if not match:
        raise LoadTestError(f"threshold {text!r}: {EXAMPLE}")
    scenario, metric, unit = match["scenario"], match["metric"], match["unit"]
    number = float(match["number"])
    if scenario is not None and scenario not in SCENARIOS:
        raise LoadTestError(f"threshold {text!r}: scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    if metric not in METRICS:
        raise LoadTestError(f"threshold {text!r}: metric {metric!r} is not one of {', '.join(METRICS)}")
    if metric in LATENCY_METRICS:
        if unit not in LATENCY_UNITS:
            raise LoadTestError(f"threshold {text!r}: latency unit {unit!r} is not ms, s or us")
        limit = number * LATENCY_UNITS[unit]
    elif metric == "errors":
        if unit not in ("", "%"):
            raise LoadTestError(f"threshold {text!r}: errors take a % or a fraction, not {unit!r}")
        limit = number / 100 if unit == "%" else number
        if limit > 1:
            raise LoadTestError(f"threshold {text!r}: an error share above 100% never binds")
    elif metric == "rate":
        if unit not in ("", "/s", "rps"):
            raise LoadTestError(f"threshold {text!r}: rate takes no unit but /s, not {unit!r}")
        limit = number
    else:
        if unit:
            raise LoadTestError(f"threshold {text!r}: {metric} is a plain ratio, not {unit!r}")
        limit = number
    return Threshold(text.strip(), scenario, metric, match["op"], limit)


def parse_all(texts) -> list:
    """Every threshold of ``texts`` (each may hold several, comma-separated)."""
    if isinstance(texts, str):
        texts = [texts]
    return [parse_one(part) for text in texts or () for part in str(text).split(",") if part.strip()]


@dataclass
class Verdict:
    threshold: Threshold
    scenario: str
    observed: float | None
    passed: bool

    def line(self) -> str:
        shown = "no data" if self.observed is None else _format(self.threshold.metric, self.observed)
        return f"{'PASS' if self.passed else 'FAIL'} {self.scenario}: {self.threshold.text} (observed {shown})"

    def to_dict(self) -> dict:
        return {"threshold": self.threshold.text, "scenario": self.scenario, "observed": self.observed,
                "passed": self.passed}


def _format(metric: str, value: float) -> str:
    if metric in LATENCY_METRICS:
        return f"{value:.2f} ms"
    if metric == "errors":
        return f"{value * 100:.3f}%"
    if metric == "rate":
        return f"{value:.1f}/s"
    return f"{value:.3f}"


def observed_value(metric: str, summary: dict, comparison: dict | None) -> float | None:
    """The number a threshold on ``metric`` is judged by, from a scenario's report section."""
    if metric in LATENCY_METRICS:
        return summary["latency_ms"].get(metric)
    if metric == "errors":
        return summary["error_rate"]
    if metric == "rate":
        return summary["throughput_rps"]
    return (comparison or {}).get(metric)


def evaluate(thresholds: list, scenarios: dict, comparisons: dict | None = None) -> list:
    """A Verdict per threshold and scenario it applies to; a threshold with no data fails."""
    verdicts = []
    for threshold in thresholds:
        names = [threshold.scenario] if threshold.scenario else list(scenarios)
        for name in names:
            if name not in scenarios:
                verdicts.append(Verdict(threshold, name, None, False))
                continue
            observed = observed_value(threshold.metric, scenarios[name], (comparisons or {}).get(name))
            verdicts.append(Verdict(threshold, name, observed, observed is not None and threshold.holds(observed)))
    return verdicts


def needs_baseline(thresholds: list) -> bool:
    return any(t.metric in RATIO_METRICS for t in thresholds)

"""Comparison with an earlier report: p99 and throughput ratios per scenario.

A ratio is this run over the baseline: ``p99_ratio`` 1.30 means p99 is 30 % worse,
``rate_ratio`` 0.90 means 10 % less throughput. A file that is not a load report
of this version is refused with one line (comparing other shapes would be noise).
"""

from __future__ import annotations

import json

from . import REPORT_KIND, REPORT_VERSION, LoadTestError


def load_baseline(path: str) -> dict:
    """The baseline report at ``path``; LoadTestError (one line) when it cannot serve as one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise LoadTestError(f"baseline {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise LoadTestError(f"baseline {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != REPORT_KIND:
        raise LoadTestError(f"baseline {path}: not a load report (no \"kind\": \"{REPORT_KIND}\")")
    if data.get("version") != REPORT_VERSION:
        raise LoadTestError(f"baseline {path}: report version {data.get('version')!r}, this tool reads {REPORT_VERSION}")
    if not isinstance(data.get("scenarios"), dict):
        raise LoadTestError(f"baseline {path}: no \"scenarios\" section")
    return data


def _ratio(now, before) -> float | None:
    if now is None or not before:
        return None
    return round(now / before, 3)


def compare(scenarios: dict, baseline: dict) -> dict:
    """Per scenario present in both: the two p99s and throughputs and their ratios."""
    comparisons = {}
    for name, summary in scenarios.items():
        earlier = baseline["scenarios"].get(name)
        if not isinstance(earlier, dict):
            continue
        try:
            before_p99, before_rate = earlier["latency_ms"]["p99"], earlier["throughput_rps"]
        except (KeyError, TypeError):
            continue
        now_p99, now_rate = summary["latency_ms"]["p99"], summary["throughput_rps"]
        comparisons[name] = {
            "baseline_p99_ms": before_p99, "p99_ms": now_p99, "p99_ratio": _ratio(now_p99, before_p99),
            "baseline_rate": before_rate, "rate": now_rate, "rate_ratio": _ratio(now_rate, before_rate),
        }
    return comparisons


def comparison_lines(comparisons: dict) -> list:
    """One line per compared scenario."""
    lines = []
    for name, c in comparisons.items():
        p99 = f"p99 {c['p99_ms']} ms vs {c['baseline_p99_ms']} ms (x{c['p99_ratio']})"
        rate = f"rate {c['rate']}/s vs {c['baseline_rate']}/s (x{c['rate_ratio']})"
        lines.append(f"baseline {name}: {p99}, {rate}")
    return lines

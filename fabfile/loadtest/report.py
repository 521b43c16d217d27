"""The JSON report: its finishing touches (thresholds, baseline), its summary lines, atomic writes.

Shape (``"kind": "veza-load-report", "version": 1``; a baseline must carry both)::

    mode            fixed | ramp
    started_at, target, settings
    scenarios       {api|hls|ws: requests, ok, errors{class: n}, error_rate, status_codes,
                     latency_ms{p50,p90,p99,p99.9,max,mean}, throughput_rps, by_instance,
                     lag_ms, timeline[{t, sent, ok, errors, completed, p50_ms, p99_ms}],
                     hdr_histogram (base64 HDR), + hls: tracks_per_streamer, track_consistent;
                     ws: sticky, per_session; api/hls: by_kind{new|keepalive: total, failed, retried,
                     by_method{GET: {outcome: n}}}, keepalive{share, connections, connections_opened}}
    ramp            (ramp mode) knee_rps, first_failing_rps, steps[{rate, p99_ms, errors, passed, reason,
                    generator_cpu_share, lag_p99_ms}]
    generator       cpu_seconds, cpu_share, lag_p99_ms, ok, notes
    haproxy         available, deltas{"pool/server": {wretr, wredis, econ, eresp, ...}}, retries, redispatches
    reached         some request got a 2xx/3xx answer
    thresholds      [{threshold, scenario, observed, passed}]
    baseline        {scenario: {p99_ratio, rate_ratio, ...}} (with --baseline)
    passed          every threshold held (and the target was reached)
"""

from __future__ import annotations


from .baseline import compare
from .keepalive import kind_line
from .thresholds import evaluate


def finish(report: dict, thresholds: list, baseline: dict | None = None) -> list:
    """Add the baseline comparison and threshold verdicts to ``report``; return the verdicts."""
    comparisons = compare(report["scenarios"], baseline) if baseline is not None else None
    if comparisons is not None:
        report["baseline"] = comparisons
    verdicts = evaluate(thresholds, report["scenarios"], comparisons)
    report["thresholds"] = [verdict.to_dict() for verdict in verdicts]
    report["passed"] = report["reached"] and all(verdict.passed for verdict in verdicts)
    return verdicts


def summary_lines(report: dict) -> list:
    """What the task prints for a run: per scenario, then consistency checks, generator, HAProxy."""
    lines = []
    for name, s in report["scenarios"].items():
        latency = s["latency_ms"]
        shown = ", ".join(f"{key} {latency[key]:.2f}" for key in ("p50", "p90", "p99", "p99.9", "max")
                          if latency[key] is not None) or "no answers"
        errors = ", ".join(f"{kind} {count}" for kind, count in s["errors"].items()) or "none"
        split = ", ".join(f"{who} {count}" for who, count in s["by_instance"].items()) or "-"
        lines.append(f"{name}: {s['requests']} requests, {s['throughput_rps']:.1f} ok/s; latency ms {shown}")
        lines.append(f"{name}: errors {errors} ({s['error_rate'] * 100:.3f}%); served by {split}")
        if "by_kind" in s:
            opened = s["keepalive"]["connections_opened"]
            lines.append(f"{name}: by client kind: {kind_line(s['by_kind'])}; "
                         f"{s['keepalive']['connections']} keep-alive connections, {opened} opened")
        if "track_consistent" in s:
            state = "each track on one streamer" if s["track_consistent"] else f"MOVED: {s['track_violations']}"
            lines.append(f"hls: {s['tracks_seen']} tracks, tracks per streamer {s['tracks_per_streamer']}; {state}")
        if "sticky" in s:
            lines.append(f"ws: {s['sticky_sessions']}/{s['sessions']} sessions sticky to their pinned backend")
    if "ramp" in report:
        ramp = report["ramp"]
        steps = " ".join(f"{step['rate']:g}{'✓' if step['passed'] else '✗'}" for step in ramp["steps"])
        lines.append(f"ramp: knee {ramp['knee_rps']} req/s (first failing {ramp['first_failing_rps']}); steps {steps}")
        lines.append("ramp: generator CPU per step " + " ".join(
            f"{step['rate']:g}:{step['generator_cpu_share']:.0%}" for step in ramp["steps"]))
        failed = [step for step in ramp["steps"] if not step["passed"]]
        if failed:
            lines.append(f"ramp: stopped at {failed[0]['rate']:g} req/s: {failed[0]['reason']}")
    generator = report["generator"]
    lines.append(f"generator: {generator['cpu_seconds']:.2f}s CPU over {generator['wall_seconds']:.2f}s "
                 f"({generator['cpu_share']:.0%} of a core), send lag p99 {generator['lag_p99_ms']} ms"
                 + ("" if generator["ok"] else f"; WARNING: {'; '.join(generator['notes'])}"))
    haproxy = report["haproxy"]
    if haproxy["available"]:
        lines.append(f"haproxy: {haproxy['retries']} retries, {haproxy['redispatches']} redispatches during the run")
    else:
        lines.append(f"haproxy: counters not read ({haproxy['note']})")
    return lines


def write_report(path: str, report: dict) -> None:
    """The one report writer (``output.write_report``: private, masked)."""
    from ..output import Masker, write_report as write_masked

    write_masked(path, report, Masker())


def write_svg(path: str, report: dict) -> None:
    from .svg import render_svg

    from ..files import write_atomic

    write_atomic(path, render_svg(report))

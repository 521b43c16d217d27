"""One SVG of a load run over time (hand-written, like fabfile/plot.py): three panels sharing the time axis.

Top: p50 (dashed) and p99 (solid) latency of the requests due in each second.
Middle: answers completed per second, with the target rate as a grey line.
Bottom: failed requests per second (by intended send time).
One colour per scenario.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape
from ..svg import nice_step, text

WIDTH, LEFT, RIGHT = 960, 90, 130
PANEL_HEIGHT, PANEL_GAP, TOP = 150, 45, 80
GRID, TEXT, MARK = "#dddddd", "#222222", "#777777"
COLORS = {"api": "#1f77b4", "hls": "#ff7f0e", "ws": "#9467bd"}
MAX_TICKS = 100


class Panel:
    """One panel: a y scale from 0 to a nice maximum over the values it shows."""

    def __init__(self, top: float, label: str, unit: str, values, x_of):
        self.top, self.bottom = top, top + PANEL_HEIGHT
        highest = max([v for v in values if v is not None] + [1e-9])
        self.step = nice_step(highest, 5)
        self.max = math.ceil(highest / self.step) * self.step
        self.label, self.unit, self.x_of = label, unit, x_of

    def y_of(self, value: float) -> float:
        return self.bottom - min(value, self.max) / self.max * PANEL_HEIGHT

    def axes(self) -> list:
        parts = [text(LEFT, self.top - 8, self.label, size=13, weight="bold")]
        for i in range(min(MAX_TICKS, round(self.max / self.step)) + 1):
            y = self.y_of(i * self.step)
            parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID}"/>')
            parts.append(text(LEFT - 6, y + 4, f"{i * self.step:g}{self.unit}", size=11, anchor="end"))
        return parts

    def line(self, points, color: str, *, dashed=False, width=1.8) -> str:
        """A polyline through (t, value) points; None values break nothing, they are skipped."""
        coords = " ".join(f"{self.x_of(t):.1f},{self.y_of(v):.1f}" for t, v in points if v is not None)
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        return f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>'


def render_svg(report: dict) -> str:
    """The SVG document for a load report (as written by ``engine.run_*`` and ``report.finish``)."""
    scenarios = report.get("scenarios", {})
    seconds = max([len(s.get("timeline", [])) for s in scenarios.values()] + [1])
    plot_right = WIDTH - RIGHT

    def x_of(t: float) -> float:
        return LEFT + t / seconds * (plot_right - LEFT)

    series = {name: [(row["t"] + 0.5, row) for row in s.get("timeline", [])] for name, s in scenarios.items()}
    rows = [row for points in series.values() for _, row in points]
    latency = Panel(TOP, "latency (p50 dashed, p99 solid)", " ms", [r["p99_ms"] for r in rows], x_of)
    targets = [s.get("target_rate") for s in scenarios.values()]
    rate = Panel(latency.bottom + PANEL_GAP, "achieved rate (answers/s; grey: target)", "/s",
                 [r["completed"] for r in rows] + targets, x_of)
    errors = Panel(rate.bottom + PANEL_GAP, "errors per second", "", [r["errors"] for r in rows] + [1], x_of)
    height = errors.bottom + 70
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
         f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">'),
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        text(LEFT, 24, _title(report), size=16, weight="bold"),
        text(LEFT, 44, _subtitle(report), size=13),
    ]
    for panel in (latency, rate, errors):
        parts += panel.axes()
    bar = (plot_right - LEFT) / seconds / max(1, len(series))
    for index, (name, points) in enumerate(series.items()):
        color = COLORS.get(name, MARK)
        parts.append(latency.line([(t, r["p50_ms"]) for t, r in points], color, dashed=True, width=1.2))
        parts.append(latency.line([(t, r["p99_ms"]) for t, r in points], color))
        parts.append(rate.line([(t, r["completed"]) for t, r in points], color))
        if scenarios[name].get("target_rate"):
            y = rate.y_of(scenarios[name]["target_rate"])
            parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" stroke="{MARK}" '
                         f'stroke-dasharray="2 2"/>')
        for t, row in points:
            if row["errors"]:
                top = errors.y_of(row["errors"])
                parts.append(f'<rect x="{x_of(t - 0.5) + index * bar:.1f}" y="{top:.1f}" width="{max(bar - 1, 1):.1f}" '
                             f'height="{errors.bottom - top:.1f}" fill="{color}"><title>{escape(name)} t={t - 0.5:g}s: '
                             f'{row["errors"]} errors</title></rect>')
        parts.append(text(plot_right + 10, TOP + 16 * (index + 1), name, size=12, color=color, weight="bold"))
    parts += _time_axis(errors.bottom, seconds, x_of)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _time_axis(y: float, seconds: int, x_of) -> list:
    parts = []
    step = nice_step(seconds, 10)
    for i in range(min(MAX_TICKS, int(seconds / step)) + 1):
        x = x_of(i * step)
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 5}" stroke="{MARK}"/>')
        parts.append(text(x, y + 18, f"{i * step:g}", size=11, anchor="middle"))
    parts.append(text((LEFT + WIDTH - RIGHT) / 2, y + 36, "seconds after the start (by intended send time)",
                       size=12, anchor="middle"))
    return parts


def _title(report: dict) -> str:
    verdict = {True: "PASSED", False: "FAILED"}.get(report.get("passed"), "")
    mode = "ramp (knee step)" if report.get("mode") == "ramp" else "fixed rate"
    return f"Load {verdict} · {mode} · {report.get('target', '?')}".replace("Load  ·", "Load ·")


def _subtitle(report: dict) -> str:
    parts = []
    for name, s in report.get("scenarios", {}).items():
        p99 = s.get("latency_ms", {}).get("p99")
        kinds = s.get("by_kind", {})
        failed = "/".join(f"{kind} {entry['failed']}" for kind, entry in kinds.items())
        parts.append(f"{name}: {s.get('throughput_rps', 0):.0f}/s, p99 {p99 if p99 is not None else '-'} ms, "
                     f"{s.get('error_rate', 0) * 100:.2f}% errors" + (f" (failed {failed})" if failed else ""))
    generator = report.get("generator", {})
    parts.append(f"generator {generator.get('cpu_share', 0):.0%} CPU")
    return " · ".join(parts)

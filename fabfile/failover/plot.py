"""One SVG picture of a failover run, for the incident channel (hand-written SVG, no plotting library).

Top panel: latency of every background request over time (green ok, red
failed; a timeout sits at the top edge; a dot is a new-connection request, a
square one on a kept-alive connection). Bottom panel: which backend answered
each request, one lane per instance plus a lane for failures. Vertical lines
mark t0 (stop), DOWN, start and UP; the down window is shaded.
"""

from __future__ import annotations

import math

from ..loadtest.keepalive import kind_line
from ..svg import nice_step, request_marker, text

WIDTH, HEIGHT = 960, 470
LEFT, RIGHT = 120, 20
TOP_PANEL = (110, 250)  # y range of the latency panel
LANE_PANEL_TOP = 295
LABEL_ROWS = 3  # event labels stack in up to this many rows above the panels
CHAR_WIDTH = 6.6  # approximate width of one 11px bold character, to keep labels apart
LANE_HEIGHT = 26
OK, FAILED, MARK, GRID, TEXT = "#2e9e44", "#d62728", "#444444", "#dddddd", "#222222"
MARKS = (("stop_issued", "stop issued"), ("t0", "t0 stopped"), ("down", "DOWN"), ("alert_fired", "alert fired"),
         ("start_issued", "start"), ("up", "UP"), ("alert_resolved", "alert resolved"))


def time_grid(x, start: float, end: float, top: float, bottom: float) -> list:
    """Vertical grid lines every nice step over [``start``, ``end``] seconds from ``top`` to ``bottom``,
    labelled under ``bottom`` (``x``: seconds -> pixels). The timelines of lb_plot, reload_plot, host_plot."""
    parts = []
    step = nice_step(end - start)
    tick = start - start % step
    for _ in range(200):  # bounded: nice_step gives about 8 ticks
        if tick > end:
            break
        if tick >= start:
            parts.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{bottom}" stroke="{GRID}"/>')
            parts.append(text(x(tick), bottom + 16, f"{tick:g}s", size=10, anchor="middle"))
        tick += step
    return parts


def latency_panel(samples: list, x, left: float, box: tuple) -> list:
    """Every request's latency in ``box`` (top y, bottom y): green ok, red failed at the top edge; a dot a
    new-connection request, a square a kept-alive one. The scale follows the slowest answered request."""
    top = max([s["seconds"] or 0 for s in samples if s["ok"]] + [0.01]) * 1.1

    def y(seconds):
        return box[1] - min(seconds, top) / top * (box[1] - box[0])

    parts = [text(left - 8, box[0] + 4, f"{top * 1000:.0f} ms", size=10, anchor="end"),
             text(left - 8, box[1], "0", size=10, anchor="end")]
    for s in samples:
        parts.append(request_marker(x(s["t"]), y(s["seconds"] or 0) if s["ok"] else box[0], OK if s["ok"] else FAILED,
                                    s.get("kind", "new"), size=2))
    return parts


def _title(report: dict) -> tuple:
    verdict = "PASSED" if report.get("passed") else ("INTERRUPTED" if report.get("interrupted") else "FAILED")
    requests = report.get("requests", {})
    detect, recover = report.get("detect_down_seconds"), report.get("recover_up_seconds")
    first = f"Failover {verdict}: {report.get('victim', '?')} stopped ({report.get('stop_method', '?')}) behind {report.get('pool', '?')}"
    from_issue = report.get("detect_down_from_stop_issued_seconds")
    parts = [f"DOWN {detect:.2f}s after t0 ({from_issue:.2f}s after the stop was issued)" if detect is not None
             else "DOWN not seen",
             f"UP {recover:.2f}s after start" if recover is not None else "UP not seen"]
    alert = report.get("alert") or {}
    if alert.get("fire_seconds") is not None:
        parts.append(f"{alert['alert']} fired {alert['fire_seconds']:.2f}s after DOWN (budget {alert['fire_budget_seconds']:g}s)")
    if requests.get("enabled"):
        parts.append(f"{requests.get('total', 0)} requests, {requests.get('failed', 0)} failed "
                     f"({requests.get('timeouts', 0)} timeouts)")
        if requests.get("by_kind"):
            parts.append(kind_line(requests["by_kind"]))
    return first, " · ".join(parts)


def render_svg(report: dict) -> str:
    """The SVG document for a failover report (as written by ``FailoverTest.report``)."""
    samples = report.get("requests", {}).get("samples", [])
    timeline = report.get("timeline", {})
    marks = [(timeline[key], label) for key, label in MARKS if timeline.get(key) is not None]
    times = [s["t"] for s in samples] + [t for t, _ in marks] + [timeline.get("load_stopped") or 0.0]
    start, end = min(times + [0.0]) - 0.5, max(times + [1.0]) + 0.5
    plot_right = WIDTH - RIGHT

    def x_of(t: float) -> float:
        return LEFT + (t - start) / (end - start) * (plot_right - LEFT)

    slowest_ms = max([s["seconds"] * 1000 for s in samples] + [10.0])
    step_ms = nice_step(slowest_ms, 4)
    max_ms = math.ceil(slowest_ms / step_ms) * step_ms  # the top gridline is at or above the slowest request
    top, bottom = TOP_PANEL

    def y_of(ms: float) -> float:
        return bottom - min(ms, max_ms) / max_ms * (bottom - top)

    instances = sorted({s["instance"] for s in samples if s.get("instance")})
    lanes = instances + ["failed"]
    lane_y = {name: LANE_PANEL_TOP + (i + 0.5) * LANE_HEIGHT for i, name in enumerate(lanes)}
    lanes_bottom = LANE_PANEL_TOP + len(lanes) * LANE_HEIGHT
    height = max(HEIGHT, lanes_bottom + 80)
    first, second = _title(report)
    parts = [
        (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
         f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">'),
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        text(LEFT, 24, first, size=16, weight="bold"),
        text(LEFT, 44, second, size=13),
    ]
    # The down window (DOWN .. UP, or to the end when UP was never seen).
    if timeline.get("down") is not None:
        shade_end = timeline.get("up") if timeline.get("up") is not None else end
        parts.append(f'<rect x="{x_of(timeline["down"]):.1f}" y="{top}" width="{x_of(shade_end) - x_of(timeline["down"]):.1f}" '
                     f'height="{lanes_bottom - top}" fill="{FAILED}" fill-opacity="0.06"/>')
    # Axes: latency gridlines, lane separators, time ticks.
    for i in range(round(max_ms / step_ms) + 1):
        y = y_of(i * step_ms)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(text(LEFT - 6, y + 4, f"{i * step_ms:g} ms", size=11, anchor="end"))
    parts.append(text(14, (top + bottom) / 2, "latency", size=12))
    for name, y in lane_y.items():
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(text(LEFT - 6, y + 4, name, size=11, anchor="end", color=FAILED if name == "failed" else TEXT))
    step_s = nice_step(end - start)
    tick = math.ceil(start / step_s) * step_s
    for _ in range(100):  # bounded: _nice_step gives about 8 ticks
        if tick > end:
            break
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{lanes_bottom}" x2="{x:.1f}" y2="{lanes_bottom + 5}" stroke="{MARK}"/>')
        parts.append(text(x, lanes_bottom + 18, f"{tick:g}", size=11, anchor="middle"))
        tick += step_s
    parts.append(text((LEFT + plot_right) / 2, lanes_bottom + 36, "seconds after t0 (the stop command returned)",
                       size=12, anchor="middle"))
    # One dot per request in each panel.
    for sample in samples:
        color = FAILED if sample["outcome"] != "ok" else OK
        x = x_of(sample["t"])
        kind = sample.get("kind", "new")
        parts.append(request_marker(x, y_of(sample["seconds"] * 1000), color, kind, tip=_describe(sample)))
        lane = "failed" if sample["outcome"] != "ok" or not sample.get("instance") else sample["instance"]
        parts.append(request_marker(x, lane_y[lane], color, kind))
    if not samples:
        parts.append(text((LEFT + plot_right) / 2, (top + bottom) / 2, "no background load in this run",
                           size=13, anchor="middle", color=MARK))
    # Event lines; each label goes to the lowest row where it does not run into the previous one.
    row_ends = [float("-inf")] * LABEL_ROWS
    for t, label in sorted(marks):
        x = x_of(t)
        caption = f"{label} {t:+.2f}s"
        row = next((r for r, end in enumerate(row_ends) if x > end), LABEL_ROWS - 1)
        row_ends[row] = x + 3 + len(caption) * CHAR_WIDTH + 6
        parts.append(f'<line x1="{x:.1f}" y1="{top - 8 - row * 13}" x2="{x:.1f}" y2="{lanes_bottom}" stroke="{MARK}" '
                     f'stroke-dasharray="4 3"/>')
        parts.append(text(x + 3, top - 10 - row * 13, caption, size=11, weight="bold"))
    parts.append(_legend(LEFT, lanes_bottom + 62))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _describe(sample: dict) -> str:
    """Hover text of one request's dot."""
    who = sample.get("instance") or sample.get("error") or ""
    status = sample.get("status") or ""
    return f"t={sample['t']:+.2f}s {sample['outcome']} {status} {who} {sample['seconds'] * 1000:.0f} ms"


def _legend(x: float, y: float) -> str:
    return "\n".join([
        f'<circle cx="{x + 4}" cy="{y - 4}" r="4" fill="{OK}"/>', text(x + 12, y, "HTTP 200", size=11),
        f'<circle cx="{x + 84}" cy="{y - 4}" r="4" fill="{FAILED}"/>',
        text(x + 92, y, "failed (non-200, timeout, connection error)", size=11),
        f'<rect x="{x + 360}" y="{y - 8}" width="8" height="8" fill="{FAILED}" fill-opacity="0.15"/>',
        text(x + 372, y, "victim DOWN in HAProxy", size=11),
        text(x + 525, y, "dot = one request on a new connection, square = on a kept-alive one", size=11,
             color=MARK),
    ])


def write_svg(path: str, report: dict) -> None:
    """Through a temporary file renamed over ``path``: a symlink planted there is replaced, not followed."""
    from ..output import write_private

    write_private(path, render_svg(report).encode("utf-8"))

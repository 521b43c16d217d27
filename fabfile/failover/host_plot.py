"""The SVG timeline of a test.host-failover run (hand-written SVG, as ``lb_plot.py``).

Top panel: latency of every request through the VIP (green ok, red failed at the top edge; dots
new-connection requests, squares kept-alive ones). Below: one lane per server on the host, coloured by
its state on the surviving balancer (green UP, red DOWN, amber in between), then one lane per balancer,
filled while it held the VIP. Vertical lines mark the strike (t0), all DOWN, the VIP on the survivor,
the start, the host back and all UP.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from ..loadtest.keepalive import kind_line
from ..svg import text
from .host_outage import is_down, is_up
from .plot import FAILED, MARK, OK, TEXT, latency_panel, time_grid

WIDTH, LEFT, RIGHT = 960, 190, 20
LATENCY = (80, 220)
LANES_TOP, LANE = 250, 30
BETWEEN = "#e0a020"
MARKS = (("t0", "t0"), ("all_down", "all DOWN"), ("vip_on_survivor", "VIP on survivor"),
         ("start_issued", "start"), ("host_back", "host back"), ("all_up", "all UP"))


def _color(status: str) -> str:
    return OK if is_up(status) else FAILED if is_down(status) else BETWEEN


def render_svg(report: dict) -> str:
    samples = report.get("requests", {}).get("samples", [])
    timeline = report.get("timeline", {})
    instances = report.get("instances", [])
    per_node = report.get("vip", {}).get("per_node", {})
    times = [s["t"] for s in samples] + [v for v in timeline.values() if v is not None] + \
        [c["t"] for i in instances for c in i["transitions"]]
    start, end = min(times + [0.0]), max(times + [1.0])
    right = WIDTH - RIGHT
    lanes = len(instances) + len(per_node)
    bottom = LANES_TOP + LANE * lanes
    height = bottom + 30

    def x(t):
        return LEFT + (min(max(t, start), end) - start) / max(end - start, 1e-9) * (right - LEFT)

    req = report.get("requests", {})
    downs = ", ".join(f"{i['server']} {i['down_seconds']}s" for i in instances if i.get("down_seconds") is not None)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             text(LEFT, 22, f"Host failover {'PASSED' if report.get('passed') else 'FAILED'}: {report.get('host')} "
                  f"out by {report.get('method')}, survivor {report.get('survivor')}", size=14, weight="bold"),
             text(LEFT, 42, f"DOWN after t0: {downs or '-'} · host back {report.get('host_back_seconds')}s after start"
                  f" · {req.get('total', 0)} requests, {req.get('failed', 0)} failed", size=12),
             text(LEFT, 60, (kind_line(req["by_kind"]) if req.get("by_kind") else "")
                  + " · dot: new connection, square: kept-alive connection", size=11)]
    parts += time_grid(x, start, end, LATENCY[0], bottom)
    parts += latency_panel(samples, x, LEFT, LATENCY)
    lane_y = LANES_TOP
    for instance in instances:
        parts.append(text(LEFT - 8, lane_y + LANE / 2 + 4, f"{instance['pool']}/{instance['server']}", size=11,
                          anchor="end"))
        changes = instance["transitions"]
        for change, following in zip(changes, changes[1:] + [{"t": end}]):
            parts.append(f'<rect x="{x(change["t"]):.1f}" y="{lane_y + 4}" '
                         f'width="{max(x(following["t"]) - x(change["t"]), 0.5):.1f}" height="{LANE - 8}" '
                         f'fill="{_color(change["status"])}"><title>{escape(change["status"])}</title></rect>')
        lane_y += LANE
    for node, points in per_node.items():
        parts.append(text(LEFT - 8, lane_y + LANE / 2 + 4, f"VIP on {node}", size=11, anchor="end"))
        parts.append(f'<rect x="{LEFT}" y="{lane_y + 4}" width="{right - LEFT}" height="{LANE - 8}" fill="#f4f4f4"/>')
        for (t, holds), (t_next, _) in zip(points, points[1:] + [[points[-1][0], False]] if points else []):
            if holds:
                parts.append(f'<rect x="{x(t):.1f}" y="{lane_y + 4}" width="{max(x(t_next) - x(t), 0.5):.1f}" '
                             f'height="{LANE - 8}" fill="{OK}"/>')
        lane_y += LANE
    for index, (key, label) in enumerate(MARKS):
        t = timeline.get(key)
        if t is None:
            continue
        parts.append(f'<line x1="{x(t):.1f}" y1="{LATENCY[0] - 10}" x2="{x(t):.1f}" y2="{bottom}" stroke="{MARK}" '
                     'stroke-dasharray="4 3"/>')
        parts.append(text(x(t) + 3, LATENCY[0] - 14 - 12 * (index % 2), label, size=11, color=TEXT, weight="bold"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(path: str, report: dict) -> None:
    from ..output import write_private

    write_private(path, render_svg(report).encode("utf-8"))

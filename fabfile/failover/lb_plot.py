"""The SVG timeline of a test.lb-failover run (hand-written SVG, as ``plot.py`` for test.failover).

Top panel: latency of every request through the VIP (green ok, red failed; a failure sits at the
top edge; dots are new-connection requests, squares requests on kept-alive connections). Below:
one lane per balancer, filled while its sampler saw the VIP on it. Vertical lines mark the kill
(t0), the VIP on the peer, the start of the killed node and its return.
"""

from __future__ import annotations

from ..loadtest.keepalive import kind_line
from ..svg import text
from .plot import MARK, OK, TEXT, latency_panel, time_grid

WIDTH, HEIGHT, LEFT, RIGHT = 960, 400, 120, 20
LATENCY = (80, 220)
LANES_TOP, LANE = 250, 34
MARKS = (("t0", "kill t0"), ("vip_on_peer", "VIP on peer"), ("alert_fired", "alert fired"), ("start_issued", "start"),
         ("returned", "back"), ("alert_resolved", "alert resolved"))


def render_svg(report: dict) -> str:
    samples = report.get("requests", {}).get("samples", [])
    timeline = report.get("timeline", {})
    per_node = report.get("vip_samples", {}).get("per_node", {})
    times = [s["t"] for s in samples] + [v for v in timeline.values() if v is not None] + \
        [t for points in per_node.values() for t, _ in points]
    start, end = min(times + [0.0]), max(times + [1.0])
    right = WIDTH - RIGHT

    def x(t):
        return LEFT + (t - start) / max(end - start, 1e-9) * (right - LEFT)

    verdict = "PASSED" if report.get("passed") else "FAILED"
    move = report.get("vip_move_seconds")
    req = report.get("requests", {})
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             text(LEFT, 22, f"LB failover {verdict}: {report.get('holder')} killed ({report.get('method')}), "
                   f"VIP {report.get('vip')} -> {report.get('peer')}", size=14, weight="bold"),
             text(LEFT, 42, (f"VIP on peer {move:.2f}s after t0" if move is not None else "VIP did not move")
                   + f" · advert {report.get('advert_interval')}s · {req.get('total', 0)} requests, "
                   f"{req.get('failed', 0)} failed · two-holder samples "
                   f"{report.get('vip_samples', {}).get('two_holder_samples')}", size=12),
             text(LEFT, 60, (kind_line(req["by_kind"]) if req.get("by_kind") else "")
                  + " · dot: new connection, square: kept-alive connection", size=11)]
    parts += time_grid(x, start, end, LATENCY[0], LANES_TOP + LANE * len(per_node))
    parts += latency_panel(samples, x, LEFT, LATENCY)
    for index, (node, points) in enumerate(per_node.items()):
        lane_y = LANES_TOP + index * LANE
        parts.append(text(LEFT - 8, lane_y + LANE / 2 + 4, node, size=11, anchor="end"))
        parts.append(f'<rect x="{LEFT}" y="{lane_y + 4}" width="{right - LEFT}" height="{LANE - 8}" fill="#f4f4f4"/>')
        for (t, holds), (t_next, _) in zip(points, points[1:] + [[points[-1][0], False]] if points else []):
            if holds:
                parts.append(f'<rect x="{x(t):.1f}" y="{lane_y + 4}" width="{max(x(t_next) - x(t), 0.5):.1f}" '
                             f'height="{LANE - 8}" fill="{OK}"/>')
    for key, label in MARKS:
        t = timeline.get(key)
        if t is None:
            continue
        parts.append(f'<line x1="{x(t):.1f}" y1="{LATENCY[0] - 10}" x2="{x(t):.1f}" '
                     f'y2="{LANES_TOP + LANE * len(per_node)}" stroke="{MARK}" stroke-dasharray="4 3"/>')
        parts.append(text(x(t) + 3, LATENCY[0] - 14 - 12 * (MARKS.index((key, label)) % 2), label, size=11,
                           color=TEXT, weight="bold"))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(path: str, report: dict) -> None:
    from ..output import write_private

    write_private(path, render_svg(report).encode("utf-8"))

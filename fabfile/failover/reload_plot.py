"""The SVG timeline of a test.reload run (hand-written SVG, as ``lb_plot.py``).

Top panel: latency of every request (green ok, red failed at the top edge; dots are new-connection
requests, squares requests on kept-alive connections). Below: one lane per balancer with its number of
haproxy workers over time (1 in steady state; more while old workers finish). Dashed lines: the reloads.
"""

from __future__ import annotations

from ..loadtest.keepalive import kind_line
from ..svg import text
from .plot import FAILED, MARK, OK, latency_panel, time_grid

WIDTH, HEIGHT, LEFT, RIGHT = 960, 420, 120, 20
LATENCY = (90, 230)
LANES_TOP, LANE = 260, 50


def render_svg(report: dict) -> str:
    samples = report.get("requests", {}).get("samples", [])
    workers = report.get("workers_per_balancer", {})
    reloads = report.get("reloads", [])
    times = [s["t"] for s in samples] + [r["t"] for r in reloads] + \
        [t for points in workers.values() for t, _ in points]
    start, end = min(times + [0.0]), max(times + [1.0])
    right = WIDTH - RIGHT

    def x(t):
        return LEFT + (t - start) / max(end - start, 1e-9) * (right - LEFT)

    most = max([count for points in workers.values() for _, count in points] + [2])
    req = report.get("requests", {})
    old = report.get("old_workers", {})
    longest = old.get("longest_lifetime_seconds")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             text(LEFT, 22, f"Reloads {'PASSED' if report.get('passed') else 'FAILED'}: {len(reloads)} reloads on "
                  f"{', '.join(report.get('balancers', []))}", size=14, weight="bold"),
             text(LEFT, 42, f"{req.get('total', 0)} requests, {req.get('failed', 0)} failed · "
                  + (kind_line(req["by_kind"]) if req.get("by_kind") else ""), size=12),
             text(LEFT, 60, f"old workers: at most {old.get('most_at_once', 0)} at once, longest seen "
                  + (f"{longest:.2f}s" if longest is not None else "-") + " after its reload · dot: new connection, "
                  "square: kept-alive connection", size=11)]
    bottom = LANES_TOP + LANE * len(workers)
    parts += time_grid(x, start, end, LATENCY[0], bottom)
    parts += latency_panel(samples, x, LEFT, LATENCY)
    for index, (node, points) in enumerate(workers.items()):
        lane_y = LANES_TOP + index * LANE
        parts.append(text(LEFT - 8, lane_y + LANE / 2 + 4, f"{node} workers", size=11, anchor="end"))
        parts.append(f'<rect x="{LEFT}" y="{lane_y + 4}" width="{right - LEFT}" height="{LANE - 8}" fill="#f4f4f4"/>')
        for (t, count), (t_next, _) in zip(points, points[1:]):
            height = (LANE - 8) * count / most
            parts.append(f'<rect x="{x(t):.1f}" y="{lane_y + LANE - 4 - height:.1f}" '
                         f'width="{max(x(t_next) - x(t), 0.5):.1f}" height="{height:.1f}" fill="{OK}"/>')
    for reload in reloads:
        color = MARK if reload["ok"] else FAILED
        parts.append(f'<line x1="{x(reload["t"]):.1f}" y1="{LATENCY[0] - 8}" x2="{x(reload["t"]):.1f}" y2="{bottom}" '
                     f'stroke="{color}" stroke-dasharray="4 3"/>')
        parts.append(text(x(reload["t"]) + 2, LATENCY[0] - 12, f"{reload['n']}", size=10, color=color))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(path: str, report: dict) -> None:
    from ..output import write_private

    write_private(path, render_svg(report).encode("utf-8"))

"""The report's ``canary`` as one SVG: three panels over the seconds since the canary took traffic.

Top: the step asked (percent, grey steps) and the share the canary actually answered per interval.
Middle: 5xx share per interval, canary against stable. Bottom: mean response time per interval, canary
against stable (HAProxy's counters of that interval alone). The title names the decision and why.
"""

from __future__ import annotations

from ..loadtest.svg import LEFT, PANEL_GAP, PANEL_HEIGHT, RIGHT, TOP, WIDTH, Panel
from ..svg import text

CANARY, STABLE, STEP = "#d62728", "#1f77b4", "#999999"


def render_svg(canary: dict) -> str:
    intervals = canary.get("intervals", [])
    end = max([i["at"] for i in intervals] + [1.0])

    def x_of(t: float) -> float:
        return LEFT + t / end * (WIDTH - RIGHT - LEFT)

    def points(key, group=None):
        """(seconds, value) per interval; None (an interval without requests) stays None: the line skips it."""
        scale = 100 if key in ("share_5xx", "share") else 1
        values = [i[group][key] if group else i[key] for i in intervals]
        return [(i["at"], None if v is None else v * scale) for i, v in zip(intervals, values)]

    steps = []
    for n, weight in enumerate(canary.get("weights", [])):
        until = canary["weights"][n + 1]["at"] if n + 1 < len(canary["weights"]) else end
        steps += [(weight["at"], weight["step"]), (until, weight["step"])]
    panels = [
        (Panel(TOP, "canary's share of requests (%): asked (grey) and answered", "%",
               [v for _, v in steps + points("share")], x_of), [(steps, STEP), (points("share"), CANARY)]),
        (Panel(TOP + PANEL_HEIGHT + PANEL_GAP, "5xx share per interval (%)", "%",
               [v for _, v in points("share_5xx", "canary") + points("share_5xx", "stable")], x_of),
         [(points("share_5xx", "canary"), CANARY), (points("share_5xx", "stable"), STABLE)]),
        (Panel(TOP + 2 * (PANEL_HEIGHT + PANEL_GAP), "mean response time per interval (ms)", "ms",
               [v for _, v in points("mean_ms", "canary") + points("mean_ms", "stable")], x_of),
         [(points("mean_ms", "canary"), CANARY), (points("mean_ms", "stable"), STABLE)]),
    ]
    height = TOP + 3 * (PANEL_HEIGHT + PANEL_GAP) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             text(LEFT, 28, f"canary {canary.get('decision', '?')} after {canary.get('seconds_to_decision') or 0:g}s; "
                            f"exposed share {canary.get('exposed_share', 0):.1%} ({canary.get('moves', 'requests')})",
                  size=16, weight="bold"),
             text(LEFT, 50, str(canary.get("reason", ""))[:140], size=12)]
    for panel, lines in panels:
        parts += panel.axes()
        parts += [panel.line(series, color) for series, color in lines]
    legend_x = WIDTH - RIGHT + 12
    for n, (label, color) in enumerate((("canary", CANARY), ("stable", STABLE), ("step asked", STEP))):
        parts.append(f'<line x1="{legend_x}" y1="{TOP + 20 * n}" x2="{legend_x + 20}" y2="{TOP + 20 * n}" '
                     f'stroke="{color}" stroke-width="3"/>')
        parts.append(text(legend_x + 26, TOP + 20 * n + 4, label, size=12))
    parts.append(text(WIDTH / 2, height - 8, "seconds since the canary took traffic", size=12, anchor="middle"))
    parts.append("</svg>")
    return "\n".join(parts)


def write_svg(path: str, canary: dict) -> None:
    """Through a temporary file renamed over ``path`` (never through a symlink planted there)."""
    from ..output import write_private

    write_private(path, render_svg(canary).encode("utf-8"))

"""Small pieces every SVG chart here shares: axis steps, escaped text, one request's marker."""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

TEXT = "#222222"


def nice_step(span: float, ticks: int = 8) -> float:
    """A 1/2/5 x 10^n step giving about ``ticks`` ticks over ``span``."""
    raw = max(span, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


def text(x, y, content, *, size=12, anchor="start", color=TEXT, weight="normal") -> str:
    """An SVG ``<text>`` element, its content escaped."""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}" '
            f'font-weight="{weight}">{escape(str(content))}</text>')


def request_marker(x: float, y: float, color: str, kind: str = "new", size: float = 2.5, tip: str = "") -> str:
    """One request: a dot for a new-connection request, a square for one on a kept-alive connection
    (``Sample.connection``), so the two client kinds stay apart in every plot. ``tip``: hover text."""
    title = f"<title>{escape(tip)}</title>" if tip else ""
    if kind == "keepalive":
        return (f'<rect x="{x - size:.1f}" y="{y - size:.1f}" width="{2 * size:.1f}" height="{2 * size:.1f}" '
                f'fill="{color}">{title}</rect>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size}" fill="{color}">{title}</circle>'

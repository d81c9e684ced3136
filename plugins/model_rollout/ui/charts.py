"""Small server-side SVG line charts (no JavaScript, no external assets)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#0891b2", "#ca8a04", "#db2777")
W, H = 400, 170
ML, MR, MT, MB = 54, 10, 12, 22


@dataclass
class Line:
    """One series: y values at x positions (None = gap), drawn in `color`."""

    label: str
    color: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    dashed: bool = False
    tips: Sequence[str] | None = None


@dataclass
class Marker:
    """A vertical line at time `x` with a short label (a traffic step, a rollback)."""

    x: float
    label: str
    color: str = "#64748b"


def nice_max(v: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above v (1 when v <= 0)."""
    if not v > 0 or not math.isfinite(v):
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v * 0.999:
            return m * e
    return 10 * e


def clock(t: float, span: float) -> str:
    """UTC time label; with the date when the span is over a day."""
    fmt = "%m-%d %H:%M" if span > 86400 else ("%H:%M" if span > 3600 * 3 else "%H:%M:%S")
    return time.strftime(fmt, time.gmtime(t))


def line_chart(
    title: str,
    lines: list[Line],
    x0: float,
    x1: float,
    *,
    fmt: Callable[[float], str] = lambda v: f"{v:g}",
    y_max: float | None = None,
    markers: list[Marker] | None = None,
    name: str = "",
) -> str:
    """An inline <svg> with axes, UTC time ticks, the lines (points carry tooltips), markers."""
    values = [y for ln in lines for y in ln.ys if y is not None]
    top = y_max if y_max is not None else nice_max(max(values, default=0.0))
    span = max(x1 - x0, 1e-9)
    pw, ph = W - ML - MR, H - MT - MB

    def px(x: float) -> float:
        return ML + (x - x0) / span * pw

    def py(y: float) -> float:
        return MT + ph - min(max(y / top, 0.0), 1.0) * ph

    out = [
        f'<svg class="chart" data-chart="{escape(name)}" data-points="{len(values)}" '
        f'viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(5):  # horizontal grid and y labels
        v = top * i / 4
        y = py(v)
        out.append(
            f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{ML - 6}" y="{y + 3.5:.1f}" class="ylab">{escape(fmt(v))}</text>'
        )
    for i in range(5):  # time ticks
        t = x0 + span * i / 4
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<text x="{px(t):.1f}" y="{H - 6}" class="xlab" text-anchor="{anchor}">'
            f"{escape(clock(t, span))}</text>"
        )
    last_x, row = -1e9, 0
    for m in sorted(markers or [], key=lambda m: m.x):
        if x0 <= m.x <= x1:
            x = px(m.x)
            row = (row + 1) % 2 if x - last_x < 60 else 0  # stagger labels that would overlap
            last_x = x
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{MT + ph}" class="marker" '
                f'stroke="{m.color}"><title>{escape(m.label)} at {clock(m.x, 0)} UTC</title></line>'
                f'<text x="{x + 3:.1f}" y="{MT + 9 + 11 * row}" class="mlab" fill="{m.color}">'
                f"{escape(m.label)}</text>"
            )
    if not values:
        out.append(
            f'<text x="{ML + pw / 2:.1f}" y="{MT + ph / 2:.1f}" class="empty" '
            f'text-anchor="middle">no requests in this window</text>'
        )
    for ln in lines:
        dash = ' stroke-dasharray="5 3"' if ln.dashed else ""
        seg: list[str] = []
        segs: list[list[str]] = []
        for x, y in zip(ln.xs, ln.ys, strict=True):
            if y is None:
                if seg:
                    segs.append(seg)
                seg = []
            else:
                seg.append(f"{px(x):.1f},{py(y):.1f}")
        if seg:
            segs.append(seg)
        for s in segs:
            out.append(
                f'<polyline points="{" ".join(s)}" fill="none" stroke="{ln.color}" '
                f'stroke-width="1.8"{dash}/>'
            )
        for i, (x, y) in enumerate(zip(ln.xs, ln.ys, strict=True)):
            if y is None:
                continue
            tip = ln.tips[i] if ln.tips else f"{ln.label}: {fmt(y)}"
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{2.2 if ln.dashed else 2.6}" '
                f'fill="{ln.color}"><title>{escape(tip)}</title></circle>'
            )
    out.append("</svg>")
    return "".join(out)


def split_bar(weights: dict[str, int], colors: dict[str, str]) -> str:
    """A horizontal 100% bar of the live weights, one labelled segment per version."""
    total = sum(weights.values())
    if not total:
        return '<div class="split empty">no live traffic</div>'
    parts, names = [], []
    for v, w in sorted(weights.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
        if w <= 0:
            continue
        pct = 100 * w / total
        text = f"v{escape(v)} {w}%"
        names.append(text)
        parts.append(
            f'<span class="seg" style="width:{pct:.2f}%;background:{colors.get(v, PALETTE[0])}" '
            f'title="{text}">{text if pct >= 25 else ""}</span>'
        )
    caption = f'<div class="sub">{" · ".join(names)}</div>' if len(names) > 1 else ""
    return f'<div class="split">{"".join(parts)}</div>{caption}'

"""Line charts as inline SVG: text in the report's own file, no image to embed or fetch.

The HTML report inlines it as it stands, and report.md links the .svg file beside it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

__all__ = ["line_chart_svg"]

WIDTH, HEIGHT = 640, 380
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 36, 50  # margins around the plotting area (px)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values spanning [low, high]: steps of 1, 2 or 5 times a power of ten."""
    span = max(high - low, 1e-9)
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def line_chart_svg(
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_limits: tuple[float, float] | None = None,
) -> str:
    """An SVG document: one polyline with markers per (name, colour, points), a legend, and
    axes with round ticks. ``points``: (x, y) pairs; ``y_limits``: bounds the y axis never
    passes (e.g. 0 and 100 for a percentage). The first series is drawn on top."""
    xs = [x for _, _, points in series for x, _ in points]
    ys = [y for _, _, points in series for _, y in points]
    x_low, x_high = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = max((max(ys) - min(ys)) * 0.08, 0.5)
    y_low, y_high = min(ys) - pad, max(ys) + pad
    if y_limits is not None:
        y_low, y_high = max(y_low, y_limits[0]), min(y_high, y_limits[1])
        y_low = min(y_low, y_high - 1)  # a flat curve at a limit still gets an axis
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            LEFT + (x - x_low) / (x_high - x_low) * inner_w,
            TOP + (1 - (y - y_low) / (y_high - y_low)) * inner_h,
        )

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{html.escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="none" '
        'stroke="#444"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">'
        f"{html.escape(title)}</text>",
    ]
    for value in _ticks(x_low, x_high):
        x, _ = at(value, y_low)
        parts.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + inner_h}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{TOP + inner_h + 16}" text-anchor="middle">{value:g}</text>'
        )
    for value in _ticks(y_low, y_high):
        _, y = at(x_low, value)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + inner_w}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>'
        )
    parts.append(
        f'<text x="{LEFT + inner_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text transform="translate(16 {TOP + inner_h / 2}) rotate(-90)" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for index, (name, colour, points) in reversed(list(enumerate(series))):
        drawn = [at(x, y) for x, y in points]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in drawn)
        parts.append(
            f'<polyline class="series" data-name="{html.escape(name)}" points="{path}" '
            f'fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in drawn]
        legend_y = TOP + 14 + 18 * index
        parts.append(
            f'<line x1="{LEFT + inner_w + 12}" y1="{legend_y - 4}" x2="{LEFT + inner_w + 32}" '
            f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"/>'
            f'<text x="{LEFT + inner_w + 38}" y="{legend_y}">{html.escape(name)}</text>'
        )
    return "\n".join([*parts, "</svg>"]) + "\n"

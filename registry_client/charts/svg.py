"""The few SVG pieces the figures are made of: a document with its accessible title and
description, linear and logarithmic scales, axes with ticks, lines, text. Every text is
escaped here, so names read from the registry cannot inject markup."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

__all__ = ["PALETTE", "Scale", "axis", "document", "line", "text"]

# Distinguishable for the common colour-vision deficiencies (Okabe and Ito's palette).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = 'font-family="sans-serif" font-size="11"'


def document(width: int, height: int, title: str, description: str, body: Sequence[str]) -> str:
    """A standalone SVG: role img, labelled by its <title> and described by its <desc>. The
    ids are the figure's own (a digest of its text), so several figures inlined in one page
    are each labelled by their own title."""
    ids = "chart-" + hashlib.sha256(f"{title}\0{description}".encode()).hexdigest()[:12]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-labelledby="{ids}-title {ids}-desc">'
        f'<title id="{ids}-title">{escape(title)}</title>'
        f'<desc id="{ids}-desc">{escape(description)}</desc>'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>' + "".join(body) + "</svg>\n"
    )


@dataclass(frozen=True, slots=True)
class Scale:
    """Maps a domain [low, high] onto pixels [start, end], linearly or by logarithm."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False

    def __call__(self, value: float) -> float:
        low, high, value = self.low, self.high, value
        if self.log:
            low, high, value = math.log10(low), math.log10(high), math.log10(max(value, self.low))
        span = high - low
        share = 0.5 if span == 0 else (value - low) / span
        return self.start + share * (self.end - self.start)

    def ticks(self, count: int = 5) -> list[float]:
        """Round values across the domain: powers of ten on a log scale."""
        if self.log:
            first, last = math.floor(math.log10(self.low)), math.ceil(math.log10(self.high))
            for multiples in ((1,), (1, 2, 5)):  # enough ticks to read
                ticks = [m * 10.0**p for p in range(first, last + 1) for m in multiples
                         if self.low <= m * 10.0**p <= self.high]  # fmt: skip
                if len(ticks) >= 3:
                    return ticks
            # Less than a decade: round values at even steps read as well on a log axis.
        if self.high == self.low:
            return [self.low]
        raw = (self.high - self.low) / max(count - 1, 1)
        step = 10 ** math.floor(math.log10(raw))
        step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
        first = math.ceil(self.low / step) * step
        return [first + i * step for i in range(int((self.high - first) / step + 1e-9) + 1)]


def text(x: float, y: float, content: str, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} {extra}>'
            f"{escape(content)}</text>")  # fmt: skip


def line(
    points: Sequence[tuple[float, float]], colour: str, label: str, dashed: bool = False
) -> str:
    """A polyline with its series name as a tooltip (<title>) and a data-series attribute."""
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = ' stroke-dasharray="5 3"' if dashed else ""
    return (
        f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="2"'
        f"{dash} data-series={quoteattr(label)}><title>{escape(label)}</title></polyline>"
    )


def axis(scale: Scale, at: float, vertical: bool, label: str, fmt: str = "{:g}") -> list[str]:
    """An axis line at `at` (y for a horizontal axis, x for a vertical one), its ticks with
    their values, and its label."""
    parts = []
    if vertical:
        parts.append(
            f'<line x1="{at}" y1="{scale.start}" x2="{at}" y2="{scale.end}" stroke="#444"/>'
        )
        for value in scale.ticks():
            y = scale(value)
            parts.append(f'<line x1="{at - 4}" y1="{y:.1f}" x2="{at}" y2="{y:.1f}" stroke="#444"/>')
            parts.append(text(at - 6, y + 4, fmt.format(value), "end"))
        middle = (scale.start + scale.end) / 2
        parts.append(text(at - 40, middle, label, "middle",
                          f'transform="rotate(-90 {at - 40} {middle:.1f})"'))  # fmt: skip
    else:
        parts.append(
            f'<line x1="{scale.start}" y1="{at}" x2="{scale.end}" y2="{at}" stroke="#444"/>'
        )
        for value in scale.ticks():
            x = scale(value)
            parts.append(f'<line x1="{x:.1f}" y1="{at}" x2="{x:.1f}" y2="{at + 4}" stroke="#444"/>')
            parts.append(text(x, at + 16, fmt.format(value), "middle"))
        parts.append(text((scale.start + scale.end) / 2, at + 32, label, "middle"))
    return parts

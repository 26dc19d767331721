"""Drift over time as a heat map: one row per feature, one column per slice of time, each
cell coloured by the feature's PSI in that slice against its baseline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from registry_client.charts.svg import document, text

__all__ = ["psi_colour", "psi_heatmap"]

_CELL_WIDTH, _CELL_HEIGHT, _LEFT, _TOP = 36, 22, 150, 40
# Sequential, light to dark, then the palette's warning colours at the drift thresholds: a
# reader sees "more drift" as darker and "past a threshold" as a change of hue.
_QUIET = ("#f2f7fb", "#cfe3f1", "#9cc6e4")
_WARN, _ALERT, _EMPTY = "#E69F00", "#D55E00", "#ffffff"


def psi_colour(psi: float | None, warn: float, alert: float) -> str:
    """The cell colour of a PSI: blank without a value, blues below `warn`, orange from
    `warn`, red from `alert`."""
    if psi is None:
        return _EMPTY
    if psi >= alert:
        return _ALERT
    if psi >= warn:
        return _WARN
    return _QUIET[min(int(psi / warn * len(_QUIET)), len(_QUIET) - 1)]


def psi_heatmap(
    title: str,
    features: Sequence[str],
    slice_starts: Sequence[float],
    psi: Sequence[Sequence[float | None]],
    thresholds: tuple[float, float],
) -> str:
    """`psi[f][s]`: feature f's PSI in the slice starting at `slice_starts[s]` (epoch
    seconds), None where the slice had too few values for one. Each cell carries its value
    as a tooltip and in data-psi, so it is read without the colours."""
    warn, alert = thresholds
    width = _LEFT + _CELL_WIDTH * max(len(slice_starts), 1) + 20
    height = _TOP + _CELL_HEIGHT * max(len(features), 1) + 50
    body: list[str] = []
    for column, start in enumerate(slice_starts):
        if column % 3 == 0 or column == len(slice_starts) - 1:
            label = datetime.fromtimestamp(start, UTC).strftime("%H:%M")
            x = _LEFT + column * _CELL_WIDTH + _CELL_WIDTH / 2
            body.append(text(x, _TOP - 8, label, "middle"))
    for row, feature in enumerate(features):
        y = _TOP + row * _CELL_HEIGHT
        body.append(text(_LEFT - 6, y + _CELL_HEIGHT / 2 + 4, feature, "end"))
        for column, value in enumerate(psi[row]):
            shown = "no data" if value is None else f"PSI {value:.3f}"
            tooltip = f"{feature}, {_clock(slice_starts[column])}: {shown}"
            body.append(
                f'<rect x="{_LEFT + column * _CELL_WIDTH}" y="{y}" width="{_CELL_WIDTH - 2}"'
                f' height="{_CELL_HEIGHT - 2}" fill="{psi_colour(value, warn, alert)}"'
                f' stroke="#ccc" data-psi="{"" if value is None else f"{value:.4f}"}">'
                f"<title>{escape(tooltip)}</title></rect>"
            )
    if not features:
        body.append(text(_LEFT, _TOP + 15, "no feature with a baseline in this window"))
    legend_y = _TOP + _CELL_HEIGHT * max(len(features), 1) + 20
    for index, (colour, label) in enumerate(
        (
            (_QUIET[0], f"PSI < {warn:g}"),
            (_WARN, f">= {warn:g} warn"),
            (_ALERT, f">= {alert:g} alert"),
        )
    ):
        x = _LEFT + index * 110
        body.append(f'<rect x="{x}" y="{legend_y}" width="14" height="14" fill="{colour}"'
                    ' stroke="#ccc"/>')  # fmt: skip
        body.append(text(x + 18, legend_y + 11, label))
    worst = [
        f"{feature} {max(v for v in row if v is not None):.3f}"
        for feature, row in zip(features, psi, strict=True)
        if any(v is not None for v in row)
    ]
    description = (
        f"PSI per feature (rows) per time slice (columns, UTC), warn at {warn:g}, alert at"
        f" {alert:g}. Highest per feature: {', '.join(worst) or 'no data'}."
    )
    return document(width, height, title, description, body)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M UTC")

"""The figures gatectl draws with --plot and the status pages show: drift as quantile curves
(reference beside live), latency histograms of versions side by side, and a rollout's
timeline of candidate weight and decisions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from registry_client.charts.svg import PALETTE, Scale, axis, document, line, text
from registry_client.stats.window import BUCKET_BASE_SECONDS, BUCKETS_PER_DOUBLING

__all__ = ["CurvePanel", "Decision", "latency_histograms", "quantile_curves", "rollout_timeline"]

_VERDICT_COLOURS = {"ok": "#009E73", "warn": "#E69F00", "alert": "#D55E00"}
_PANEL_WIDTH, _PANEL_HEIGHT, _COLUMNS = 320, 220, 3


@dataclass(frozen=True, slots=True)
class CurvePanel:
    """One feature: its quantiles at `levels` in the baseline and in the live window."""

    feature: str
    verdict: str
    levels: Sequence[float]
    baseline: Sequence[float]
    live: Sequence[float]


def quantile_curves(title: str, panels: Sequence[CurvePanel], baseline_name: str) -> str:
    """Small multiples, one per feature: the baseline's quantile curve (dashed) and the live
    one (coloured by verdict). A feature that drifted shows as two curves apart."""
    rows = max(1, -(-len(panels) // _COLUMNS))
    width = _PANEL_WIDTH * min(max(len(panels), 1), _COLUMNS)
    body: list[str] = []
    for index, panel in enumerate(panels):
        left = (index % _COLUMNS) * _PANEL_WIDTH
        top = (index // _COLUMNS) * _PANEL_HEIGHT
        body += _curve_panel(panel, left, top, baseline_name)
    if not panels:
        body.append(text(10, 30, "no feature with a baseline in this window"))
    verdicts = ", ".join(f"{p.feature} {p.verdict}" for p in panels) or "no features"
    description = (f"Quantile curves of each feature, {baseline_name} dashed and live solid"
                   f" (x: quantile level, y: value). Verdicts: {verdicts}.")  # fmt: skip
    return document(width, rows * _PANEL_HEIGHT, title, description, body)


def _curve_panel(panel: CurvePanel, left: float, top: float, baseline_name: str) -> list[str]:
    values = [*panel.baseline, *panel.live]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    x = Scale(0.0, 1.0, left + 60, left + _PANEL_WIDTH - 15)
    y = Scale(low, high if high > low else low + 1.0, top + _PANEL_HEIGHT - 50, top + 30)
    colour = _VERDICT_COLOURS.get(panel.verdict, "#666666")
    return [
        f"<g data-feature={quoteattr(panel.feature)} data-verdict={quoteattr(panel.verdict)}>",
        text(left + 60, top + 18, f"{panel.feature}: {panel.verdict}", extra='font-weight="bold"'),
        *axis(x, top + _PANEL_HEIGHT - 50, False, "quantile level"),
        *axis(y, left + 60, True, "value", "{:.3g}"),
        line([(x(q), y(v)) for q, v in zip(panel.levels, panel.baseline, strict=True)],
             "#555555", f"{panel.feature} {baseline_name}", dashed=True),
        line([(x(q), y(v)) for q, v in zip(panel.levels, panel.live, strict=True)],
             colour, f"{panel.feature} live"),
        f'<line x1="{left + 70}" y1="{top + 36}" x2="{left + 90}" y2="{top + 36}" stroke="#555"'
        ' stroke-dasharray="5 3" stroke-width="2"/>',
        text(left + 94, top + 40, baseline_name),
        f'<line x1="{left + 70}" y1="{top + 50}" x2="{left + 90}" y2="{top + 50}"'
        f' stroke="{colour}" stroke-width="2"/>',
        text(left + 94, top + 54, "live"),
        "</g>",
    ]  # fmt: skip


def latency_histograms(title: str, buckets: Mapping[str, Mapping[int, int]]) -> str:
    """Each version's share of requests per latency bucket (log-spaced, as the gateways count
    them), one line per version on one logarithmic time axis."""
    width, height = 720, 360
    present = {name: b for name, b in buckets.items() if sum(b.values())}
    indexes = sorted({i for b in present.values() for i in b}) or [0, 1]
    seconds = [_bucket_seconds(i) for i in range(indexes[0], indexes[-1] + 2)]
    shares = {name: {i: n / sum(b.values()) for i, n in b.items()} for name, b in present.items()}
    top_share = max((s for per in shares.values() for s in per.values()), default=1.0)
    x = Scale(seconds[0] * 1e3, seconds[-1] * 1e3, 70, width - 20, log=True)
    y = Scale(0.0, top_share, height - 60, 40)
    body = [*axis(x, height - 60, False, "request latency (ms)", "{:.3g}"),
            *axis(y, 70, True, "share of requests", "{:.0%}")]  # fmt: skip
    for colour, (name, per) in zip(PALETTE, sorted(shares.items()), strict=False):
        points = []
        for i in range(indexes[0], indexes[-1] + 1):  # a step per bucket, zero where empty
            share = per.get(i, 0.0)
            low, high = _bucket_seconds(i) * 1e3, _bucket_seconds(i + 1) * 1e3
            points += [(x(low), y(share)), (x(high), y(share))]
        body.append(line(points, colour, f"version {name}"))
    body += _legend([f"version {n}" for n in sorted(shares)], width - 180, 20)
    counts = ", ".join(f"{n}: {sum(b.values())} requests" for n, b in sorted(present.items()))
    return document(width, height, title, f"Latency histograms per version ({counts}).", body)


@dataclass(frozen=True, slots=True)
class Decision:
    at: float  # Unix time
    decision: str
    weight: float  # the candidate's weight after it
    reason: str


def rollout_timeline(title: str, decisions: Sequence[Decision], steps: Sequence[int]) -> str:
    """The candidate's weight over time as steps, a marker per decision with its reason."""
    width, height = 720, 320
    if not decisions:
        return document(width, height, title, "No decisions yet.",
                        [text(20, 40, "no decisions yet")])  # fmt: skip
    start, end = decisions[0].at, max(decisions[-1].at, decisions[0].at + 1)
    x = Scale(0.0, end - start, 70, width - 30)
    y = Scale(0.0, 100.0, height - 60, 30)
    body = [*axis(x, height - 60, False, "seconds since the rollout started"),
            *axis(y, 70, True, "candidate weight (%)")]  # fmt: skip
    points: list[tuple[float, float]] = []
    for previous, decision in zip([None, *decisions], decisions, strict=False):
        if previous is not None:
            points.append((x(decision.at - start), y(previous.weight)))
        points.append((x(decision.at - start), y(decision.weight)))
    body.append(line(points, PALETTE[0], "candidate weight"))
    for step in steps:
        body.append(f'<line x1="70" x2="{width - 30}" y1="{y(step):.1f}" y2="{y(step):.1f}"'
                    ' stroke="#ccc" stroke-dasharray="2 4"/>')  # fmt: skip
    for decision in decisions:
        colour = {"rollback": "#D55E00", "promote": "#009E73", "pause": "#E69F00"}.get(
            decision.decision, "#0072B2")  # fmt: skip
        when = datetime.fromtimestamp(decision.at, UTC).strftime("%H:%M:%S")
        cx, cy = x(decision.at - start), y(decision.weight)
        body.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5"'
            f' fill="{colour}" data-decision={quoteattr(decision.decision)}><title>'
            f"{escape(f'{when} {decision.decision}: {decision.reason}')}</title></circle>"
        )
        if cx > width - 100:  # near the right edge: the label ends at the marker
            body.append(text(cx - 7, cy - 7, decision.decision, "end"))
        else:
            body.append(text(cx + 7, cy - 7, decision.decision))
    summary = "; ".join(f"{d.decision} to {d.weight:g}%" for d in decisions)
    return document(width, height, title, f"Decisions in order: {summary}.", body)


def _legend(names: Sequence[str], left: float, top: float) -> list[str]:
    parts = []
    for i, (colour, name) in enumerate(zip(PALETTE, names, strict=False)):
        y = top + 16 * i
        parts.append(f'<rect x="{left}" y="{y}" width="12" height="3" fill="{colour}"/>')
        parts.append(text(left + 18, y + 5, name))
    return parts


def _bucket_seconds(index: int) -> float:
    return BUCKET_BASE_SECONDS * 2 ** (index / BUCKETS_PER_DOUBLING)

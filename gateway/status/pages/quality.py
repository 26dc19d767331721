"""The model page's quality section: live metrics from joined labels per version and role,
and per value of each segment the model is reported by (where fairness shows)."""

from __future__ import annotations

from typing import Any

from gateway.status.pages.html import Cell, clock, e, number, percent, table
from gateway.status.snapshot import QualityView
from registry_client.cli.quality_window import HEADLINE_METRICS

__all__ = ["quality_section"]


def quality_section(quality: QualityView | None) -> str:
    if quality is None:
        return (
            '<h2>Quality</h2><p class="note">No quality config: gatectl model create'
            " --task to join labels.</p>"
        )
    names = HEADLINE_METRICS.get(quality.task, ())
    overall = quality.overall
    rows = [
        [
            e(v["version"]),
            e(v["role"]),
            number(v["labelled"], "d"),
            number(v["logged"], "d"),
            percent(v["coverage"], ".1f"),
            *_metrics(v["metrics"], names),
        ]
        for v in overall["versions"]
    ]
    parts = [
        "<h2>Quality</h2>",
        table(
            f"Live {quality.task} quality from joined labels, from {overall['from']} (read"
            f" {clock(quality.read_at)}, every minute)",
            ["version", "role", "labelled", "logged", "coverage", *names],
            rows,
            numeric=range(2, 5 + len(names)),
        ),
    ]
    for segment, report in sorted(quality.by_segment.items()):
        segment_rows = [
            [
                e(v["version"]),
                e(v["role"]),
                e(value),
                number(found["labelled"], "d"),
                *_metrics(found["metrics"], names),
            ]
            for v in report["versions"]
            for value, found in v.get("segments", {}).items()
        ]
        parts.append(
            table(
                f"By {segment}",
                ["version", "role", segment, "labelled", *names],
                segment_rows,
                numeric=range(3, 4 + len(names)),
            )
        )
        gaps = [
            [e(v["version"]), e(v["role"]), *_gaps(v.get("segments", {}), names)]
            for v in report["versions"]
        ]
        caption = f"Fairness across {segment}: each metric's largest gap between values"
        header = ["version", "role", *names]
        parts.append(table(caption, header, gaps, numeric=range(2, 2 + len(names))))
    return "".join(parts)


def _gaps(segments: dict[str, Any], names: tuple[str, ...] | list[str]) -> list[Cell]:
    """Per metric, the highest value across the segment's values less the lowest (what
    gatectl fairness reports as the gap); "-" with fewer than two values having it."""
    cells = []
    for name in names:
        found = [
            f["metrics"][name] for f in segments.values() if f["metrics"].get(name) is not None
        ]
        cells.append(number(max(found) - min(found), ".4f") if len(found) >= 2 else "-")
    return cells


def _metrics(metrics: dict[str, Any], names: tuple[str, ...] | list[str]) -> list[Cell]:
    return [number(metrics.get(name), ".4f") for name in names]

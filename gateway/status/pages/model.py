"""/status/models/<model>: its versions with their derived status; the versions compared since
the current rule revision took effect, each one's difference from the baseline, and their
latency histograms; shadow agreement; drift per version (reference against live, and PSI over
the hour); live quality and fairness per segment."""

from __future__ import annotations

from typing import Any

from gateway.status.pages.html import Cell, e, figure, number, percent, table
from gateway.status.pages.quality import quality_section
from gateway.status.snapshot import DriftView, ModelDetail, ModelSummary
from registry_client.cli.compare import SIGNIFICANT, interval_cell, rank_cell

__all__ = ["model_body"]


def model_body(summary: ModelSummary, detail: ModelDetail | None) -> str:
    parts = [_versions(summary)]
    if detail is None:
        parts.append(
            '<p class="note">Reading the comparison, drift and quality of this model;'
            " the page refreshes itself.</p>"
        )
        return "".join(parts)
    if detail.error:
        parts.append(
            f'<p class="error">The model\'s records could not be read: {e(detail.error)}</p>'
        )
        return "".join(parts)
    if detail.comparison is not None:
        parts.append(_comparison(detail.comparison))
        parts.append(figure(detail.latency_svg, "Latency histogram of each version (log scale)."))
        parts.append(_agreement(detail.comparison))
    parts.append("<h2>Drift</h2>")
    parts += [_drift(view) for view in detail.drift] or ['<p class="note">No versions.</p>']
    parts.append(quality_section(detail.quality))
    return "".join(parts)


def _versions(summary: ModelSummary) -> str:
    rows = [
        [
            e(s.version),
            f'<span class="{"failed" if s.failed_on else ""}">{e(s.text)}</span>',
            e(s.since or "-"),
            f"{s.applied} of {s.replicas}",
        ]
        for s in summary.statuses
    ]
    return "<h2>Versions</h2>" + table(
        "Versions and their status", ["version", "status", "since", "replicas applied"], rows
    )


def _comparison(report: dict[str, Any]) -> str:
    rows = []
    for row in report["versions"]:
        latency = row["latency_ms"]
        rows.append(
            [
                e(row["version"]),
                e(row["role"]),
                number(row["rule_percent"], ".4g", "%"),
                number(row["observed_percent"], ".1f", "%"),
                number(row["requests"], "d"),
                percent(row["error_rate"]),
                *(number(latency[q], ".2f") for q in ("p50", "p90", "p99")),
                number(row["agreement"], ".4f"),
            ]
        )
    header = [
        "version",
        "role",
        "rule share",
        "observed share",
        "requests",
        "error rate",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "agreement",
    ]
    took_effect = report["revision_took_effect_at"] or report["from"]
    caption = (
        f"Versions compared since rule revision {report['rule_revision']} took effect at"
        f" {took_effect}, to {report['to']}, {len(report['replicas'])} replicas"
    )
    return (
        "<h2>Comparison</h2>"
        + table(caption, header, rows, numeric=range(2, 10))
        + _differences(report)
    )


def _differences(report: dict[str, Any]) -> str:
    """Each version's difference from the baseline with its 95% interval, marked where the
    interval excludes zero: whether "0.3 points worse" is more than noise."""
    rows = []
    for row in report["versions"]:
        found = row.get("difference")
        if not found:
            continue
        latency = found["latency_ms"]
        rows.append(
            [
                e(row["version"]),
                e(row["role"]),
                e(found["against"]),
                e(interval_cell(found["error_rate_points"], " pts")),
                *(e(interval_cell(latency[q], " ms")) for q in ("p50", "p90", "p99")),
                e(rank_cell(found["latency_rank_test"])),
            ]
        )
    header = ["version", "role", "baseline", "error rate", "p50", "p90", "p99", "rank test"]
    caption = (
        f"Difference from the baseline (95% intervals; {SIGNIFICANT}: the interval excludes 0;"
        " rank test: Mann-Whitney U over the latencies)"
    )
    return table(caption, header, rows)


def _agreement(report: dict[str, Any]) -> str:
    rows: list[list[Cell]] = []
    for row in report["versions"]:
        for c in row["comparisons"]:
            rows.append(
                [
                    e(row["version"]),
                    e(c["primary"]),
                    e(c["output"]),
                    number(c["rows"], "d"),
                    number(c["agreement"], ".4f"),
                    number(c["mean_abs_diff"], ".3g"),
                    number(c["max_abs_diff"], ".3g"),
                ]
            )
    header = [
        "shadow",
        "primary",
        "output",
        "rows compared",
        "agreement",
        "mean |diff|",
        "max |diff|",
    ]
    return "<h2>Shadow agreement</h2>" + table(
        "Shadows' outputs against the primary's", header, rows, numeric=range(3, 7)
    )


def _drift(view: DriftView) -> str:
    heading = f"<h3>Version {e(view.version)}</h3>"
    if view.report is None:
        return heading + f'<p class="note">{e(view.note)}</p>'
    report = view.report
    rows = [
        [
            e(f["feature"]),
            number(f["n"], "d"),
            number(f["psi"], ".3f"),
            number(f["ks"], ".3f"),
            number(f["wasserstein"], ".3f"),
            percent(f["missing_increase"]),
            percent(f["out_of_range"]),
            f'<span class="{e(f["verdict"])}">{e(f["verdict"])}</span>',
        ]
        for f in report["features"]
    ]
    header = [
        "feature",
        "values",
        "PSI",
        "KS",
        "Wasserstein",
        "missing increase",
        "out of range",
        "verdict",
    ]
    caption = (
        f"Inputs of the last 15 minutes against the reference: {report['rows']} rows,"
        f" dataset {report['dataset']}"
    )
    return (
        heading
        + table(caption, header, rows, numeric=range(1, 7))
        + figure(view.curves_svg, "Each feature's quantile curve: reference dashed, live solid.")
        + figure(view.heatmap_svg, "PSI per feature per 5 minutes over the last hour.")
    )

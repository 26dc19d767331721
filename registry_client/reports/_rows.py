"""The rows of a comparison, one per (version, role, rule revision): traffic and its share,
errors, latency, agreement with the primary, registered metrics and live quality, as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected
from registry_client.quality.report import QualityRange
from registry_client.records.rule_documents import RouteRule
from registry_client.stats.store import MergedStats
from registry_client.stats.window import Comparison, VersionStats

__all__ = [
    "IDLE",
    "PRIMARY",
    "QUANTILES",
    "SHADOW",
    "ShareBase",
    "live_quality",
    "registered_metrics",
    "row_of",
]

PRIMARY, SHADOW = "primary", "shadow"
IDLE = "-"  # the role of a version asked for that served nothing
QUANTILES = (0.5, 0.9, 0.99)


def _rule_share(rule: RouteRule | None, version: str, role: str) -> float | None:
    """The share the rule gives the version in that role, in percent."""
    if rule is None:
        return None
    if role == SHADOW:
        return next((s.percent for s in rule.shadows if s.version == version), None)
    total = sum(s.weight for s in rule.split)
    weight = next((s.weight for s in rule.split if s.version == version), None)
    return None if weight is None or not total else 100.0 * weight / total


def _ms(stats: VersionStats, q: float) -> float | None:
    value = stats.quantile(q)
    return None if value is None else value * 1000.0


def row_of(
    stats: VersionStats, primary_requests: int, rule: RouteRule | None,
    metrics: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """`primary_requests`: the model's primary requests of the same revision in the minutes
    this row counts; `rule`: the revision's rule (None when unknown)."""
    compared = stats.comparisons.values()
    rows = sum(c.rows for c in compared)
    agreeing = sum(c.agreeing_rows for c in compared)
    elements = sum(c.elements for c in compared)
    diff_sum = sum(c.abs_diff_sum for c in compared)
    return {
        "version": stats.version,
        "role": stats.role,
        "revision": stats.revision,
        "rule_percent": _rule_share(rule, stats.version, stats.role),
        "observed_percent": 100.0 * stats.requests / primary_requests if primary_requests else None,
        "requests": stats.requests,
        "errors": dict(stats.errors),
        "error_rate": stats.error_count / stats.requests if stats.requests else None,
        "latency_ms": {f"p{round(q * 100)}": _ms(stats, q) for q in QUANTILES},
        # Requests per log-spaced latency bucket (the gateways' own; bucket i's upper edge is
        # 25 us x 2^((i + 1) / 8)): what --plot draws, and enough for any quantile.
        "latency_buckets": {str(k): v for k, v in sorted(stats.latency_buckets.items())},
        "agreement": agreeing / rows if rows else None,
        "compared_rows": rows,
        "mean_abs_diff": diff_sum / elements if elements else None,
        "max_abs_diff": max((c.max_abs_diff for c in compared), default=None),
        "comparisons": [
            _comparison(c) for c in sorted(compared, key=lambda c: (c.primary, c.output))
        ],
        "metrics": {name: m["value"] for name, m in metrics.items()},
        "metric_sources": {
            name: {"source": m["source"], "at": m["at"]} for name, m in metrics.items()
        },
    }


def _comparison(compared: Comparison) -> dict[str, Any]:
    return {
        "primary": compared.primary,
        "output": compared.output,
        "rows": compared.rows,
        "agreement": compared.agreement,
        "mean_abs_diff": compared.mean_abs_diff,
        "max_abs_diff": compared.max_abs_diff,
    }


class ShareBase:
    """The model's primary requests a row's share is taken of, within the row's revision: all
    of them for a primary; for a shadow, those in the minutes it was mirrored, not before."""

    def __init__(self, merged: MergedStats) -> None:
        self._merged = merged
        self._primary: dict[int | None, dict[int, int]] = {}  # revision -> window -> requests
        for (_, role, revision), counts in merged.requests_by_window.items():
            if role == PRIMARY:
                windows = self._primary.setdefault(revision, {})
                for window, count in counts.items():
                    windows[window] = windows.get(window, 0) + count

    def of(self, version: str, role: str, revision: int | None) -> int:
        primary = self._primary.get(revision, {})
        if role != SHADOW:
            return sum(primary.values())
        windows = self._merged.requests_by_window.get((version, role, revision), {})
        return sum(primary.get(window, 0) for window in windows)


def live_quality(live: QualityRange, metrics: tuple[str, ...], version: str,
                 role: str) -> dict[str, Any]:  # fmt: skip
    """The task's headline `metrics` from the labels joined to the predictions of the window
    (a version asked for yet idle, role "-": none), with the label coverage."""
    quality = live.quality(version, role)
    return {
        "labelled": quality.labelled, "logged": quality.logged, "coverage": quality.coverage,
        "metrics": {name: quality.metrics.get(name) for name in metrics},
    }  # fmt: skip


def registered_metrics(
    client: RegistryClient, model: str, version: str
) -> dict[str, dict[str, Any]]:
    """Each metric's latest measurement (value, source, at): registered or added since."""
    try:
        return client.latest_metrics(model, version)
    except NotFound:
        return {}  # statistics outlive a version's registration
    except ValueError as exc:
        raise Rejected(f"version {version!r} has unreadable metrics: {exc}") from exc

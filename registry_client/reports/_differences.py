"""Each row of a comparison against its revision's baseline: the difference of error rates
and of latency quantiles with 95% intervals, and a rank test of the latencies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from registry_client.records.rule_documents import RouteRule
from registry_client.reports._revisions import Revision
from registry_client.reports._rows import PRIMARY, QUANTILES
from registry_client.stats.difference import mann_whitney, quantile_differences, rate_difference

__all__ = ["attach_differences"]


def attach_differences(rows: Sequence[dict[str, Any]], revisions: Mapping[int, Revision]) -> None:
    """Give every row `is_baseline` and `difference` (None for a baseline, a row without
    requests, or in a revision without a baseline): a row is compared only with traffic
    routed by the same rule."""
    groups: dict[int | None, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["revision"], []).append(row)
    for revision, group in groups.items():
        known = None if revision is None else revisions.get(revision)
        baseline = _baseline(group, None if known is None else known.rule)
        for row in group:
            row["is_baseline"] = row is baseline
            row["difference"] = None
            if baseline is not None and row is not baseline and row["requests"] > 0:
                row["difference"] = _difference(row, baseline)


def _baseline(group: Sequence[dict[str, Any]], rule: RouteRule | None) -> dict[str, Any] | None:
    """The primary the rule weighs most among those that served (most requests when the
    revision's rule is unknown; ties: the lowest version, listed first)."""
    served = [row for row in group if row["role"] == PRIMARY and row["requests"] > 0]
    if not served:
        return None
    weights = {} if rule is None else {s.version: s.weight for s in rule.split}
    return max(served, key=lambda row: (weights.get(row["version"], -1), row["requests"]))


def _buckets(row: Mapping[str, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in row["latency_buckets"].items()}


def _difference(row: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Row minus baseline: error rate in percentage points (every status counted, as the
    `errors` column counts them), latency quantiles in ms (from the latency buckets)."""
    error = None
    if row["requests"] and baseline["requests"]:
        error = rate_difference(
            sum(row["errors"].values()), row["requests"],
            sum(baseline["errors"].values()), baseline["requests"],
        ).scaled(100.0).to_json()  # fmt: skip
    ours, theirs = _buckets(row), _buckets(baseline)
    latency: dict[str, Any] = {}
    for q, found in quantile_differences(ours, theirs, QUANTILES).items():
        latency[f"p{round(q * 100)}"] = None if found is None else found.scaled(1000.0).to_json()
    ranks = mann_whitney(ours, theirs)
    return {
        "against": baseline["version"],
        "error_rate_points": error,
        "latency_ms": latency,
        "latency_rank_test": None if ranks is None else {
            "u": ranks.u, "probability_slower": ranks.a_larger, "p_value": ranks.p_value,
            "significant": ranks.significant,
        },
    }  # fmt: skip

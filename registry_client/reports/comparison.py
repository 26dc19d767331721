"""A model's versions side by side, as a data scientist judges a canary or a shadow before
promoting it: share against the rule, requests, errors, latency, agreement with the primary,
registered and live metrics, and each version's difference from the baseline with 95%
intervals. Built from the registry for `gatectl compare` and the gateway's status pages.

Without a window asked for, the comparison covers the current rule revision only: the time
since it took effect and the traffic it routed, so a share is never measured against a rule
that did not route it. A window asked for may span several revisions: each row is then one
(version, role, revision), compared with the baseline of its own revision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from registry_client.cli.quality_window import HEADLINE_METRICS
from registry_client.client import RegistryClient
from registry_client.errors import NotFound
from registry_client.quality.report import minutes_of, read_range
from registry_client.records.rule_documents import RouteRule
from registry_client.reports._differences import attach_differences
from registry_client.reports._revisions import Revision, revisions_of, took_effect_at
from registry_client.reports._rows import (
    IDLE,
    PRIMARY,
    SHADOW,
    ShareBase,
    live_quality,
    registered_metrics,
    row_of,
)
from registry_client.schema import version_sort_key
from registry_client.stats.window import WINDOW_SECONDS, RevisionKey, VersionStats

__all__ = ["DEFAULT_SINCE_SECONDS", "MAX_SPAN_SECONDS", "REVISION", "SINCE", "compare_versions"]

REVISION, SINCE = "revision", "since"  # what a report's window is: a rule revision, or asked
DEFAULT_SINCE_SECONDS = 900.0  # the window of a model without a dated rule
MAX_SPAN_SECONDS = 7 * 86400.0  # as far back as --since reaches


@dataclass(frozen=True, slots=True)
class _Scope:
    kind: str  # REVISION or SINCE
    start: float  # Unix seconds: the windows read begin with the one it falls in
    seconds: float  # how far back, as the report tells it
    revision: int | None = None  # only this revision's traffic
    took_effect_at: float | None = None


def _iso(unix_seconds: float | None) -> str | None:
    return None if unix_seconds is None else datetime.fromtimestamp(
        unix_seconds, UTC).isoformat(timespec="seconds")  # fmt: skip


def _scope(
    client: RegistryClient, rule: RouteRule | None, since_seconds: float | None, now: float
) -> _Scope:
    if since_seconds is not None or rule is None:
        seconds = DEFAULT_SINCE_SECONDS if since_seconds is None else since_seconds
        return _Scope(SINCE, now - max(seconds, WINDOW_SECONDS) + 1, seconds)
    at = took_effect_at(client, rule)
    if at is None:  # undated: the revision's traffic of the default window
        start = now - DEFAULT_SINCE_SECONDS + 1
        return _Scope(REVISION, start, DEFAULT_SINCE_SECONDS, rule.revision)
    start = min(max(at, now - MAX_SPAN_SECONDS), now)  # a clock behind the writer's: now
    return _Scope(REVISION, start, now - start, rule.revision, at)


def compare_versions(
    client: RegistryClient, model: str, versions: Sequence[str] = (),
    since_seconds: float | None = None, now: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The report of the model's versions (all that served or that the rule names, or the
    ones asked for): over the last `since_seconds`, or without it over the current rule
    revision. NotFound for a model or version not registered; Unreachable when Redis does not
    answer."""
    info = client.show_model(model)
    registered = info["versions"]
    unknown = [v for v in versions if v not in registered]
    if unknown:
        raise NotFound(f"model {model!r} has no version {', '.join(map(repr, unknown))}"
                       f" (registered: {', '.join(registered) or 'none'})")  # fmt: skip
    rule = client.get_route(model)
    now = time.time() if now is None else now
    scope = _scope(client, rule, since_seconds, now)
    merged = client.stats.read_span(model, scope.start, now)
    found: dict[RevisionKey, VersionStats] = dict(merged.by_revision)
    unknown_revision = 0
    if scope.kind == REVISION:
        unknown_revision = sum(s.requests for (_, _, r), s in found.items() if r is None)
        found = {key: stats for key, stats in found.items() if key[2] == scope.revision}
    revisions = revisions_of(client, model, rule, {r for _, _, r in found if r is not None})
    _add_idle(found, rule, versions, scope.revision)
    wanted = set(versions) or set(registered) | {v for v, _, _ in found}
    base = ShareBase(merged)
    rows = []
    for (version, role, revision), stats in sorted(found.items(), key=_order):
        known = None if revision is None else revisions.get(revision)
        rows.append(row_of(stats, base.of(version, role, revision),
                           None if known is None else known.rule,
                           registered_metrics(client, model, version)))  # fmt: skip
    attach_differences(rows, revisions)  # before filtering: a baseline not asked for counts
    rows = [row for row in rows if row["version"] in wanted]
    # An unreadable config is shown by `model show`; compare still answers without it.
    task = info["quality"].get("task") if isinstance(info.get("quality"), dict) else None
    if task in HEADLINE_METRICS:
        live = read_range(client.quality, client.predictions, model,
                          *minutes_of(scope.seconds, now))  # fmt: skip
        for row in rows:
            row["quality"] = live_quality(live, HEADLINE_METRICS[task], row["version"],
                                          row["role"])  # fmt: skip
    shown = sorted({row["revision"] for row in rows if row["revision"] is not None})
    return {
        "model": model,
        "scope": scope.kind,
        "since_seconds": scope.seconds,
        "from": _iso(scope.start if scope.took_effect_at is not None else
                     merged.first_window * WINDOW_SECONDS),
        "to": _iso(now),
        "rule_revision": None if rule is None else rule.revision,
        "revision_took_effect_at": _iso(scope.took_effect_at),
        "revisions": [_revision_json(r, revisions.get(r)) for r in shown],
        "unknown_revision_requests": unknown_revision,
        "replicas": sorted(merged.replicas),
        "unreadable_windows": merged.unreadable,
        "quality_task": task if task in HEADLINE_METRICS else None,
        "versions": rows,
    }  # fmt: skip


def _add_idle(found: dict[RevisionKey, VersionStats], rule: RouteRule | None,
              versions: Sequence[str], revision: int | None) -> None:  # fmt: skip
    """Rows for the versions the rule names that served nothing yet (under the current
    revision), and for the versions asked for that served nothing at all."""
    served = {(version, role) for version, role, _ in found}
    if rule is not None:
        named = [(s.version, PRIMARY) for s in rule.split]
        named += [(s.version, SHADOW) for s in rule.shadows]
        for version, role in named:
            if (version, role) not in served:
                found[version, role, rule.revision] = VersionStats(
                    version, role, revision=rule.revision
                )
    for version in set(versions) - {v for v, _ in served} - {v for v, _, _ in found}:
        found[version, IDLE, revision] = VersionStats(version, IDLE, revision=revision)


def _order(item: tuple[RevisionKey, VersionStats]) -> tuple[Any, ...]:
    """Newest revision first (unknown last), primaries before shadows, by version."""
    version, role, revision = item[0]
    return (revision is None, -(revision or 0), role != PRIMARY, version_sort_key(version))


def _revision_json(revision: int, known: Revision | None) -> dict[str, Any]:
    """A revision the rows show: what its rule served and when it was written."""
    if known is None:  # gone from the audit
        return {"revision": revision, "written_at": None, "split": None, "shadows": None}
    rule = known.rule
    return {"revision": revision, "written_at": _iso(known.written_at),
            "split": {s.version: s.weight for s in rule.split},
            "shadows": {s.version: s.percent for s in rule.shadows}}  # fmt: skip

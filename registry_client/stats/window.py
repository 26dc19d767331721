"""Per-version request statistics of one 1-minute window: the format gateways write and
readers merge.

Each gateway replica overwrites its own cumulative state of a window (one hash field per
replica), so a retried flush never counts twice; readers merge replicas and windows. Requests
are counted per (version, role) and per revision of the route rule that routed them: one
entry each, with a `revision` field (absent in windows written before it was kept, read as
None). The format number stays 1: a reader that does not know the field adds a version's
entries up, as it adds up replicas, so gateways and gatectl of either side of an upgrade read
each other's windows. Latency
is a t-digest (Apache DataSketches): mergeable, and accurate at the tail quantiles a latency
table is read for, where a rank-error sketch such as KLL drifts by whole percentiles.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datasketches import tdigest_double

from registry_client.records.values import read_versioned

__all__ = [
    "WINDOW_SECONDS",
    "Comparison",
    "RevisionKey",
    "StatsFormatError",
    "VersionStats",
    "bucket_quantile",
    "decode_window",
    "encode_window",
    "latency_bucket",
    "merge_by_revision",
    "merge_into",
    "window_of",
]

WINDOW_SECONDS = 60
FORMAT = 1
TDIGEST_K = 100  # about 1% error at p99, a few kB per version and window
# Latency is also counted in fixed log-spaced buckets (8 per doubling from 25 us: within 9% of
# any value up to an hour): unlike a t-digest, two cumulative bucket counts can be subtracted,
# so a rollout judges the p99 of exactly its interval, as Prometheus' histogram_quantile does.
BUCKET_BASE_SECONDS = 25e-6
BUCKETS_PER_DOUBLING = 8
MAX_BUCKET = 8 * 28


def latency_bucket(seconds: float) -> int:
    """The bucket of a latency: bucket i holds [base * 2**(i/8), base * 2**((i+1)/8))."""
    if seconds <= BUCKET_BASE_SECONDS:
        return 0
    return min(int(math.log2(seconds / BUCKET_BASE_SECONDS) * BUCKETS_PER_DOUBLING), MAX_BUCKET)


def bucket_quantile(buckets: Mapping[int, int], q: float) -> float | None:
    """The q-quantile of bucketed latencies, interpolated geometrically inside its bucket."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index in sorted(buckets):
        count = buckets[index]
        if count > 0 and seen + count >= rank:
            within = (rank - seen) / count
            return BUCKET_BASE_SECONDS * 2 ** ((index + within) / BUCKETS_PER_DOUBLING)
        seen += count
    return BUCKET_BASE_SECONDS * 2 ** ((max(buckets) + 1) / BUCKETS_PER_DOUBLING)


class StatsFormatError(ValueError):
    """A stored window that this version of the format cannot read."""


def window_of(unix_seconds: float) -> int:
    """The window (minutes since the Unix epoch) a moment falls in."""
    return int(unix_seconds // WINDOW_SECONDS)


@dataclass(slots=True)
class Comparison:
    """A shadow's outputs against the primary's, for one (primary version, output)."""

    primary: str
    output: str
    rows: int = 0  # class-score rows whose argmax was compared
    agreeing_rows: int = 0
    abs_diff_sum: float = 0.0  # over every compared element, so the mean is exact when merged
    elements: int = 0
    max_abs_diff: float = 0.0

    @property
    def agreement(self) -> float | None:
        return self.agreeing_rows / self.rows if self.rows else None

    @property
    def mean_abs_diff(self) -> float | None:
        return self.abs_diff_sum / self.elements if self.elements else None

    def merge(self, other: Comparison) -> None:
        self.rows += other.rows
        self.agreeing_rows += other.agreeing_rows
        self.abs_diff_sum += other.abs_diff_sum
        self.elements += other.elements
        self.max_abs_diff = max(self.max_abs_diff, other.max_abs_diff)


@dataclass(slots=True)
class VersionStats:
    """Requests of one (version, role): count, errors by status code, latency of the
    successful ones, and for a shadow its comparisons with the primary. `revision`: the rule
    revision that routed them; None when unknown (an older gateway's window) or when merged
    over several revisions."""

    version: str
    role: str
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: tdigest_double = field(default_factory=lambda: tdigest_double(TDIGEST_K))
    latency_buckets: dict[int, int] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], Comparison] = field(default_factory=dict)
    revision: int | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def record(self, code: str, seconds: float | None) -> None:
        """One finished request: `code` is its gRPC status name, `seconds` its latency."""
        self.requests += 1
        if code != "OK":
            self.errors[code] = self.errors.get(code, 0) + 1
        elif seconds is not None:
            self.latency.update(seconds)
            bucket = latency_bucket(seconds)
            self.latency_buckets[bucket] = self.latency_buckets.get(bucket, 0) + 1

    def comparison(self, primary: str, output: str) -> Comparison:
        key = (primary, output)
        found = self.comparisons.get(key)
        if found is None:
            found = self.comparisons[key] = Comparison(primary, output)
        return found

    def quantile(self, q: float) -> float | None:
        return None if self.latency.is_empty() else float(self.latency.get_quantile(q))

    def merge(self, other: VersionStats) -> None:
        self.requests += other.requests
        for code, count in other.errors.items():
            self.errors[code] = self.errors.get(code, 0) + count
        if not other.latency.is_empty():
            self.latency.merge(other.latency)
        for bucket, count in other.latency_buckets.items():
            self.latency_buckets[bucket] = self.latency_buckets.get(bucket, 0) + count
        for (primary, output), compared in other.comparisons.items():
            self.comparison(primary, output).merge(compared)

    def to_json(self) -> dict[str, Any]:
        revision = {} if self.revision is None else {"revision": self.revision}
        return {
            **revision,
            "version": self.version,
            "role": self.role,
            "requests": self.requests,
            "errors": dict(sorted(self.errors.items())),
            "latency": base64.b64encode(self.latency.serialize()).decode("ascii"),
            "latency_buckets": {str(k): v for k, v in sorted(self.latency_buckets.items())},
            "comparisons": [
                {
                    "primary": c.primary,
                    "output": c.output,
                    "rows": c.rows,
                    "agreeing_rows": c.agreeing_rows,
                    "abs_diff_sum": c.abs_diff_sum,
                    "elements": c.elements,
                    "max_abs_diff": c.max_abs_diff,
                }
                for c in self.comparisons.values()
            ],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> VersionStats:
        try:
            stats = cls(str(doc["version"]), str(doc["role"]), int(doc["requests"]))
            stats.revision = _revision(doc.get("revision"))
            stats.errors = {str(k): int(v) for k, v in doc["errors"].items()}
            sketch = base64.b64decode(doc["latency"], validate=True)
            stats.latency = tdigest_double.deserialize(sketch)
            # absent in windows written before buckets were kept: those have none
            buckets = doc.get("latency_buckets", {})
            stats.latency_buckets = {int(k): int(v) for k, v in buckets.items()}
            for c in doc["comparisons"]:
                compared = stats.comparison(str(c["primary"]), str(c["output"]))
                compared.rows = int(c["rows"])
                compared.agreeing_rows = int(c["agreeing_rows"])
                compared.abs_diff_sum = float(c["abs_diff_sum"])
                compared.elements = int(c["elements"])
                compared.max_abs_diff = float(c["max_abs_diff"])
        # The sketch library reports truncated or foreign bytes as IndexError/RuntimeError.
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError,
                binascii.Error) as exc:  # fmt: skip
            raise StatsFormatError(f"malformed version statistics: {exc!r}") from exc
        return stats


def _revision(value: object) -> int | None:
    """A stored entry's rule revision: absent (None) or a non-negative integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"revision: expected a non-negative integer, got {value!r}")
    return value


def encode_window(stats: Iterable[VersionStats]) -> str:
    """One replica's cumulative state of one model's window."""
    return json.dumps({"format": FORMAT, "stats": [s.to_json() for s in stats]})


def decode_window(payload: str | bytes) -> list[VersionStats]:
    doc = read_versioned(payload, FORMAT, "statistics window", StatsFormatError)
    stats = doc.get("stats")
    if not isinstance(stats, list):
        raise StatsFormatError("window has no 'stats' list")
    return [VersionStats.from_json(s) for s in stats]


def merge_into(merged: dict[tuple[str, str], VersionStats], stats: Iterable[VersionStats]) -> None:
    """Add windows or replicas into `merged`, keyed by (version, role): every revision's
    requests together (the merged entry's revision is None)."""
    for item in stats:
        key = (item.version, item.role)
        if key not in merged:
            merged[key] = VersionStats(item.version, item.role)
        merged[key].merge(item)


RevisionKey = tuple[str, str, int | None]


def merge_by_revision(
    merged: dict[RevisionKey, VersionStats], stats: Iterable[VersionStats]
) -> None:
    """Add windows or replicas into `merged`, keyed by (version, role, revision)."""
    for item in stats:
        key = (item.version, item.role, item.revision)
        if key not in merged:
            merged[key] = VersionStats(item.version, item.role, revision=item.revision)
        merged[key].merge(item)

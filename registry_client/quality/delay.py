"""How long labels take to arrive after their prediction: a histogram kept beside each quality
state, so a report can say how complete a recent window's labels are likely to be.

The buckets are fixed and log-spaced (4 per doubling from 1 s: within 19% of any delay, up to
about 30 days, longer delays in the last bucket), so histograms merge exactly by addition and
a row's delay is taken back with a negative weight like the row itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from registry_client.quality._codec import bump, compact, finite, merge_cells, read_bins

__all__ = [
    "DELAY_BASE_SECONDS",
    "DELAY_BUCKETS_PER_DOUBLING",
    "MAX_DELAY_BUCKET",
    "DelayHistogram",
    "delay_bucket",
]

DELAY_BASE_SECONDS = 1.0
DELAY_BUCKETS_PER_DOUBLING = 4
# 2**(85/4) s is 29.5 days: bucket 85 ends at 34 days; the last bucket holds anything longer.
MAX_DELAY_BUCKET = 86


def delay_bucket(seconds: float) -> int:
    """Bucket i holds [2**(i/4), 2**((i+1)/4)) seconds; bucket 0 also holds anything shorter
    (a negative delay is clock skew between prediction and label sources)."""
    if seconds <= DELAY_BASE_SECONDS:
        return 0
    doublings = math.log2(seconds / DELAY_BASE_SECONDS)
    return min(int(doublings * DELAY_BUCKETS_PER_DOUBLING), MAX_DELAY_BUCKET)


def _bucket_start(position: float) -> float:
    return DELAY_BASE_SECONDS * 2 ** (position / DELAY_BUCKETS_PER_DOUBLING)


@dataclass(slots=True)
class DelayHistogram:
    """Weighted label delays in fixed log-spaced buckets."""

    buckets: dict[int, float] = field(default_factory=dict)

    def add(self, seconds: float, weight: float = 1.0) -> None:
        bump(self.buckets, delay_bucket(finite("delay_seconds", seconds)), weight)

    def merge(self, other: DelayHistogram) -> None:
        merge_cells(self.buckets, other.buckets)

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds, interpolated geometrically inside its bucket; None when
        there is no (positive) weight."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r} is not in [0, 1]")
        # A writer's state may hold a take-back whose row another writer counted: skip the
        # negative cells rather than report a rank inside them.
        total = sum(w for w in self.buckets.values() if w > 0)
        if total <= 0:
            return None
        rank = q * total
        seen = 0.0
        for index in sorted(self.buckets):
            weight = self.buckets[index]
            if weight > 0 and seen + weight >= rank:
                return _bucket_start(index + (rank - seen) / weight)
            seen += max(weight, 0.0)
        return _bucket_start(max(self.buckets) + 1)

    def to_json(self) -> dict[str, float | int]:
        return {str(k): compact(v) for k, v in sorted(self.buckets.items())}

    @classmethod
    def from_json(cls, doc: object, name: str = "d") -> DelayHistogram:
        """QualityFormatError names `name`, the field that held the histogram."""
        return cls(read_bins({name: doc}, name, MAX_DELAY_BUCKET + 1))

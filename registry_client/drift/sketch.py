"""Per-feature input sketches: what gateways write per window and readers merge.

Per feature: a KLL quantile sketch (Apache DataSketches, k=200: about 1.3% rank error at 99%
confidence) over the finite values, their count, sum, sum of squares, min and max, the count of
missing values (NaN and +-inf), and, when the version has a reference profile, an exact
histogram on the reference's quantile bins plus the values below its minimum and above its
maximum. Histograms merge exactly by addition, so PSI and out-of-range mass carry no sketch
error; they are kept only for the bins they were counted on (`bins_id`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch

from registry_client.records.values import read_versioned

__all__ = [
    "KLL_K",
    "QUANTILE_LEVELS",
    "TRANSPORT_LEVELS",
    "FeatureSketch",
    "SketchFormatError",
    "decode_sketches",
    "encode_sketches",
    "merge_sketches",
    "share_below",
]

KLL_K = 200
FORMAT = 1
MIXED_BINS = "mixed"
# The reference's bin edges: quantiles 0.005, 0.05, 0.10 ... 0.95, 0.995.
QUANTILE_LEVELS = (0.005, 0.05, *(round(0.1 * i, 1) for i in range(1, 10)), 0.95, 0.995)
# The midpoints of 200 equal rank slices: the Wasserstein distance is the mean gap between two
# distributions' quantiles at these levels.
TRANSPORT_LEVELS = tuple((i + 0.5) / 200 for i in range(200))


class SketchFormatError(ValueError):
    """A stored sketch this version of the format cannot read."""


def _empty_kll() -> Any:
    return kll_floats_sketch(KLL_K)


@dataclass(slots=True)
class FeatureSketch:
    """One feature's values of one window (or a merge of windows and replicas)."""

    kll: Any = field(default_factory=_empty_kll)
    count: int = 0  # values seen, missing ones included
    missing: int = 0  # NaN or +-inf
    total: float = 0.0  # over finite values
    total_squares: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    bins_id: str = ""  # which reference bins `histogram` was counted on; "" = none
    histogram: np.ndarray | None = None  # len(edges) + 1 counts, finite values only
    below: int = 0  # finite values under the reference's minimum
    above: int = 0  # and over its maximum

    @property
    def finite(self) -> int:
        return self.count - self.missing

    @property
    def mean(self) -> float | None:
        return self.total / self.finite if self.finite else None

    @property
    def std(self) -> float | None:
        if not self.finite:
            return None
        mean = self.total / self.finite
        return math.sqrt(max(self.total_squares / self.finite - mean * mean, 0.0))

    def update(self, values: np.ndarray, bins: ReferenceBins | None = None) -> None:
        """Fold a column of values in, vectorised."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = values[np.isfinite(values)]
        first = self.finite == 0
        self.count += values.size
        self.missing += values.size - finite.size
        if not finite.size:
            return
        self.kll.update(finite.astype(np.float32))
        self.total += float(finite.sum())
        self.total_squares += float(np.square(finite).sum())
        self.minimum = min(self.minimum, float(finite.min()))
        self.maximum = max(self.maximum, float(finite.max()))
        bins_id = "" if bins is None else bins.bins_id
        if first and bins is not None:
            self.bins_id, self.below, self.above = bins.bins_id, 0, 0
            self.histogram = np.zeros(len(bins.edges) + 1, np.int64)
        elif self.bins_id != bins_id:  # part of the window was counted on other bins
            self._drop_histogram()
        if bins is not None and self.histogram is not None:
            index = np.searchsorted(bins.edges, finite, side="right")
            self.histogram += np.bincount(index, minlength=self.histogram.size)
            self.below += int(np.count_nonzero(finite < bins.minimum))
            self.above += int(np.count_nonzero(finite > bins.maximum))

    def _drop_histogram(self) -> None:
        """The histogram no longer covers every finite value: the KLL answers instead."""
        self.bins_id, self.histogram, self.below, self.above = MIXED_BINS, None, 0, 0

    def merge(self, other: FeatureSketch) -> None:
        was_empty = self.finite == 0
        if not other.kll.is_empty():
            self.kll.merge(other.kll)
        self.count += other.count
        self.missing += other.missing
        self.total += other.total
        self.total_squares += other.total_squares
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        if other.finite == 0:
            return
        if was_empty:
            self.bins_id, self.below, self.above = other.bins_id, other.below, other.above
            self.histogram = None if other.histogram is None else other.histogram.copy()
        elif (self.bins_id == other.bins_id and self.histogram is not None
              and other.histogram is not None):  # fmt: skip
            self.histogram = self.histogram + other.histogram
            self.below += other.below
            self.above += other.above
        elif self.bins_id or other.bins_id:
            self._drop_histogram()

    def to_json(self) -> dict[str, Any]:
        return {
            "kll": base64.b64encode(self.kll.serialize()).decode("ascii"),
            "count": self.count,
            "missing": self.missing,
            "total": self.total,
            "total_squares": self.total_squares,
            "minimum": self.minimum if self.finite else None,
            "maximum": self.maximum if self.finite else None,
            "bins_id": self.bins_id,
            "histogram": None if self.histogram is None else self.histogram.tolist(),
            "below": self.below,
            "above": self.above,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FeatureSketch:
        try:
            sketch = cls(
                kll=kll_floats_sketch.deserialize(base64.b64decode(doc["kll"], validate=True)),
                count=int(doc["count"]),
                missing=int(doc["missing"]),
                total=float(doc["total"]),
                total_squares=float(doc["total_squares"]),
                minimum=math.inf if doc["minimum"] is None else float(doc["minimum"]),
                maximum=-math.inf if doc["maximum"] is None else float(doc["maximum"]),
                bins_id=str(doc["bins_id"]),
                below=int(doc["below"]),
                above=int(doc["above"]),
            )
            if doc["histogram"] is not None:
                sketch.histogram = np.asarray(doc["histogram"], dtype=np.int64)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError,
                binascii.Error) as exc:  # fmt: skip
            raise SketchFormatError(f"malformed feature sketch: {exc!r}") from exc
        return sketch


@dataclass(frozen=True, slots=True)
class ReferenceBins:
    """The bins a gateway counts a feature's histogram on, from its reference profile."""

    bins_id: str
    edges: np.ndarray  # ascending quantile edges (QUANTILE_LEVELS of the reference)
    minimum: float
    maximum: float


def share_below(kll: Any, points: np.ndarray) -> np.ndarray:
    """P(X < p) for each point, read from a KLL sketch; points may repeat (discrete data)."""
    unique = np.unique(points)
    below = np.asarray(kll.get_cdf(list(unique), False)[:-1], dtype=np.float64)
    return below[np.searchsorted(unique, points)]


def encode_sketches(rows: int, features: Mapping[str, FeatureSketch]) -> str:
    """One replica's cumulative sketches of one (model, version) window."""
    return json.dumps({"format": FORMAT, "rows": rows,
                       "features": {n: s.to_json() for n, s in features.items()}})  # fmt: skip


def decode_sketches(payload: str | bytes) -> tuple[int, dict[str, FeatureSketch]]:
    doc = read_versioned(payload, FORMAT, "sketch window", SketchFormatError)
    features = doc.get("features")
    if not isinstance(features, dict):
        raise SketchFormatError("sketch window has no 'features' object")
    return int(doc.get("rows", 0)), {
        str(n): FeatureSketch.from_json(s) for n, s in features.items()
    }


def merge_sketches(
    merged: dict[str, FeatureSketch], features: Iterable[tuple[str, FeatureSketch]]
) -> None:
    """Add sketches into `merged`, by feature name."""
    for name, sketch in features:
        if name not in merged:
            merged[name] = FeatureSketch()
        merged[name].merge(sketch)

"""Reference profiles: what a version's inputs looked like in training (or in a traffic window)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasketches import kll_floats_sketch

from registry_client.drift.sketch import (
    QUANTILE_LEVELS,
    TRANSPORT_LEVELS,
    FeatureSketch,
    ReferenceBins,
    SketchFormatError,
    share_below,
)

__all__ = ["FeatureReference"]


def _bins_id(edges: np.ndarray, minimum: float, maximum: float) -> str:
    raw = np.asarray([*edges, minimum, maximum], dtype=np.float64).tobytes()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _sketch_transport(kll: Any) -> np.ndarray:
    return np.asarray(kll.get_quantiles(list(TRANSPORT_LEVELS)), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class FeatureReference:
    """One feature's reference: quantile bin edges, the share of values in each bin and the
    quantiles at TRANSPORT_LEVELS (all exact when built from data), a KLL sketch for KS, missing
    rate, range. Exact quantiles leave the Wasserstein distance with one sketch's error, not two:
    with two, its error reached 0.07 standard deviations, half its warning line."""

    kll: Any
    count: int
    missing: int
    edges: np.ndarray  # the QUANTILE_LEVELS quantiles, ascending
    bin_mass: np.ndarray  # share of finite values per bin (len(edges) + 1), sums to 1
    minimum: float
    maximum: float
    mean: float
    std: float
    transport: np.ndarray  # the TRANSPORT_LEVELS quantiles, ascending

    @property
    def finite(self) -> int:
        return self.count - self.missing

    @property
    def missing_rate(self) -> float:
        return self.missing / self.count if self.count else 0.0

    @property
    def bins(self) -> ReferenceBins:
        return ReferenceBins(_bins_id(self.edges, self.minimum, self.maximum), self.edges,
                             self.minimum, self.maximum)  # fmt: skip

    @classmethod
    def from_values(cls, values: np.ndarray) -> FeatureReference | None:
        """Exact edges and bin shares from data; None when no value is finite."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = values[np.isfinite(values)]
        if not finite.size:
            return None
        sketch = FeatureSketch()
        sketch.update(finite)
        edges = np.quantile(finite, QUANTILE_LEVELS)
        index = np.searchsorted(edges, finite, side="right")
        mass = np.bincount(index, minlength=len(edges) + 1) / finite.size
        return cls(sketch.kll, values.size, values.size - finite.size, edges, mass,
                   float(finite.min()), float(finite.max()), float(finite.mean()),
                   float(finite.std()), np.quantile(finite, TRANSPORT_LEVELS))  # fmt: skip

    @classmethod
    def from_sketch(cls, sketch: FeatureSketch) -> FeatureReference | None:
        """Edges and bin shares read from a sketch (within its rank error)."""
        if sketch.finite == 0:
            return None
        edges = np.asarray(sketch.kll.get_quantiles(list(QUANTILE_LEVELS)), dtype=np.float64)
        below_each_edge = share_below(sketch.kll, edges)
        mass = np.diff(np.concatenate([[0.0], below_each_edge, [1.0]]))
        mean, std = sketch.mean, sketch.std
        assert mean is not None and std is not None
        transport = _sketch_transport(sketch.kll)
        return cls(sketch.kll, sketch.count, sketch.missing, edges, np.clip(mass, 0.0, 1.0),
                   sketch.minimum, sketch.maximum, mean, std, transport)  # fmt: skip

    def to_json(self) -> str:
        return json.dumps({
            "kll": base64.b64encode(self.kll.serialize()).decode("ascii"),
            "count": self.count, "missing": self.missing, "edges": self.edges.tolist(),
            "bin_mass": self.bin_mass.tolist(), "minimum": self.minimum,
            "maximum": self.maximum, "mean": self.mean, "std": self.std,
            "transport": self.transport.tolist(),
        })  # fmt: skip

    @classmethod
    def from_json(cls, payload: str | bytes) -> FeatureReference:
        try:
            doc: Mapping[str, Any] = json.loads(payload)
            edges = np.asarray(doc["edges"], dtype=np.float64)
            mass = np.asarray(doc["bin_mass"], dtype=np.float64)
            if edges.shape != (len(QUANTILE_LEVELS),) or mass.shape != (len(edges) + 1,):
                raise ValueError("edges or bin_mass have the wrong length")
            kll = kll_floats_sketch.deserialize(base64.b64decode(doc["kll"], validate=True))
            # References stored before the exact quantiles were kept read them from the sketch.
            transport = (np.asarray(doc["transport"], dtype=np.float64) if "transport" in doc
                         else _sketch_transport(kll))  # fmt: skip
            if transport.shape != (len(TRANSPORT_LEVELS),):
                raise ValueError("transport has the wrong length")
            return cls(kll, int(doc["count"]), int(doc["missing"]), edges, mass,
                       float(doc["minimum"]), float(doc["maximum"]), float(doc["mean"]),
                       float(doc["std"]), transport)  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError,
                binascii.Error) as exc:  # fmt: skip
            raise SketchFormatError(f"malformed reference: {exc!r}") from exc

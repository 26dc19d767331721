"""The additive state of joined (prediction, label) rows for one (model, version, role, segment
dimension, segment value, window): what writers keep cumulatively and readers merge.

Everything is a weighted sum, so states merge by addition across writers and windows, and a
row is taken back by adding it again with the opposite weight (a second label for the same
prediction replaces the first). Counts and histogram cells are sums of the weights, so for
integer weights they return exactly to what they were; a cell whose weight becomes exactly 0
is dropped, and a state left with no cells has its float sums reset, so an emptied state
serialises as a fresh one. Binary scores are kept in 2000 fixed bins per class: AUC and
average precision come from them with no error beyond ties within a bin (width 1/2000), and
calibration error from 10 coarse bins of 200 fine ones.
"""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from registry_client.quality._codec import (
    QualityFormatError,
    Sums,
    bump,
    class_index,
    compact,
    finite,
    merge_cells,
    read_bins,
    read_cells,
    read_kind,
    read_rows,
)
from registry_client.quality.delay import DelayHistogram

__all__ = [
    "CALIBRATION_BINS", "MAX_CLASSES", "SCORE_BINS", "BinaryState", "DelayHistogram",
    "MulticlassState", "QualityFormatError", "QualityState", "RegressionState", "StateKey",
    "decode_states", "encode_states", "new_state", "score_bin", "state_from_json",
]  # fmt: skip

FORMAT = 1
SCORE_BINS = 2000
CALIBRATION_BINS = 10
FINE_PER_COARSE = SCORE_BINS // CALIBRATION_BINS
MAX_CLASSES = 64
# sklearn (1.9) clips log-loss probabilities to the machine epsilon of their dtype, float64.
PROBABILITY_EPS = sys.float_info.epsilon

StateKey = tuple[str, str, str, str]  # (version, role, segment dimension, segment value)


def score_bin(score: float) -> int:
    """The fine bin of a score in [0, 1]."""
    return min(int(score * SCORE_BINS), SCORE_BINS - 1)


@dataclass(slots=True)
class BinaryState(Sums):
    """Joined rows of a binary classifier: the confusion counts at its decision threshold,
    per-class score histograms, and the sums behind Brier score, log loss and calibration."""

    KIND: ClassVar[str] = "binary"
    SUMS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("tp", "tp"), ("fp", "fp"), ("tn", "tn"), ("fn", "fn"), ("sum_brier", "br"),
        ("sum_log_loss", "ll"), ("sum_score", "s"), ("sum_label", "y"), ("n", "n"),
    )  # fmt: skip

    tp: float = 0.0
    fp: float = 0.0
    tn: float = 0.0
    fn: float = 0.0
    positives: dict[int, float] = field(default_factory=dict)  # fine score bin -> weight
    negatives: dict[int, float] = field(default_factory=dict)
    score_sums: dict[int, float] = field(default_factory=dict)  # coarse bin -> sum of w*score
    sum_brier: float = 0.0
    sum_log_loss: float = 0.0
    sum_score: float = 0.0
    sum_label: float = 0.0
    n: float = 0.0
    delays: DelayHistogram = field(default_factory=DelayHistogram)

    def add(
        self,
        score: float,
        label: int,
        weight: float = 1.0,
        threshold: float = 0.5,
        delay_seconds: float = 0.0,
    ) -> None:
        """One row, predicted positive when score >= threshold (the same threshold for every
        row of a state). A score outside [0, 1] is clipped; a negative weight takes back a row
        added before with the same values."""
        s = min(max(finite("score", score), 0.0), 1.0)
        y = operator.index(label)
        if y not in (0, 1):
            raise ValueError(f"label {label!r} is not 0 or 1")
        w = finite("weight", weight)
        if w == 0.0:
            return
        count = ("tp" if y else "fp") if s >= threshold else ("fn" if y else "tn")
        setattr(self, count, getattr(self, count) + w)
        fine = score_bin(s)
        bump(self.positives if y else self.negatives, fine, w)
        bump(self.score_sums, fine // FINE_PER_COARSE, w * s)
        p = min(max(s, PROBABILITY_EPS), 1.0 - PROBABILITY_EPS)
        self.sum_brier += w * (s - y) ** 2
        self.sum_log_loss -= w * math.log(p if y else 1.0 - p)
        self.sum_score += w * s
        self.sum_label += w * y
        self.n += w
        self.delays.add(delay_seconds, w)
        if w < 0.0:
            self._settle(fine // FINE_PER_COARSE)

    def _settle(self, coarse: int) -> None:
        # Float sums need not return exactly to zero after a take-back; once no row is left
        # in a coarse bin (or at all) its sums are zero by definition.
        lo, hi = coarse * FINE_PER_COARSE, (coarse + 1) * FINE_PER_COARSE
        if not any(b in self.positives or b in self.negatives for b in range(lo, hi)):
            self.score_sums.pop(coarse, None)
        if not self.positives and not self.negatives:
            self._zero_sums()

    def merge(self, other: BinaryState) -> None:
        """Add `other` into this state (in place)."""
        self._merge_sums(other)
        merge_cells(self.positives, other.positives)
        merge_cells(self.negatives, other.negatives)
        merge_cells(self.score_sums, other.score_sums)
        self.delays.merge(other.delays)

    def to_json(self) -> dict[str, object]:
        def cells(bins: dict[int, float]) -> dict[str, float | int]:
            return {str(k): compact(v) for k, v in sorted(bins.items())}

        return {"k": self.KIND, **self._sums_json(), "pos": cells(self.positives),
                "neg": cells(self.negatives), "ss": cells(self.score_sums),
                "d": self.delays.to_json()}  # fmt: skip

    @classmethod
    def from_json(cls, doc: object) -> BinaryState:
        """QualityFormatError names the malformed field."""
        d = read_kind(doc, cls.KIND)
        return cls(
            **cls._read_sums(d),
            positives=read_bins(d, "pos", SCORE_BINS),
            negatives=read_bins(d, "neg", SCORE_BINS),
            score_sums=read_bins(d, "ss", CALIBRATION_BINS),
            delays=DelayHistogram.from_json(d.get("d"), "d"),
        )


@dataclass(slots=True)
class MulticlassState(Sums):
    """Joined rows of a classifier over class indices [0, MAX_CLASSES): the weighted
    confusion matrix, cell (true, predicted)."""

    KIND: ClassVar[str] = "multiclass"
    SUMS: ClassVar[tuple[tuple[str, str], ...]] = (("n", "n"),)

    confusion: dict[tuple[int, int], float] = field(default_factory=dict)
    n: float = 0.0
    delays: DelayHistogram = field(default_factory=DelayHistogram)

    def add(
        self, predicted: int, label: int, weight: float = 1.0, delay_seconds: float = 0.0
    ) -> None:
        """One row; ValueError names the field whose class index is outside [0, 64)."""
        true = class_index("label", label, MAX_CLASSES)
        cell = (true, class_index("predicted", predicted, MAX_CLASSES))
        w = finite("weight", weight)
        if w == 0.0:
            return
        bump(self.confusion, cell, w)
        self.n += w
        self.delays.add(delay_seconds, w)
        if w < 0.0 and not self.confusion:
            self._zero_sums()

    def merge(self, other: MulticlassState) -> None:
        """Add `other` into this state (in place)."""
        self._merge_sums(other)
        merge_cells(self.confusion, other.confusion)
        self.delays.merge(other.delays)

    def to_json(self) -> dict[str, object]:
        cells = [[t, p, compact(w)] for (t, p), w in sorted(self.confusion.items())]
        return {"k": self.KIND, **self._sums_json(), "c": cells, "d": self.delays.to_json()}

    @classmethod
    def from_json(cls, doc: object) -> MulticlassState:
        """QualityFormatError names the malformed field."""
        d = read_kind(doc, cls.KIND)
        confusion = read_cells(d, "c", MAX_CLASSES)
        delays = DelayHistogram.from_json(d.get("d"), "d")
        return cls(**cls._read_sums(d), confusion=confusion, delays=delays)


@dataclass(slots=True)
class RegressionState(Sums):
    """Joined rows of a regressor: the sums behind bias, MAE, RMSE and R^2."""

    KIND: ClassVar[str] = "regression"
    SUMS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("n", "n"), ("sum_error", "e"), ("sum_abs_error", "ae"),
        ("sum_squared_error", "se"), ("sum_label", "y"), ("sum_label_squared", "yy"),
    )  # fmt: skip

    n: float = 0.0
    sum_error: float = 0.0  # of w * (predicted - label)
    sum_abs_error: float = 0.0
    sum_squared_error: float = 0.0
    sum_label: float = 0.0
    sum_label_squared: float = 0.0
    delays: DelayHistogram = field(default_factory=DelayHistogram)

    def add(
        self, predicted: float, label: float, weight: float = 1.0, delay_seconds: float = 0.0
    ) -> None:
        """One row; a negative weight takes back a row added before with the same values."""
        p, y = finite("predicted", predicted), finite("label", label)
        w = finite("weight", weight)
        if w == 0.0:
            return
        error = p - y
        self.n += w
        self.sum_error += w * error
        self.sum_abs_error += w * abs(error)
        self.sum_squared_error += w * error * error
        self.sum_label += w * y
        self.sum_label_squared += w * y * y
        self.delays.add(delay_seconds, w)
        if w < 0.0 and self.n == 0.0 and not self.delays.buckets:
            self._zero_sums()

    def merge(self, other: RegressionState) -> None:
        """Add `other` into this state (in place)."""
        self._merge_sums(other)
        self.delays.merge(other.delays)

    def to_json(self) -> dict[str, object]:
        return {"k": self.KIND, **self._sums_json(), "d": self.delays.to_json()}

    @classmethod
    def from_json(cls, doc: object) -> RegressionState:
        """QualityFormatError names the malformed field."""
        d = read_kind(doc, cls.KIND)
        return cls(**cls._read_sums(d), delays=DelayHistogram.from_json(d.get("d"), "d"))


QualityState = BinaryState | MulticlassState | RegressionState
_KINDS: dict[str, type[QualityState]] = {
    kind.KIND: kind for kind in (BinaryState, MulticlassState, RegressionState)
}


def new_state(task: str) -> QualityState:
    """An empty state for a task: "binary", "multiclass" or "regression"."""
    kind = _KINDS.get(task)
    if kind is None:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(_KINDS)}")
    return kind()


def state_from_json(doc: object) -> QualityState:
    """A stored state of any kind; QualityFormatError names the malformed field."""
    found = doc.get("k") if isinstance(doc, Mapping) else None
    kind = _KINDS.get(found) if isinstance(found, str) else None
    if kind is None:
        raise QualityFormatError(f"field 'k' is {str(found)[:40]!r}, not one of {sorted(_KINDS)}")
    return kind.from_json(doc)


def encode_states(states: Mapping[StateKey, QualityState]) -> str:
    """One writer's cumulative states of one model's window, as compact JSON. A key is
    (version, role, segment dimension, segment value); dimension and value "" mean all rows."""
    rows = [[*key, states[key].to_json()] for key in sorted(states)]
    return json.dumps({"format": FORMAT, "states": rows}, separators=(",", ":"))


def decode_states(payload: str | bytes) -> dict[StateKey, QualityState]:
    """The states `encode_states` wrote; QualityFormatError names the malformed field."""
    decoded: dict[StateKey, QualityState] = {}
    for key, doc in read_rows(payload, FORMAT, 4):
        if key in decoded:
            raise QualityFormatError(f"field 'states' repeats the key {key!r}")
        decoded[(key[0], key[1], key[2], key[3])] = state_from_json(doc)
    return decoded

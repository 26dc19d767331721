"""Fairness across the values of one segment dimension of a version, from the per-value states.

The figures are fairlearn's: demographic parity compares selection rates, equal opportunity
true-positive rates, equalized odds the worse of the TPR and FPR differences. A figure names
its worst value, the one with the lowest rate: the report reads a positive prediction as the
favourable outcome (an approval), the convention the four-fifths rule is stated in. Values
with fewer than `min_rows` (weighted) rows are left out and listed; a value that lacks a rate
(a TPR with no positive label) is left out of that figure only. A difference needs two values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from registry_client.quality.metrics import Metrics, auc_roc, metrics_of
from registry_client.quality.state import BinaryState, MulticlassState, QualityState

__all__ = ["FOUR_FIFTHS", "FairnessReport", "fairness_gap", "fairness_report", "segment_rates"]

FOUR_FIFTHS = 0.8


def _rate(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def segment_rates(states: Mapping[str, BinaryState]) -> dict[str, Metrics]:
    """Per segment value: selection rate, TPR, FPR, precision, accuracy, AUC and row count."""
    return {
        value: {
            "selection_rate": _rate(s.tp + s.fp, s.n),
            "tpr": _rate(s.tp, s.tp + s.fn),
            "fpr": _rate(s.fp, s.fp + s.tn),
            "precision": _rate(s.tp, s.tp + s.fp),
            "accuracy": _rate(s.tp + s.tn, s.n),
            "auc_roc": auc_roc(s),
            "n": s.n,
        }
        for value, s in sorted(states.items())
    }


def _spread(rates: Mapping[str, float | None]) -> tuple[float, str, str] | None:
    """(max - min, the value with the lowest rate, the one with the highest) over the defined
    rates; ties go to the first value in sorted order. None with fewer than two."""
    defined = sorted((rate, value) for value, rate in rates.items() if rate is not None)
    if len(defined) < 2:
        return None
    lowest = min(defined, key=lambda item: item[0])
    highest = max(defined, key=lambda item: item[0])
    return highest[0] - lowest[0], lowest[1], highest[1]


@dataclass(frozen=True, slots=True)
class FairnessReport:
    """Group-fairness figures of one segment dimension; None where a figure is undefined."""

    rates: Mapping[str, Metrics]  # per included value, as segment_rates gives them
    demographic_parity_difference: float | None
    demographic_parity_ratio: float | None  # min / max selection rate
    demographic_parity_worst: str | None  # the value with the lowest selection rate
    four_fifths_ok: bool | None  # ratio >= 0.8
    equal_opportunity_difference: float | None
    equal_opportunity_worst: str | None  # the value with the lowest TPR
    equalized_odds_difference: float | None  # max of the TPR and FPR differences
    equalized_odds_worst: str | None  # lowest TPR or lowest FPR, whichever gives the max
    excluded: tuple[str, ...]  # values with fewer than min_rows rows

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        doc["rates"] = {value: dict(rates) for value, rates in self.rates.items()}
        doc["excluded"] = list(self.excluded)
        return doc


def fairness_report(states: Mapping[str, BinaryState], min_rows: float = 1) -> FairnessReport:
    """The fairness figures across the values of one dimension (`__other__` is a value like
    any other)."""
    excluded = tuple(sorted(value for value, s in states.items() if s.n < min_rows))
    rates = segment_rates({v: s for v, s in states.items() if v not in excluded})
    selection = _spread({v: r["selection_rate"] for v, r in rates.items()})
    tpr = _spread({v: r["tpr"] for v, r in rates.items()})
    fpr = _spread({v: r["fpr"] for v, r in rates.items()})
    ratio = None
    if selection is not None:
        low, high = rates[selection[1]]["selection_rate"], rates[selection[2]]["selection_rate"]
        assert low is not None and high is not None  # _spread keeps defined rates only
        ratio = low / high if high > 0 else None
    odds = None
    if tpr is not None and fpr is not None:
        odds = tpr if tpr[0] >= fpr[0] else fpr
    return FairnessReport(
        rates=rates,
        demographic_parity_difference=None if selection is None else selection[0],
        demographic_parity_ratio=ratio,
        demographic_parity_worst=None if selection is None else selection[1],
        four_fifths_ok=None if ratio is None else ratio >= FOUR_FIFTHS,
        equal_opportunity_difference=None if tpr is None else tpr[0],
        equal_opportunity_worst=None if tpr is None else tpr[1],
        equalized_odds_difference=None if odds is None else odds[0],
        equalized_odds_worst=None if odds is None else odds[1],
        excluded=excluded,
    )


def fairness_gap(
    states: Mapping[str, QualityState], min_rows: float = 1
) -> tuple[str, float, str] | None:
    """(metric, gap, worst value) across the values of one dimension, the one figure a rollout
    gate compares; None with fewer than two values that have it. ValueError on mixed kinds.

    Binary: the demographic-parity difference, worst the lowest selection rate; it compares
    decisions only, so it stays defined for segments whose labels are all one class, where
    TPR and FPR (and so equalized odds, which the full report gives) are not. Multiclass: the
    accuracy difference, worst the least accurate value. Regression: the MAE difference,
    worst the value with the largest MAE.
    """
    kinds = {type(s) for s in states.values()}
    if len(kinds) > 1:
        raise ValueError(f"segment states of different kinds: {sorted(k.KIND for k in kinds)}")
    included = {v: s for v, s in states.items() if s.n >= min_rows}
    binary = {v: s for v, s in included.items() if isinstance(s, BinaryState)}
    if binary:
        report = fairness_report(binary, min_rows)
        gap, worst = report.demographic_parity_difference, report.demographic_parity_worst
        return (
            None if gap is None or worst is None else ("demographic_parity_difference", gap, worst)
        )
    if any(isinstance(s, MulticlassState) for s in included.values()):
        spread = _spread({v: metrics_of(s)["accuracy"] for v, s in included.items()})
        return None if spread is None else ("accuracy_difference", spread[0], spread[1])
    spread = _spread({v: metrics_of(s)["mae"] for v, s in included.items()})
    return None if spread is None else ("mae_difference", spread[0], spread[2])

"""Fairness figures from per-segment states equal a direct numpy computation over the rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from registry_client.quality.fairness import fairness_gap, fairness_report, segment_rates
from registry_client.quality.state import (
    BinaryState,
    MulticlassState,
    QualityState,
    RegressionState,
)

N = 6000
THRESHOLD = 0.5
VALUES = np.array(["north", "south", "east", "__other__"])


def _rows(seed: int, shift: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels and segment values; `shift` moves a segment's scores (not its labels),
    so its selection rate, TPR and FPR move together."""
    rng = np.random.default_rng(seed)
    segments = rng.choice(VALUES, N, p=[0.4, 0.3, 0.2, 0.1])
    logits = rng.normal(0.0, 1.5, N)
    labels = (rng.random(N) < 1.0 / (1.0 + np.exp(-logits))).astype(int)
    offsets = np.array([shift.get(str(s), 0.0) for s in segments])
    scores = 1.0 / (1.0 + np.exp(-(logits + offsets)))
    return scores, labels, segments


def _states(scores: np.ndarray, labels: np.ndarray, segments: np.ndarray) -> dict[str, BinaryState]:
    states: dict[str, BinaryState] = {}
    for score, label, segment in zip(
        scores.tolist(), labels.tolist(), segments.tolist(), strict=True
    ):
        states.setdefault(segment, BinaryState()).add(score, label, 1.0, THRESHOLD, 30.0)
    return states


def _direct(
    scores: np.ndarray, labels: np.ndarray, segments: np.ndarray
) -> dict[str, dict[str, float]]:
    predicted = scores >= THRESHOLD
    rates = {}
    for value in np.unique(segments):
        m = segments == value
        y, p = labels[m] == 1, predicted[m]
        rates[str(value)] = {
            "selection_rate": p.sum() / m.sum(),
            "tpr": (p & y).sum() / y.sum(),
            "fpr": (p & ~y).sum() / (~y).sum(),
            "precision": (p & y).sum() / p.sum(),
            "accuracy": (p == y).sum() / m.sum(),
        }
    return rates


def test_segment_rates_equal_numpy_per_segment() -> None:
    scores, labels, segments = _rows(1, {"south": -0.8})
    found = segment_rates(_states(scores, labels, segments))
    for value, expected in _direct(scores, labels, segments).items():
        for name, rate in expected.items():
            assert found[value][name] == rate, (value, name)
        assert found[value]["n"] == (segments == value).sum()


def test_report_figures_equal_numpy_and_name_the_worst_value() -> None:
    scores, labels, segments = _rows(2, {"south": -0.8, "east": 0.3})
    direct = _direct(scores, labels, segments)
    report = fairness_report(_states(scores, labels, segments))

    def spread(name: str) -> tuple[float, str]:
        rates = {value: r[name] for value, r in direct.items()}
        low = min(rates, key=lambda v: rates[v])
        return max(rates.values()) - rates[low], low

    selection, tpr, fpr = spread("selection_rate"), spread("tpr"), spread("fpr")
    assert report.demographic_parity_difference == selection[0]
    assert report.demographic_parity_worst == selection[1] == "south"
    low = min(r["selection_rate"] for r in direct.values())
    high = max(r["selection_rate"] for r in direct.values())
    assert report.demographic_parity_ratio == low / high
    assert report.equal_opportunity_difference == tpr[0]
    assert report.equal_opportunity_worst == tpr[1] == "south"
    odds = tpr if tpr[0] >= fpr[0] else fpr
    assert report.equalized_odds_difference == odds[0] == max(tpr[0], fpr[0])
    assert report.equalized_odds_worst == odds[1]
    assert report.excluded == ()


def test_four_fifths_flag_follows_the_selection_rate_ratio() -> None:
    fair = fairness_report(_states(*_rows(3, {"south": -0.1})))
    unfair = fairness_report(_states(*_rows(3, {"south": -1.5})))
    assert fair.demographic_parity_ratio is not None and fair.demographic_parity_ratio >= 0.8
    assert fair.four_fifths_ok is True
    assert unfair.demographic_parity_ratio is not None and unfair.demographic_parity_ratio < 0.8
    assert unfair.four_fifths_ok is False
    assert unfair.demographic_parity_worst == "south"


def test_values_below_min_rows_are_left_out_and_listed() -> None:
    scores, labels, segments = _rows(4, {"__other__": -3.0})
    states = _states(scores, labels, segments)
    other_rows = states["__other__"].n
    kept = fairness_report(states, min_rows=other_rows)
    dropped = fairness_report(states, min_rows=other_rows + 1)
    assert kept.demographic_parity_worst == "__other__"
    assert dropped.excluded == ("__other__",)
    assert "__other__" not in dropped.rates
    direct = _direct(*(a[segments != "__other__"] for a in (scores, labels, segments)))
    rates = [r["selection_rate"] for r in direct.values()]
    assert dropped.demographic_parity_difference == max(rates) - min(rates)


def test_a_single_value_has_no_difference() -> None:
    scores, labels, _ = _rows(5, {})
    report = fairness_report(_states(scores, labels, np.full(N, "all")))
    assert report.demographic_parity_difference is None
    assert report.four_fifths_ok is None
    assert report.rates["all"]["n"] == N


def test_a_value_without_positive_labels_is_left_out_of_tpr_only() -> None:
    states = _states(*_rows(6, {}))
    only_negatives = BinaryState()
    for score in (0.2, 0.7, 0.9):
        only_negatives.add(score, 0, 1.0, THRESHOLD, 1.0)
    report = fairness_report({**states, "tiny": only_negatives})
    assert report.demographic_parity_difference is not None
    rates = {v: s.tp / (s.tp + s.fn) for v, s in states.items()}
    assert report.equal_opportunity_difference == max(rates.values()) - min(rates.values())


def test_report_to_json_is_serialisable() -> None:
    report = fairness_report(_states(*_rows(7, {"east": -1.0})))
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["demographic_parity_worst"] == "east"
    assert doc["rates"]["east"]["n"] == report.rates["east"]["n"]
    assert doc["excluded"] == []


def test_binary_gap_is_the_demographic_parity_difference() -> None:
    states = _states(*_rows(8, {"north": -1.0}))
    report = fairness_report(states)
    assert report.demographic_parity_difference is not None
    assert fairness_gap(states) == (
        "demographic_parity_difference", report.demographic_parity_difference, "north",
    )  # fmt: skip


def test_multiclass_gap_is_the_accuracy_difference() -> None:
    rng = np.random.default_rng(9)
    segments = rng.choice(VALUES, N)
    true = rng.integers(0, 5, N)
    hit_rate = np.where(segments == "east", 0.4, 0.7)
    predicted = np.where(rng.random(N) < hit_rate, true, rng.integers(0, 5, N))
    states: dict[str, QualityState] = {}
    for t, p, s in zip(true.tolist(), predicted.tolist(), segments.tolist(), strict=True):
        state = states.setdefault(s, MulticlassState())
        assert isinstance(state, MulticlassState)
        state.add(p, t)
    accuracy = {
        str(v): (true == predicted)[segments == v].sum() / (segments == v).sum() for v in VALUES
    }
    assert fairness_gap(states) == (
        "accuracy_difference", max(accuracy.values()) - min(accuracy.values()), "east",
    )  # fmt: skip


def test_regression_gap_is_the_mae_difference_worst_the_largest_error() -> None:
    rng = np.random.default_rng(10)
    segments = rng.choice(VALUES, N)
    y = rng.normal(0.0, 1.0, N)
    p = y + rng.normal(0.0, np.where(segments == "north", 2.0, 0.5))
    states: dict[str, QualityState] = {}
    for pi, yi, s in zip(p.tolist(), y.tolist(), segments.tolist(), strict=True):
        state = states.setdefault(s, RegressionState())
        assert isinstance(state, RegressionState)
        state.add(pi, yi)
    mae = {str(v): np.abs(p - y)[segments == v].mean() for v in VALUES}
    found = fairness_gap(states)
    assert found is not None
    assert found[0] == "mae_difference" and found[2] == "north"
    assert found[1] == pytest.approx(max(mae.values()) - min(mae.values()), abs=1e-12)


def test_gap_refuses_mixed_kinds_and_needs_two_values() -> None:
    with pytest.raises(ValueError, match="different kinds"):
        fairness_gap({"a": BinaryState(), "b": RegressionState()})
    assert fairness_gap({}) is None
    one = BinaryState()
    one.add(0.9, 1)
    assert fairness_gap({"a": one, "b": BinaryState()}) is None  # b has no rows


def _counted(tp: int, fn: int, fp: int, tn: int) -> BinaryState:
    state = BinaryState()
    for score, label, count in ((0.9, 1, tp), (0.1, 1, fn), (0.9, 0, fp), (0.1, 0, tn)):
        state.add(score, label, float(count), THRESHOLD, 60.0)
    return state


def test_equalized_odds_takes_the_fpr_difference_when_it_is_larger() -> None:
    states = {"a": _counted(tp=50, fn=50, fp=10, tn=90), "b": _counted(tp=55, fn=45, fp=40, tn=60)}
    report = fairness_report(states)
    assert report.equal_opportunity_difference == 55 / 100 - 50 / 100
    assert report.equalized_odds_difference == 40 / 100 - 10 / 100
    assert report.equalized_odds_worst == "a"  # the lowest FPR: the FPR gives the max

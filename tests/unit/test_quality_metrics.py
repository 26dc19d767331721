"""Quality metrics from states agree with scikit-learn on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics  # type: ignore[import-untyped]  # sklearn ships no type hints

from registry_client.quality.metrics import (
    binary_metrics,
    delay_quantiles,
    merged,
    metrics_of,
    multiclass_metrics,
    regression_metrics,
)
from registry_client.quality.state import (
    FINE_PER_COARSE,
    BinaryState,
    MulticlassState,
    QualityState,
    RegressionState,
    score_bin,
)

N = 4000
THRESHOLD = 0.5


def _rows(seed: int, spread: str = "wide") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, labels drawn from the scores (a calibrated model) and segment values."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, N)
    labels = (rng.random(N) < 1.0 / (1.0 + np.exp(-logits))).astype(int)
    if spread == "wide":
        scores = 1.0 / (1.0 + np.exp(-logits))
    elif spread == "ties":  # rounded to 2 decimals: many exact ties
        scores = np.round(1.0 / (1.0 + np.exp(-logits)), 2)
    else:  # concentrated in [0.49, 0.51]: only 40 of the 2000 bins used
        scores = 0.5 + 0.01 * np.tanh(logits)
    segments = rng.choice(np.array(["a", "b", "__other__"]), N, p=[0.5, 0.3, 0.2])
    return scores, labels, segments


def _binary(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> BinaryState:
    state = BinaryState()
    w = np.ones(len(scores)) if weights is None else weights
    for score, label, weight in zip(scores.tolist(), labels.tolist(), w.tolist(), strict=True):
        state.add(score, label, weight, THRESHOLD, 10.0)
    return state


@pytest.mark.parametrize("weighted", [False, True])
def test_confusion_metrics_equal_sklearn_exactly(weighted: bool) -> None:
    scores, labels, segments = _rows(1)
    weights = np.random.default_rng(2).integers(1, 6, N).astype(float) if weighted else None
    masks = {"all": np.ones(N, dtype=bool)} | {s: segments == s for s in np.unique(segments)}
    for segment, mask in masks.items():
        w = None if weights is None else weights[mask]
        y, predicted = labels[mask], (scores[mask] >= THRESHOLD).astype(int)
        found = binary_metrics(_binary(scores[mask], y, w))
        assert found["precision"] == metrics.precision_score(y, predicted, sample_weight=w), segment
        assert found["recall"] == metrics.recall_score(y, predicted, sample_weight=w), segment
        assert found["f1"] == metrics.f1_score(y, predicted, sample_weight=w), segment
        assert found["accuracy"] == metrics.accuracy_score(y, predicted, sample_weight=w), segment
        tn, fp, _, _ = metrics.confusion_matrix(y, predicted, sample_weight=w).ravel()
        assert found["fpr"] == fp / (fp + tn)
        assert found["n"] == (mask.sum() if w is None else w.sum())


# Average precision is sensitive to ties at the top of the ranking: squeezed into the 40 bins
# of [0.49, 0.51] a strong model's AP reads 0.005-0.016 low (6 seeds), its AUC within 0.0025.
@pytest.mark.parametrize(
    ("spread", "ap_tolerance"), [("wide", 0.01), ("ties", 0.01), ("narrow", 0.02)]
)
def test_ranking_metrics_are_close_to_sklearn(spread: str, ap_tolerance: float) -> None:
    scores, labels, segments = _rows(3, spread)
    for mask in (np.ones(N, dtype=bool), segments == "a", segments == "__other__"):
        found = binary_metrics(_binary(scores[mask], labels[mask]))
        auc = metrics.roc_auc_score(labels[mask], scores[mask])
        ap = metrics.average_precision_score(labels[mask], scores[mask])
        assert found["auc_roc"] == pytest.approx(auc, abs=0.005)
        assert found["pr_auc"] == pytest.approx(ap, abs=ap_tolerance)


@pytest.mark.parametrize("spread", ["wide", "ties", "narrow"])
def test_ranking_metrics_equal_sklearn_on_the_binned_scores(spread: str) -> None:
    # All the difference from sklearn on raw scores is the binning: none is the arithmetic.
    scores, labels, _ = _rows(4, spread)
    binned = np.array([score_bin(s) for s in scores.tolist()])
    found = binary_metrics(_binary(scores, labels))
    assert found["auc_roc"] == pytest.approx(metrics.roc_auc_score(labels, binned), abs=1e-12)
    ap = metrics.average_precision_score(labels, binned)
    assert found["pr_auc"] == pytest.approx(ap, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_probability_losses_match_sklearn(weighted: bool) -> None:
    scores, labels, _ = _rows(5)
    scores[:3] = [0.0, 1.0, 1e-17]  # clipped as sklearn clips
    w = np.random.default_rng(6).integers(1, 4, N).astype(float) if weighted else None
    found = binary_metrics(_binary(scores, labels, w))
    brier = metrics.brier_score_loss(labels, scores, sample_weight=w)
    assert found["brier"] == pytest.approx(brier, abs=1e-9)
    assert found["log_loss"] == pytest.approx(
        metrics.log_loss(labels, scores, sample_weight=w), abs=1e-9
    )
    assert found["mean_score"] == pytest.approx(np.average(scores, weights=w), abs=1e-12)
    assert found["mean_label"] == np.average(labels, weights=w)
    assert found["positives"] == (labels.sum() if w is None else w[labels == 1].sum())


def test_expected_calibration_error_matches_a_direct_computation() -> None:
    scores, labels, _ = _rows(7)
    scores = np.clip(scores * 1.3 - 0.1, 0.0, 1.0)  # miscalibrated on purpose
    coarse = np.array([score_bin(s) // FINE_PER_COARSE for s in scores.tolist()])
    expected = sum(
        abs(scores[coarse == c].mean() - labels[coarse == c].mean()) * (coarse == c).sum() / N
        for c in np.unique(coarse)
    )
    found = binary_metrics(_binary(scores, labels))["ece"]
    assert found == pytest.approx(expected, abs=1e-12)
    assert found is not None and found > 0.02


def test_undefined_binary_metrics_are_none() -> None:
    state = BinaryState()
    state.add(0.2, 0, 1.0, 0.5, 1.0)
    state.add(0.3, 0, 1.0, 0.5, 1.0)
    found = binary_metrics(state)
    assert found["precision"] is None  # nothing predicted positive
    assert found["recall"] is None  # no positive label
    assert found["auc_roc"] is None
    assert found["pr_auc"] is None
    assert found["f1"] is None
    assert found["fpr"] == 0.0
    assert found["accuracy"] == 1.0
    assert all(
        v is None for k, v in binary_metrics(BinaryState()).items() if k not in {"n", "positives"}
    )


def _classes(seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, N)
    noise = rng.integers(0, classes, N)
    predicted = np.where(rng.random(N) < 0.6, true, noise)
    return true, predicted


@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_metrics_match_sklearn(weighted: bool) -> None:
    true, predicted = _classes(8, 12)
    w = np.random.default_rng(9).integers(1, 5, N).astype(float) if weighted else None
    state = MulticlassState()
    for i, (t, p) in enumerate(zip(true.tolist(), predicted.tolist(), strict=True)):
        state.add(p, t, 1.0 if w is None else float(w[i]), 5.0)
    found = multiclass_metrics(state)
    assert found["accuracy"] == metrics.accuracy_score(true, predicted, sample_weight=w)
    for name, score in (
        ("macro_f1", metrics.f1_score),
        ("macro_precision", metrics.precision_score),
        ("macro_recall", metrics.recall_score),
    ):
        assert found[name] == pytest.approx(
            score(true, predicted, average="macro", sample_weight=w), abs=1e-12
        )


def test_a_class_never_predicted_counts_zero_precision_as_sklearn() -> None:
    true, predicted = _classes(10, 5)
    predicted = np.where(predicted == 3, 1, predicted)  # 3 is a label, never a prediction
    predicted[:5] = 9  # 9 is a prediction, never a label
    state = MulticlassState()
    for t, p in zip(true.tolist(), predicted.tolist(), strict=True):
        state.add(p, t)
    found = multiclass_metrics(state)
    for name, score in (
        ("macro_f1", metrics.f1_score),
        ("macro_precision", metrics.precision_score),
        ("macro_recall", metrics.recall_score),
    ):
        expected = score(true, predicted, average="macro", zero_division=0.0)
        assert found[name] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_regression_metrics_match_sklearn(weighted: bool) -> None:
    rng = np.random.default_rng(11)
    y = rng.normal(40.0, 8.0, N)
    p = y + rng.normal(1.5, 4.0, N)
    w = rng.integers(1, 4, N).astype(float) if weighted else None
    state = RegressionState()
    for i, (pi, yi) in enumerate(zip(p.tolist(), y.tolist(), strict=True)):
        state.add(pi, yi, 1.0 if w is None else float(w[i]), 60.0)
    found = regression_metrics(state)
    assert found["mae"] == pytest.approx(
        metrics.mean_absolute_error(y, p, sample_weight=w), abs=1e-9
    )
    rmse = metrics.root_mean_squared_error(y, p, sample_weight=w)
    assert found["rmse"] == pytest.approx(rmse, abs=1e-9)
    assert found["r2"] == pytest.approx(metrics.r2_score(y, p, sample_weight=w), abs=1e-9)
    assert found["bias"] == pytest.approx(np.average(p - y, weights=w), abs=1e-9)
    assert found["bias"] is not None and found["bias"] > 1.0


def test_r2_is_none_when_the_labels_do_not_vary() -> None:
    state = RegressionState()
    for prediction in (0.1, 0.2, 0.3, 0.4, 0.5):
        state.add(prediction, 0.1)
    found = regression_metrics(state)
    assert found["r2"] is None
    assert found["mae"] == pytest.approx(0.2)


def test_metrics_of_dispatches_on_the_kind() -> None:
    assert set(metrics_of(BinaryState())) >= {"auc_roc", "ece"}
    assert set(metrics_of(MulticlassState())) == {
        "n",
        "accuracy",
        "macro_f1",
        "macro_precision",
        "macro_recall",
    }
    assert set(metrics_of(RegressionState())) == {"n", "bias", "mae", "rmse", "r2"}


def test_delay_quantiles_name_p50_p90_p99() -> None:
    state = RegressionState()
    for _ in range(100):
        state.add(1.0, 1.0, 1.0, 3600.0)
    found = delay_quantiles(state)
    assert set(found) == {"p50", "p90", "p99"}
    for value in found.values():
        assert value is not None and 3600.0 / 1.19 < value < 3600.0 * 1.19


def test_merged_leaves_its_inputs_unchanged() -> None:
    scores, labels, segments = _rows(12)
    parts = [_binary(scores[segments == s], labels[segments == s]) for s in ("a", "b", "__other__")]
    before = [p.to_json() for p in parts]
    total = merged(parts)
    assert isinstance(total, BinaryState)
    whole = _binary(scores, labels)
    assert (total.tp, total.fp, total.tn, total.fn) == (whole.tp, whole.fp, whole.tn, whole.fn)
    assert total.positives == whole.positives and total.negatives == whole.negatives
    assert [p.to_json() for p in parts] == before
    assert merged([]) is None


def test_merged_refuses_mixed_kinds() -> None:
    states: list[QualityState] = [BinaryState(), RegressionState()]
    with pytest.raises(ValueError, match="regression"):
        merged(states)

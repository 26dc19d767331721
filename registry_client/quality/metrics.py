"""Quality metrics computed from a (merged) state: what a report prints and a rollout judges.

Every metric is None where it is undefined (a precision with no predicted positive, an AUC
with one class only), never a made-up 0. The definitions follow scikit-learn's so a report can
be checked against it: on the same rows, counts-based metrics agree exactly; AUC and average
precision agree up to the ties the 2000 score bins introduce.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

from registry_client.quality.state import (
    FINE_PER_COARSE,
    BinaryState,
    MulticlassState,
    QualityState,
    RegressionState,
    new_state,
)

__all__ = [
    "Metrics",
    "auc_roc",
    "average_precision",
    "binary_metrics",
    "delay_quantiles",
    "expected_calibration_error",
    "merged",
    "metrics_of",
    "multiclass_metrics",
    "regression_metrics",
]

Metrics = dict[str, float | None]


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def auc_roc(state: BinaryState) -> float | None:
    """The Mann-Whitney estimate of the area under the ROC curve: the chance a positive scores
    above a negative, pairs in the same bin counting half (the trapezoidal ROC over bins)."""
    total_pos, total_neg = sum(state.positives.values()), sum(state.negatives.values())
    if total_pos <= 0 or total_neg <= 0:
        return None
    below = area = 0.0
    for b in sorted(state.positives.keys() | state.negatives.keys()):
        negatives = state.negatives.get(b, 0.0)
        area += state.positives.get(b, 0.0) * (below + 0.5 * negatives)
        below += negatives
    return area / (total_pos * total_neg)


def average_precision(state: BinaryState) -> float | None:
    """The area under the precision-recall curve as sklearn's average_precision_score sums it
    (recall steps times the precision at each threshold), thresholds at the bins, high to low."""
    total_pos = sum(state.positives.values())
    if total_pos <= 0:
        return None
    tp = fp = recall_before = area = 0.0
    for b in sorted(state.positives.keys() | state.negatives.keys(), reverse=True):
        positives = state.positives.get(b, 0.0)
        tp += positives
        fp += state.negatives.get(b, 0.0)
        if positives != 0.0:
            recall = tp / total_pos
            area += (recall - recall_before) * (tp / (tp + fp))
            recall_before = recall
    return area


def expected_calibration_error(state: BinaryState) -> float | None:
    """The mean |mean score - fraction positive| over 10 equal-width score bins, each weighted
    by its rows: per bin that is |sum of scores - positives| / n."""
    if state.n <= 0:
        return None
    positives: dict[int, float] = {}
    coarse_bins = set(state.score_sums)
    for fine, weight in state.positives.items():
        positives[fine // FINE_PER_COARSE] = positives.get(fine // FINE_PER_COARSE, 0.0) + weight
    coarse_bins.update(positives, (fine // FINE_PER_COARSE for fine in state.negatives))
    gaps = (abs(state.score_sums.get(c, 0.0) - positives.get(c, 0.0)) for c in coarse_bins)
    return sum(gaps) / state.n


def binary_metrics(state: BinaryState) -> Metrics:
    """Confusion-based metrics at the state's threshold, ranking and calibration metrics."""
    tp, fp, tn, fn, n = state.tp, state.fp, state.tn, state.fn, state.n
    return {
        "n": n,
        "positives": tp + fn,
        "accuracy": _ratio(tp + tn, n),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        # sklearn's form, 2tp / (true + predicted positives): exact on integer weights
        "f1": _ratio(2.0 * tp, (tp + fn) + (tp + fp)),
        "fpr": _ratio(fp, fp + tn),
        "selection_rate": _ratio(tp + fp, n),
        "auc_roc": auc_roc(state),
        "pr_auc": average_precision(state),
        "brier": _ratio(state.sum_brier, n),
        "log_loss": _ratio(state.sum_log_loss, n),
        "ece": expected_calibration_error(state),
        "mean_score": _ratio(state.sum_score, n),
        "mean_label": _ratio(state.sum_label, n),
    }


def multiclass_metrics(state: MulticlassState) -> Metrics:
    """Accuracy and macro averages over the classes present as a label or a prediction. A
    class never predicted has precision 0 (and one never true, recall 0), as sklearn's
    default zero_division gives."""
    predicted: dict[int, float] = {}
    true: dict[int, float] = {}
    correct: dict[int, float] = {}
    for (t, p), weight in state.confusion.items():
        true[t] = true.get(t, 0.0) + weight
        predicted[p] = predicted.get(p, 0.0) + weight
        if t == p:
            correct[t] = weight
    classes = sorted(true.keys() | predicted.keys())
    precision, recall, f1 = [], [], []
    for c in classes:
        tp, pred_sum, true_sum = correct.get(c, 0.0), predicted.get(c, 0.0), true.get(c, 0.0)
        precision.append(_ratio(tp, pred_sum) or 0.0)
        recall.append(_ratio(tp, true_sum) or 0.0)
        f1.append(_ratio(2.0 * tp, true_sum + pred_sum) or 0.0)

    def macro(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "n": state.n,
        "accuracy": _ratio(sum(correct.values()), state.n),
        "macro_f1": macro(f1),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
    }


def regression_metrics(state: RegressionState) -> Metrics:
    """Bias (mean of predicted - label), MAE, RMSE and R^2; R^2 is None when the labels'
    variance is zero, or too small to tell from the rounding of the sums it comes from."""
    n = state.n
    mse = _ratio(state.sum_squared_error, n)
    r2 = None
    if n > 0:
        total_squares = state.sum_label_squared - state.sum_label**2 / n
        # The sums' own rounding is about n * eps relative to the sum of squares.
        noise = 4.0 * sys.float_info.epsilon * max(n, 1.0) * abs(state.sum_label_squared)
        if total_squares > noise:
            r2 = 1.0 - state.sum_squared_error / total_squares
    return {
        "n": n,
        "bias": _ratio(state.sum_error, n),
        "mae": _ratio(state.sum_abs_error, n),
        "rmse": None if mse is None else math.sqrt(max(mse, 0.0)),
        "r2": r2,
    }


def metrics_of(state: QualityState) -> Metrics:
    """The metrics of a state of any kind."""
    if isinstance(state, BinaryState):
        return binary_metrics(state)
    if isinstance(state, MulticlassState):
        return multiclass_metrics(state)
    return regression_metrics(state)


def delay_quantiles(state: QualityState) -> Metrics:
    """The median, 90th and 99th percentile of the label delay, in seconds."""
    return {f"p{round(q * 100)}": state.delays.quantile(q) for q in (0.5, 0.9, 0.99)}


def merged(states: Iterable[QualityState]) -> QualityState | None:
    """A new state holding all of `states` (None when there are none); the inputs are left
    unchanged. ValueError when they are of different kinds."""
    total: QualityState | None = None
    for state in states:
        if total is None:
            total = new_state(state.KIND)
        if type(state) is not type(total):
            raise ValueError(f"cannot merge a {state.KIND} state into a {total.KIND} state")
        total.merge(state)  # type: ignore[arg-type]  # same kind, checked just above
    return total

"""The metric families of model quality: the prediction log (what was logged, what was not and
why), the label join (joined, replaced, late, unmatched), and the quality and fairness figures
read back from the registry.

Quality and fairness gauges hold cluster-wide figures (every replica's joined labels, read from
Redis), so every worker exports the same value: workers combine as the most recent. Their label
sets are bounded: served models and versions, two roles, a fixed list of metric names, and the
model's configured segment dimensions (not their values: a gap names its worst value in the
registry, not in a label).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["QUALITY_METRICS", "QualityMetrics"]

# The figures exported per (model, version, role); the rest are in gatectl accuracy.
QUALITY_METRICS = (
    "auc_roc", "pr_auc", "accuracy", "precision", "recall", "f1", "brier", "log_loss", "ece",
    "macro_f1", "mae", "rmse", "bias", "labelled_rows", "label_coverage", "label_delay_p50_seconds",
)  # fmt: skip


class QualityMetrics:
    """Prediction log, label join and quality figures."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.predictions_logged = Counter(
            "onnxgate_predictions_logged",
            "Predictions written to the prediction log (a label can be joined with them).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.predictions_dropped = Counter(
            "onnxgate_predictions_dropped",
            "Predictions not logged, by reason: buffer (queue full), rate (over"
            " --prediction-log-max-per-second), id (over 128 characters), score (not finite),"
            " shadow_late (a shadow's prediction after its primary's was written), redis"
            " (held too long while Redis was unreachable).",
            ["model", "reason"], registry=registry,
        )  # fmt: skip
        self.unknown_segments = Counter(
            "onnxgate_prediction_unknown_segments",
            "Segment names requests gave that the model's quality config does not list"
            " (ignored).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.labels_joined = Counter(
            "onnxgate_labels_joined",
            "Labels this gateway joined with their predictions (a replacing label too).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.labels_replaced = Counter(
            "onnxgate_labels_replaced",
            "Joined labels that replaced an earlier label for the same prediction.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.labels_late = Counter(
            "onnxgate_labels_late",
            "Labels that arrived after the model's label deadline (not joined).",
            ["model"], registry=registry,
        )  # fmt: skip
        self.labels_unmatched = Counter(
            "onnxgate_labels_unmatched",
            "Labels not joined, by reason: unknown_id (no such prediction, or expired) or"
            " invalid (a label the model's task cannot score).",
            ["model", "reason"], registry=registry,
        )  # fmt: skip
        self.quality = Gauge(
            "onnxgate_quality",
            "Live quality of a version from its joined labels over the gauges' window, by"
            " metric (see docs/quality.md); every replica exports the same figure.",
            ["model", "version", "role", "metric"], registry=registry,
            multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.fairness_gap = Gauge(
            "onnxgate_fairness_gap",
            "The largest difference between the values of a segment dimension, by metric"
            " (demographic_parity_difference, equal_opportunity_difference,"
            " equalized_odds_difference for binary models).",
            ["model", "version", "segment", "metric"], registry=registry,
            multiprocess_mode="mostrecent",
        )  # fmt: skip

"""The metric families that compare a version with another: shadows against the primary they
mirror, and each feature's drift against its reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.metrics.scrape_time import ScrapeTimeGauge

__all__ = ["DriftMetrics", "ShadowMetrics"]


class ShadowMetrics:
    """Mirrored copies dropped, and how the shadows' outputs compare with the primary's."""

    registry: CollectorRegistry
    multiprocess: bool

    def __init__(self, registry: CollectorRegistry) -> None:
        pair = ["model", "primary", "shadow", "output"]
        self.shadow_dropped = Counter(
            "onnxgate_shadow_dropped",
            "Mirrored copies not run: reason busy (no spare CPU) or queue_full.",
            ["model", "version", "reason"], registry=registry,
        )  # fmt: skip
        self.shadow_rows = Counter(
            "onnxgate_shadow_rows", "Rows of class-score outputs compared with the primary.",
            pair, registry=registry,
        )  # fmt: skip
        self.shadow_agreeing_rows = Counter(
            "onnxgate_shadow_agreeing_rows",
            "Compared rows whose argmax equals the primary's (agreement = agreeing / rows).",
            pair, registry=registry,
        )  # fmt: skip
        self.shadow_abs_diff = Histogram(
            "onnxgate_shadow_abs_diff", "Mean absolute difference from the primary, per request.",
            pair, buckets=(1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0), registry=registry,
        )  # fmt: skip
        self.shadow_max_abs_diff = Gauge(
            "onnxgate_shadow_max_abs_diff", "Largest absolute difference from the primary seen.",
            pair, registry=registry, multiprocess_mode="max",
        )  # fmt: skip

    def watch_shadow_agreement(
        self, agreement: Callable[[], Mapping[tuple[str, ...], float]]
    ) -> None:
        """Export onnxgate_shadow_agreement{model,primary,shadow,output} read at scrape time.
        In multiprocess mode the supervisor derives it from the workers' summed counters."""
        if self.multiprocess:
            return
        self.registry.register(
            ScrapeTimeGauge(
                "onnxgate_shadow_agreement",
                "Share of compared rows whose argmax equals the primary's, since start"
                " (rate(shadow_agreeing_rows) / rate(shadow_rows) gives it per window).",
                ["model", "primary", "shadow", "output"],
                agreement,
            )
        )


class DriftMetrics:
    """Input rows not sketched, and each feature's drift from its reference."""

    def __init__(self, registry: CollectorRegistry) -> None:
        feature = ["model", "version", "feature"]
        self.sketch_dropped = Counter(
            "onnxgate_sketch_dropped", "Input rows not sketched because the drift buffer was full.",
            ["model"], registry=registry,
        )  # fmt: skip
        self.drift_psi = Gauge(
            "onnxgate_drift_psi", "PSI of each feature against its reference (recent window).",
            feature, registry=registry, multiprocess_mode="livemax",  # all read the same Redis
        )  # fmt: skip
        self.drift_ks = Gauge(
            "onnxgate_drift_ks", "KS distance of each feature against its reference.",
            feature, registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_state = Gauge(
            "onnxgate_drift_state",
            "Each feature's drift verdict: 0 ok, 1 warn, 2 alert (no series while it has too"
            " few values for one).",
            feature, registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_missing_rate = Gauge(
            "onnxgate_drift_missing_rate", "Share of each feature's values missing (NaN, inf).",
            feature, registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_out_of_range = Gauge(
            "onnxgate_drift_out_of_range_share",
            "Share of each feature's finite values outside its reference's range.",
            feature, registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.drift_dataset_share = Gauge(
            "onnxgate_drift_dataset_drift_share",
            "Share of a version's judged features that warn or alert (the dataset drifts at"
            " 0.5 or more).",
            ["model", "version"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip

"""The metric families of each served version: requests, batches, runs and loads; and the
label children one version's requests resolve once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.telemetry.request_stats import RequestStats

__all__ = ["PRIMARY", "SHADOW", "UNKNOWN_LABEL", "VersionFamilies", "VersionMetrics"]

# 100 us to 10 s: the tiny models answer in well under a millisecond, heavy ones in seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
UNKNOWN_LABEL = "_unknown"  # every name we do not serve collapses into this one label value
PRIMARY = "primary"
SHADOW = "shadow"


class VersionFamilies:
    """The families labelled by model and version (and role: a shadow's requests are its own);
    label values are bounded: served model/version names, role, code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "onnxgate_requests",
            "Inference requests by model, version, role and gRPC status code.",
            ["model", "version", "role", "code"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "onnxgate_request_duration_seconds",
            "Time from decoded request to encoded response, successful requests.",
            ["model", "version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            "onnxgate_inference_duration_seconds",
            "Time inside onnxruntime session.run.",
            ["model", "version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "onnxgate_batch_size", "Rows per session.run when dynamic batching is on.",
            ["model", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )  # fmt: skip
        self.queue_duration = Histogram(
            "onnxgate_queue_duration_seconds",
            "Time the oldest request of a batch waited for it to start.",
            ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.model_loaded = Gauge(
            "onnxgate_model_loaded",
            "1 when the version is loaded and ready to serve, else 0.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livemin",  # 1 only when every worker has it loaded
        )
        self.model_load_seconds = Histogram(
            "onnxgate_model_load_seconds",
            "Time to read, verify, load and warm a version.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.model_load_failures = Counter(
            "onnxgate_model_load_failures",
            "Versions that failed to load, by reason: artifact (unreadable, too large, sha256"
            " mismatch), memory (over the version memory budget), timeout (over the load"
            " timeout), rejected (onnxruntime would not load or warm it).",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.model_memory_bytes = Gauge(
            "onnxgate_model_memory_bytes",
            "Peak memory a version's load and warm-up needed in the memory probe.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.model_runs_terminated = Counter(
            "onnxgate_model_runs_terminated",
            "Model runs stopped because their request's deadline (or, for shadows, the shadow"
            " timeout) passed while onnxruntime was still running them.",
            ["model", "version", "role"],
            registry=registry,
        )


class VersionMetrics:
    """The label children of one (model, version, role), resolved once, not per request;
    also feeds the per-version statistics windows when the gateway keeps them."""

    def __init__(
        self,
        metrics: VersionFamilies,
        model: str,
        version: str,
        role: str,
        stats: RequestStats | None,
    ) -> None:
        self._metrics = metrics
        self._labels = (model, version, role)
        self._stats = stats
        self._ok = metrics.requests.labels(model, version, role, "OK")
        self._duration = metrics.request_duration.labels(model, version, role)
        self.inference = metrics.inference_duration.labels(model, version, role)
        self.terminated = metrics.model_runs_terminated.labels(model, version, role)
        self._batch_size = metrics.batch_size.labels(model, version)
        self._queue_duration = metrics.queue_duration.labels(model, version)

    def observe_batch(self, rows: int, queued_seconds: float, run_seconds: float) -> None:
        """One session.run of the dynamic batcher: its rows, queue wait and run time."""
        self._batch_size.observe(rows)
        self._queue_duration.observe(queued_seconds)
        self.inference.observe(run_seconds)

    def succeeded(self, seconds: float, revision: int | None = None) -> None:
        """Count one successful request that took `seconds`, routed under rule `revision`."""
        self._ok.inc()
        self._duration.observe(seconds)
        if self._stats is not None:
            self._stats.record(*self._labels, "OK", seconds, revision)

    def failed(self, code: str, revision: int | None = None) -> None:
        """Count one failed request with the given gRPC status name."""
        self._metrics.requests.labels(*self._labels, code).inc()
        if self._stats is not None:
            self._stats.record(*self._labels, code, 0.0, revision)

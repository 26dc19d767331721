"""Every Prometheus metric of the gateway, defined once on a registry passed in.

Under `--workers N` each worker writes its values to prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor before this module is imported) and the
supervisor serves their aggregate; each gauge says how workers' values combine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.telemetry.request_stats import RequestStats

__all__ = ["PRIMARY", "SHADOW", "UNKNOWN_LABEL", "GatewayMetrics", "VersionMetrics"]

# 100 us to 10 s: the tiny models answer in well under a millisecond, heavy ones in seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
UNKNOWN_LABEL = "_unknown"  # every name we do not serve collapses into this one label value
PRIMARY = "primary"
SHADOW = "shadow"


class _ScrapeTimeGauge(Collector):
    """A gauge whose values are read from a source when scraped, so requests pay nothing."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        source: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._source = source

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        for label_values, value in sorted(self._source().items()):
            gauge.add_metric(list(label_values), value)
        yield gauge


def _sampler(gauge: Gauge, source: Callable[[], int]) -> Callable[[], None]:
    return lambda: gauge.set(source())


def _unlabelled(source: Callable[[], int]) -> Callable[[], Mapping[tuple[str, ...], float]]:
    return lambda: {(): source()}


class VersionMetrics:
    """The label children of one (model, version, role), resolved once, not per request;
    also feeds the per-version statistics windows when the gateway keeps them."""

    def __init__(
        self,
        metrics: GatewayMetrics,
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

    def succeeded(self, seconds: float) -> None:
        """Count one successful request that took `seconds`."""
        self._ok.inc()
        self._duration.observe(seconds)
        if self._stats is not None:
            self._stats.record(*self._labels, "OK", seconds)

    def failed(self, code: str) -> None:
        """Count one failed request with the given gRPC status name."""
        self._metrics.requests.labels(*self._labels, code).inc()
        if self._stats is not None:
            self._stats.record(*self._labels, code, 0.0)


class GatewayMetrics:
    """Metric families; label values are bounded: served model/version names, role, code."""

    def __init__(
        self,
        registry: CollectorRegistry,
        request_stats: RequestStats | None = None,
        multiprocess: bool = False,
    ) -> None:
        self.registry = registry
        self.request_stats = request_stats
        self.multiprocess = multiprocess
        # Multiprocess mode cannot read values at scrape time: these copy them instead and
        # the composition root runs them periodically.
        self.samplers: list[Callable[[], None]] = []
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
        self._control_plane(registry)
        self._shadows(registry)
        self._drift(registry)
        self.receive_timeouts = Counter(
            "onnxgate_grpc_receive_timeouts",
            "Calls cancelled because their request message did not arrive within the receive"
            " timeout (headers without a body).",
            registry=registry,
        )

    def _control_plane(self, registry: CollectorRegistry) -> None:
        self.redis_connected = Gauge(
            "onnxgate_redis_connected",
            "1 while the registry answers, 0 while the last good rules serve without it.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        # Redis answers, but without what was served (FLUSHALL, deleted or expired keys): the
        # last good rules keep serving and readiness stays; these say so. Workers read the
        # same Redis: any one seeing the loss reports it.
        self.registry_missing = Gauge(
            "onnxgate_registry_missing",
            "1 while the model is served from a rule, or a version, the registry no longer"
            " has (its last good rule keeps serving), else 0.",
            ["model"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.registry_epoch_missing = Gauge(
            "onnxgate_registry_epoch_missing",
            "1 while the registry's epoch, seen before, is gone: the namespace was flushed or"
            " deleted, or Redis restarted without persistence; 0 once it is written again.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.replica_id_conflict = Gauge(
            "onnxgate_replica_id_conflict",
            "1 while another gateway process heartbeats under this gateway's replica id too.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.route_revision = Gauge(
            "onnxgate_route_revision", "Revision of the rule serving each model.", ["model"],
            registry=registry, multiprocess_mode="livemin",  # the worker furthest behind
        )  # fmt: skip
        self.route_weight = Gauge(
            "onnxgate_route_weight", "Weight of each version in the serving rule.",
            ["model", "version"], registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.route_applied_timestamp = Gauge(
            "onnxgate_route_applied_timestamp_seconds",
            "When the serving rule of each model became active (Unix time).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",  # when the last worker applied it
        )

        self.rules_rejected = Counter(
            "onnxgate_rules_rejected",
            "Rule documents not applied, each counted once: reason invalid (the document is"
            " malformed) or not_applied (a version it names did not load); the last good rule"
            " keeps serving.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.windows_given_up = Counter(
            "onnxgate_windows_given_up",
            "Statistics or sketch windows dropped unwritten after Redis was away for an hour"
            " of windows, by what: statistics or sketches.",
            ["what"], registry=registry,
        )  # fmt: skip
        self.flush_failures = Counter(
            "onnxgate_flush_failures",
            "Writes of windowed state to Redis that failed (retried next interval), by what:"
            " statistics or sketches.",
            ["what"],
            registry=registry,
        )

    def _shadows(self, registry: CollectorRegistry) -> None:
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

    def _drift(self, registry: CollectorRegistry) -> None:
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

    def watch_inflight(self, inflight_by_model: Callable[[], Mapping[str, int]]) -> None:
        """Export onnxgate_inflight_requests{model}, read from the source at scrape time (in
        multiprocess mode: sampled, and summed over the workers)."""

        def by_label() -> dict[tuple[str, ...], float]:
            return {(model,): count for model, count in inflight_by_model().items()}

        if self.multiprocess:
            sampled = Gauge(
                "onnxgate_inflight_requests", "Inference requests being served now (sampled).",
                ["model"], registry=self.registry, multiprocess_mode="livesum",
            )  # fmt: skip

            def sample() -> None:
                for (model,), count in by_label().items():
                    sampled.labels(model).set(count)

            self.samplers.append(sample)
            return
        gauge = _ScrapeTimeGauge(
            "onnxgate_inflight_requests",
            "Inference requests being served now.",
            ["model"],
            by_label,
        )
        self.registry.register(gauge)

    def watch_transport(
        self, call_threads: Callable[[], int], connections: Callable[[], int]
    ) -> None:
        """Export onnxgate_grpc_call_threads and onnxgate_grpc_connections, read at scrape
        time (in multiprocess mode: sampled; threads summed, connections shared by the port)."""
        gauges: tuple[tuple[str, str, Callable[[], int], Literal["livesum", "livemax"]], ...] = (
            ("onnxgate_grpc_call_threads", "Threads of the gRPC server's calls, busy or idle.",
             call_threads, "livesum"),
            ("onnxgate_grpc_connections", "Client connections open to the gRPC port.",
             connections, "livemax"),
        )  # fmt: skip
        for name, documentation, source, mode in gauges:
            if self.multiprocess:
                sampled = Gauge(name, documentation + " (sampled)", registry=self.registry,
                                multiprocess_mode=mode)  # fmt: skip
                self.samplers.append(_sampler(sampled, source))
            else:
                self.registry.register(
                    _ScrapeTimeGauge(name, documentation, [], _unlabelled(source))
                )

    def watch_shadow_agreement(
        self, agreement: Callable[[], Mapping[tuple[str, ...], float]]
    ) -> None:
        """Export onnxgate_shadow_agreement{model,primary,shadow,output} read at scrape time.
        In multiprocess mode the supervisor derives it from the workers' summed counters."""
        if self.multiprocess:
            return
        self.registry.register(
            _ScrapeTimeGauge(
                "onnxgate_shadow_agreement",
                "Share of compared rows whose argmax equals the primary's, since start"
                " (rate(shadow_agreeing_rows) / rate(shadow_rows) gives it per window).",
                ["model", "primary", "shadow", "output"],
                agreement,
            )
        )

    def retire(self, gauge: Gauge, labels: Sequence[str]) -> None:
        """Stop exporting one series. Multiprocess files cannot drop a series, so there it
        becomes NaN: no value, rather than a stale one."""
        if self.multiprocess:
            gauge.labels(*labels).set(math.nan)
        else:
            gauge.remove(*labels)

    def for_version(self, model: str, version: str, role: str = PRIMARY) -> VersionMetrics:
        """Resolve the label children of one version once, at load time."""
        return VersionMetrics(self, model, version, role, self.request_stats)

    def count_unrouted(self, model: str, code: str) -> None:
        """Count a request that failed before a version was chosen."""
        self.requests.labels(model, UNKNOWN_LABEL, PRIMARY, code).inc()

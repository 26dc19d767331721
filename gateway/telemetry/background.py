"""The gateway's background telemetry, each task on a thread of its own, off the request path:
gauges sampled for /metrics, the request path's queues folded, request statistics and drift
sketches written to the registry, drift references and gauges refreshed."""

from __future__ import annotations

from collections.abc import Callable

from gateway.drift.monitor import DriftMonitor
from gateway.drift.recorder import DriftRecorder
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.store import VersionStore
from gateway.process.shutdown import ShutdownBudget
from gateway.settings import Settings
from gateway.telemetry.flusher import WindowFlusher
from gateway.telemetry.periodic import Periodic
from gateway.telemetry.request_stats import RequestStats
from registry_client.client import RegistryClient
from registry_client.drift.store import SketchWrite
from registry_client.stats.store import WindowWrite

__all__ = ["FOLD_SECONDS", "TelemetryTasks"]

# The queues the request path appends to (statistics, drift) are folded this often: in small
# batches folding costs least and holds the GIL, which the request threads wait for, shortest.
# Measured (benchmarks/RESULTS.md): 30,000 statistics records, a 10 s flush's worth, folded in
# 96 ms (3.2 us each), 300 in 0.25 ms (0.8 us each); 3,000 drift rows in 10 ms, 300 in 0.6 ms.
FOLD_SECONDS = 0.1


class TelemetryTasks:
    """The metric samplers always; with a registry, the statistics flusher, and with a drift
    recorder as well, the drift tasks."""

    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        versions: VersionStore,
        replica: str,
        client: RegistryClient | None,
        request_stats: RequestStats | None,
        drift: DriftRecorder | None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._replica = replica
        self.sampler = Periodic("metric-samplers", 0.5, self._sample)
        self._folds: list[Callable[[], object]] = []
        self.folder = Periodic("fold", FOLD_SECONDS, self._fold)
        self.stats_flusher: WindowFlusher[WindowWrite] | None = None
        self.drift_monitor: DriftMonitor | None = None
        self.sketch_flusher: WindowFlusher[SketchWrite] | None = None
        self.drift_tasks: list[Periodic | WindowFlusher[SketchWrite]] = []
        if client is None:
            return
        if request_stats is not None:
            self.stats_flusher = self._stats_flusher(client, request_stats)
            self._folds.append(request_stats.fold)
        if drift is not None:
            self._drift_tasks(client, drift, versions)
            assert self.drift_monitor is not None
            self._folds.append(self.drift_monitor.fold)

    def _sample(self) -> None:
        for sample in self._metrics.samplers:
            sample()

    def _fold(self) -> None:
        for fold in self._folds:
            fold()

    def _stats_flusher(
        self, client: RegistryClient, stats: RequestStats
    ) -> WindowFlusher[WindowWrite]:
        store, replica = client.stats, self._replica
        retention = self._settings.stats_retention_seconds

        def write_stats(writes: list[WindowWrite]) -> None:
            store.write(replica, writes, retention)

        interval = self._settings.stats_flush_seconds
        return WindowFlusher("statistics", stats, write_stats, interval,
                             self._metrics.flush_failures)  # fmt: skip

    def _drift_tasks(
        self, client: RegistryClient, recorder: DriftRecorder, versions: VersionStore
    ) -> None:
        """Write every drift_flush_seconds, refresh references and gauges every
        drift_monitor_seconds (folded with the statistics)."""
        settings, replica = self._settings, self._replica

        def write_sketches(writes: list[SketchWrite]) -> None:
            client.drift.write(replica, writes, settings.drift_minute_ttl_seconds,
                               settings.drift_hour_ttl_seconds)  # fmt: skip

        self.drift_monitor = DriftMonitor(
            client, recorder, versions, self._metrics,
            settings.drift_monitor_window_seconds, settings.drift_minute_ttl_seconds,
        )  # fmt: skip
        self.sketch_flusher = WindowFlusher(
            "sketches", recorder, write_sketches, settings.drift_flush_seconds,
            self._metrics.flush_failures,
        )  # fmt: skip
        self.drift_tasks = [
            self.sketch_flusher,
            Periodic("drift-monitor", settings.drift_monitor_seconds, self.drift_monitor.refresh),
        ]

    def start(self) -> None:
        """Every task; the samplers only when some part of the gateway registered one."""
        if self._metrics.samplers:
            self.sampler.start()
        if self._folds:
            self.folder.start()
        if self.stats_flusher is not None:
            self.stats_flusher.start()
        for task in self.drift_tasks:
            task.start()

    def stop(self, budget: ShutdownBudget) -> None:
        """Each task within `budget`; called after the drain and the shadows, so the last
        requests and shadow runs are counted and sketched."""
        budget.run("metric-sampler", self.sampler.stop)
        budget.run("fold", self.folder.stop)  # the flushers fold what is left
        if self.stats_flusher is not None:
            budget.run("statistics", self.stats_flusher.stop)
        for task in self.drift_tasks:  # the sketch flusher folds and writes what is left
            budget.run("drift", task.stop)

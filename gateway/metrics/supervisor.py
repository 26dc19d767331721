"""The supervisor's /metrics: every worker's values summed from the multiprocess files,
plus what only the supervisor knows (workers alive, restarts, each worker's process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway.metrics.process import register_process_metrics

__all__ = ["SupervisorMetrics"]

_ROWS = "onnxgate_shadow_rows_total"
_AGREEING = "onnxgate_shadow_agreeing_rows_total"


class _WorkersCollector(Collector):
    """Reads the workers' files once per scrape and derives the shadow agreement from the
    summed row counters: a ratio of sums, which no per-worker gauge could aggregate to."""

    def __init__(self, directory: Path) -> None:
        self._files = MultiProcessCollector(None, str(directory))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        rows: dict[tuple[str, ...], float] = {}
        agreeing: dict[tuple[str, ...], float] = {}
        names = ("model", "primary", "shadow", "output")
        for family in self._files.collect():  # type: ignore[no-untyped-call]
            yield family
            for sample in family.samples:
                if sample.name in (_ROWS, _AGREEING):
                    key = tuple(sample.labels.get(name, "") for name in names)
                    into = rows if sample.name == _ROWS else agreeing
                    into[key] = into.get(key, 0.0) + sample.value
        gauge = GaugeMetricFamily(
            "onnxgate_shadow_agreement",
            "Share of compared rows whose argmax equals the primary's, since start, all workers.",
            labels=list(names),
        )
        for key, count in sorted(rows.items()):
            if count > 0:
                gauge.add_metric(list(key), agreeing.get(key, 0.0) / count)
        yield gauge


class SupervisorMetrics:
    """The registry the supervisor serves: the workers' summed files, its own two metrics,
    and process metrics of itself and each worker (`worker_pids`: index -> pid, running now)."""

    def __init__(self, directory: Path, worker_pids: Callable[[], Mapping[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_WorkersCollector(directory))
        register_process_metrics(self.registry, worker_pids)
        self.workers_alive = Gauge(
            "onnxgate_workers_alive", "Worker processes running now.", registry=self.registry
        )
        self.worker_restarts = Counter(
            "onnxgate_worker_restarts",
            "Workers that exited without being asked to and were started again.",
            registry=self.registry,
        )

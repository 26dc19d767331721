"""The supervisor's /metrics: every worker's values summed from the multiprocess files,
plus what only the supervisor knows (workers alive, restarts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

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
    """The registry the supervisor serves, and its own two metrics."""

    def __init__(self, directory: Path) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_WorkersCollector(directory))
        self.workers_alive = Gauge(
            "onnxgate_workers_alive", "Worker processes running now.", registry=self.registry
        )
        self.worker_restarts = Counter(
            "onnxgate_worker_restarts",
            "Workers that exited without being asked to and were started again.",
            registry=self.registry,
        )

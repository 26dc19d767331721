"""What every dashboard starts from: the process's memory, CPU and file descriptors, the
build, and how much memory the process may use.

One gateway process exports prometheus_client's process_* families for itself. Under
`--workers N` the workers' registries are not served (the supervisor sums their multiprocess
files, and process_* cannot be summed meaningfully: the start time of a sum is nothing), so
the supervisor reads /proc for itself and for every live worker and labels each series
`worker="supervisor"` or `worker="<index>"`. A worker's index survives its restarts (its
new start time shows one), so the label set stays at N + 1 values.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.models.memory_probe import memory_limit_bytes
from gateway.process.build import build_info

__all__ = ["WorkerProcesses", "register_process_metrics"]

SUPERVISOR = "supervisor"


class _BuildAndLimits(Collector):
    """onnxgate_build_info and onnxgate_memory_limit_bytes, read when scraped (a cgroup's limit
    can be changed under a running container)."""

    def __init__(self) -> None:
        self._build = build_info()

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "onnxgate_build_info",
            "Always 1: the gateway's version and those of Python, onnxruntime and grpcio.",
            labels=list(self._build),
        )
        info.add_metric(list(self._build.values()), 1.0)
        yield info
        yield GaugeMetricFamily(
            "onnxgate_memory_limit_bytes",
            "Memory this process may use: the tightest memory cgroup limit over it, else the"
            " machine's memory (compare process_resident_memory_bytes with it).",
            value=memory_limit_bytes(),
        )


def register_process_metrics(
    registry: CollectorRegistry, workers: Callable[[], Mapping[str, int]] | None = None
) -> None:
    """process_*, python_info, onnxgate_build_info and onnxgate_memory_limit_bytes on
    `registry`: of this process, or (a supervisor's, given `workers`: index -> pid of the
    workers running now) of this process and each worker, labelled by worker."""
    if workers is None:
        ProcessCollector(registry=registry)
    else:
        registry.register(WorkerProcesses(workers))
    PlatformCollector(registry=registry)
    registry.register(_BuildAndLimits())


class WorkerProcesses(Collector):
    """process_* of each live worker, labelled by its index, beside the supervisor's own
    (labelled `supervisor`). `pids` returns index -> pid of the workers running now."""

    def __init__(self, pids: Callable[[], Mapping[str, int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        processes = {SUPERVISOR: os.getpid(), **self._pids()}
        for worker, pid in processes.items():
            # A worker that exited since pids() was read yields nothing (ProcessCollector
            # swallows the missing /proc entry): no stale series.
            collector = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in collector.collect():
                into = families.get(family.name)
                if into is None:
                    into = families[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        yield from families.values()

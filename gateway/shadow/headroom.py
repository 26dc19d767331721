"""Whether the gateway process leaves CPU idle: the test for running best-effort work."""

from __future__ import annotations

import time

from gateway.process.cgroups import cpu_capacity
from gateway.telemetry.periodic import Periodic

__all__ = ["CpuHeadroom"]


class CpuHeadroom:
    """Samples this process's CPU time every `interval` seconds on a thread of its own;
    `spare` is True while it used less than `max_busy` of its share of the CPU time it may use
    (cpu_capacity(): its CPUs, capped by a cgroup quota; `cpu_share`: 1/N for one of N worker
    processes).

    Readers pay one attribute read. A limit of 1.0 or more always reports spare CPU.
    """

    def __init__(self, max_busy: float, cpu_share: float = 1.0, interval: float = 0.1) -> None:
        self._max_busy = max_busy
        self._cpus = cpu_capacity() * cpu_share
        self.spare = True
        self._last = (time.monotonic(), time.process_time())
        self._sampler = Periodic("headroom", interval, self._sample)

    def start(self) -> None:
        if self._max_busy < 1.0:
            self._last = (time.monotonic(), time.process_time())
            self._sampler.start()

    def stop(self) -> None:
        self._sampler.stop()
        self.spare = True

    def _sample(self) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._last
        busy = (cpu - last_cpu) / max(wall - last_wall, 1e-6) / self._cpus
        self.spare = busy < self._max_busy
        self._last = (wall, cpu)

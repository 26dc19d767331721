"""Whether the gateway process leaves CPU idle: the test for running best-effort work."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["CpuHeadroom"]


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # honours taskset and cpusets
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class CpuHeadroom:
    """Samples this process's CPU time every `interval` seconds on a thread of its own;
    `spare` is True while it used less than `max_busy` of the CPUs it may run on.

    Readers pay one attribute read. A limit of 1.0 or more always reports spare CPU.
    """

    def __init__(self, max_busy: float, interval: float = 0.1) -> None:
        self._max_busy = max_busy
        self._interval = interval
        self._cpus = _usable_cpus()
        self.spare = True
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onnxgate-headroom", daemon=True)

    def start(self) -> None:
        if self._max_busy < 1.0:
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.spare = True

    def _run(self) -> None:
        last_wall, last_cpu = time.monotonic(), time.process_time()
        while not self._stopping.wait(self._interval):
            wall, cpu = time.monotonic(), time.process_time()
            busy = (cpu - last_cpu) / max(wall - last_wall, 1e-6) / self._cpus
            self.spare = busy < self._max_busy
            last_wall, last_cpu = wall, cpu

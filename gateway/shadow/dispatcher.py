"""Shadow traffic: a bounded mirror of requests to shadow versions, compared with the primary.

The request thread only offers a job to a bounded queue (never blocks; a full queue, or a
process without spare CPU, drops the copy and counts it). Worker threads run the shadow
version and compare its outputs with what the primary answered: argmax agreement for
class-score outputs (rank 2, more than one column), mean and max absolute difference for every
numeric output. Shadow errors and latency are
recorded under role="shadow" and never reach the caller.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import GatewayError, ModelFailed
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.versions import SHADOW, VersionMetrics
from gateway.models.version import LoadedVersion
from gateway.quality.recorder import ShadowPrediction
from gateway.shadow.headroom import CpuHeadroom

__all__ = ["ShadowDispatcher", "ShadowJob"]

_log = logging.getLogger(__name__)


def _lower_this_threads_priority(nice: int) -> None:
    """Shadows are best effort: at a high nice value the kernel gives their threads (and the
    onnxruntime work they run inline) only the CPU the primaries leave idle, so a saturated
    gateway sheds shadow copies at the full queue instead of slowing its callers."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:  # on Linux a thread id addresses one thread; raising nice needs no privilege
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError:
        _log.warning("shadow threads run at normal priority", exc_info=True)


@dataclass(slots=True)
class _Seen:
    rows: int = 0
    agreeing_rows: int = 0
    max_abs_diff: float = 0.0


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One mirrored request: the shadow to run and what the primary answered."""

    shadow: LoadedVersion
    primary_version: str
    output_names: tuple[str, ...]
    feeds: Mapping[str, np.ndarray]
    primary_outputs: Sequence[np.ndarray]
    # Set for a model whose predictions are logged: the shadow's is logged under the same id.
    logged: ShadowPrediction | None = None
    revision: int | None = None  # of the rule that mirrored it, counted with its outcome


class ShadowDispatcher:
    """Owns the shadow queue and its worker threads; start() and stop() are the app's."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        outcome_label: Callable[[GatewayError], str],
        queue_size: int,
        workers: int,
        nice: int = 0,
        max_cpu_busy: float = 1.0,
        cpu_share: float = 1.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._metrics = metrics
        self._timeout = timeout_seconds  # a shadow run still going then is terminated
        self._outcome_label = outcome_label  # names the label a failed shadow run counts under
        self._lock = threading.Lock()
        self._role_metrics: dict[tuple[str, str], VersionMetrics] = {}
        self._seen: dict[tuple[str, str, str, str], _Seen] = {}
        self._stats = metrics.request_stats
        self._nice = nice
        self._headroom = CpuHeadroom(max_cpu_busy, cpu_share)
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=queue_size)
        self._stop_by = float("inf")  # queued jobs are dropped from then on
        self._threads = [
            threading.Thread(target=self._work, name=f"onnxgate-shadow-{i}", daemon=True)
            for i in range(workers)
        ]
        metrics.watch_shadow_agreement(self.agreement)

    def start(self) -> None:
        self._headroom.start()
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let queued jobs finish, then end the workers; after `timeout` seconds what is
        still queued is dropped (it only measured candidates) and nothing more is waited for."""
        deadline = time.monotonic() + timeout
        self._stop_by = deadline
        for _ in self._threads:
            try:
                self._queue.put(None, timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        self._headroom.stop()

    def offer(self, job: ShadowJob) -> None:
        """Queue a job without waiting. The copy is dropped (and counted) while the process
        has no spare CPU, so a saturated gateway sheds shadows before its callers feel them,
        and when the queue is full."""
        if not self._headroom.spare:
            self._metrics.shadow_dropped.labels(job.shadow.model, job.shadow.version, "busy").inc()
            return
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._metrics.shadow_dropped.labels(
                job.shadow.model, job.shadow.version, "queue_full"
            ).inc()

    def _work(self) -> None:
        _lower_this_threads_priority(self._nice)
        while (job := self._queue.get()) is not None:
            if time.monotonic() < self._stop_by:
                self._run(job)

    def _shadow_metrics(self, shadow: LoadedVersion) -> VersionMetrics:
        key = (shadow.model, shadow.version)
        with self._lock:
            if key not in self._role_metrics:
                self._role_metrics[key] = self._metrics.for_version(*key, role=SHADOW)
            return self._role_metrics[key]

    def _run(self, job: ShadowJob) -> None:
        shadow = job.shadow
        metrics = self._shadow_metrics(shadow)
        started = time.perf_counter()
        try:
            deadline = min(time.monotonic() + self._timeout, self._stop_by)
            outputs = shadow.run_as_shadow(job.output_names, dict(job.feeds), deadline, metrics)
        except GatewayError as exc:
            if isinstance(exc, ModelFailed):  # the shadow model failed; the caller never knows
                _log.warning("shadow run failed", exc_info=exc,
                             extra={"model": shadow.model, "version": shadow.version})  # fmt: skip
            metrics.failed(self._outcome_label(exc), job.revision)
            return
        metrics.succeeded(time.perf_counter() - started, job.revision)
        if job.logged is not None:
            job.logged.observe(shadow.model, shadow.version, outputs)
        for name, primary, mirrored in zip(
            job.output_names, job.primary_outputs, outputs, strict=True
        ):
            self._compare(job, name, primary, mirrored)

    def _compare(
        self, job: ShadowJob, output: str, primary: np.ndarray, shadow: np.ndarray
    ) -> None:
        labels = (job.shadow.model, job.primary_version, job.shadow.version, output)
        if primary.shape != shadow.shape or primary.dtype.kind not in "biuf" or not primary.size:
            return
        rows = agreeing = 0
        if primary.ndim == 2 and primary.shape[1] > 1:  # class scores: one row per example
            rows = primary.shape[0]
            agreeing = int(np.count_nonzero(primary.argmax(axis=1) == shadow.argmax(axis=1)))
            self._metrics.shadow_rows.labels(*labels).inc(rows)
            self._metrics.shadow_agreeing_rows.labels(*labels).inc(agreeing)
        diff = np.abs(primary.astype(np.float64) - shadow.astype(np.float64))
        diff_sum, diff_max = float(diff.sum()), float(diff.max())
        self._metrics.shadow_abs_diff.labels(*labels).observe(diff_sum / diff.size)
        with self._lock:
            seen = self._seen.setdefault(labels, _Seen())
            seen.rows += rows
            seen.agreeing_rows += agreeing
            seen.max_abs_diff = max(seen.max_abs_diff, diff_max)
            largest = seen.max_abs_diff
        self._metrics.shadow_max_abs_diff.labels(*labels).set(largest)
        if self._stats is not None:
            self._stats.record_comparison(
                job.shadow.model, job.primary_version, job.shadow.version, output,
                rows=rows, agreeing_rows=agreeing, abs_diff_sum=diff_sum, elements=diff.size,
                max_abs_diff=diff_max, revision=job.revision,
            )  # fmt: skip

    def agreement(self) -> dict[tuple[str, ...], float]:
        """Argmax agreement since start per (model, primary, shadow, output), for the gauge."""
        with self._lock:
            return {k: s.agreeing_rows / s.rows for k, s in self._seen.items() if s.rows}

"""Turn an artifact into a READY version: fetch, read, hash, probe its memory in a child
process, create the session, warm it up; every step within the load's budget (load_job.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.batcher import DynamicBatcher
from gateway.models.binding import Binder
from gateway.models.load_job import LoadFailed, LoadJob
from gateway.models.memory_probe import ProbeFailed, default_memory_budget, probe_version
from gateway.models.ort_errors import (
    ORT_ERRORS,
    rejection_reason,
    session_options,
    without_source_locations,
)
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.signature import Signature, SignatureError, read_signature, warmup_feeds
from gateway.models.version import LoadedVersion, VersionInfo
from gateway.settings import Settings
from registry_client.errors import RegistryError
from registry_client.repository import VersionSource

__all__ = ["ORT_ERRORS", "LoadFailed", "load_version"]


def load_version(
    source: VersionSource,
    settings: Settings,
    metrics: GatewayMetrics,
    job: LoadJob | None = None,
    deadlines: RunDeadlines | None = None,
    fetch: Callable[[], Path] | None = None,
) -> LoadedVersion:
    """Load one version within `job`'s budget; raises LoadFailed with a reason the operator
    can act on. `fetch` brings the artifact to a local file first (uploaded artifacts).

    Sessions are built and guarded as `settings` say, batching as the version's own rule
    says where it has one."""
    job = job or LoadJob(f"{source.model}-{source.version}", float("inf"))
    started = time.perf_counter()
    path = source.path
    if fetch is not None:
        job.begin("fetching the artifact")
        try:
            path = fetch()
        except (ValueError, OSError, RegistryError) as exc:
            raise LoadFailed(f"cannot fetch the artifact: {exc}", "artifact") from exc
    job.begin("reading the artifact")
    data, sha256 = _read_verified(path, source.sha256, settings.max_model_bytes)
    threads = (settings.ort_intra_op_threads, settings.ort_inter_op_threads)
    budget = settings.max_version_memory_bytes
    budget = default_memory_budget() if budget < 0 else budget
    peak_rss = None
    if budget > 0:
        job.begin("the memory probe (session creation and warm-up in a child process)")
        try:
            probe = probe_version(
                path, sha256, budget, job.remaining(), *threads, cancelled=job.cancelled,
            )  # fmt: skip
        except ProbeFailed as exc:
            if exc.kind == "timeout":
                raise job.timed_out() from exc
            raise LoadFailed(str(exc), exc.kind) from exc
        peak_rss = probe.peak_rss_bytes
    job.begin("session creation")
    try:
        # From bytes, not the path: the bytes hashed are the bytes loaded.
        session = ort.InferenceSession(
            data,
            sess_options=session_options(*threads),
            providers=["CPUExecutionProvider"],
        )
    except ORT_ERRORS as exc:
        raise LoadFailed(rejection_reason(str(exc)), "rejected") from exc
    try:
        signature = read_signature(session.get_inputs(), session.get_outputs())
    except SignatureError as exc:
        raise LoadFailed(str(exc), "rejected") from exc
    job.begin("the warm-up run")
    _warm_up(session, signature, job, deadlines)
    elapsed = time.perf_counter() - started
    info = VersionInfo(source.model, source.version, str(path), sha256, elapsed, peak_rss)
    batch_delay_us = settings.batch_delay_us
    if source.batch_delay_us is not None:
        batch_delay_us = source.batch_delay_us
    max_batch_size = source.max_batch_size or settings.max_batch_size
    version_metrics = metrics.for_version(source.model, source.version)
    batcher = None
    if batch_delay_us >= 0 and signature.batchable:
        batcher = DynamicBatcher(session, f"{source.model}-{source.version}", max_batch_size,
                                 batch_delay_us / 1e6, version_metrics.observe_batch, deadlines,
                                 version_metrics.terminated.inc)  # fmt: skip
    # > 0: at most this many requests of a version run at once and up to
    # max_queue_per_version more wait in its queue: the admission limit is their sum.
    concurrency = settings.max_concurrency_per_version
    max_inflight = settings.max_inflight_per_version
    if concurrency > 0:
        max_inflight = concurrency + settings.max_queue_per_version
    return LoadedVersion(
        info=info,
        session=session,
        signature=signature,
        binder=Binder(source.model, signature, max_batch_size),
        max_inflight=max_inflight,
        metrics=version_metrics,
        batcher=batcher,
        max_concurrency=concurrency,
        deadlines=deadlines,
    )


def _read_verified(path: Path, sha256: str, max_bytes: int) -> tuple[bytes, str]:
    """The artifact's bytes and their sha256, checked against the registry's record."""
    try:
        with path.open("rb") as artifact:  # never more than the cap, even if it grows
            data = artifact.read(max_bytes + 1)
    except OSError as exc:
        raise LoadFailed(f"cannot read artifact: {exc.strerror}", "artifact") from exc
    if len(data) > max_bytes:
        raise LoadFailed(
            f"artifact is larger than --max-model-bytes {max_bytes}; not loaded", "artifact"
        )
    digest = hashlib.sha256(data).hexdigest()
    if sha256 and digest != sha256:
        raise LoadFailed(
            f"sha256 mismatch: the registry has {sha256[:12]}..., the artifact has"
            f" {digest[:12]}...; the file changed after it was registered",
            "artifact",
        )
    return data, digest


def _warm_up(
    session: ort.InferenceSession, signature: Signature, job: LoadJob,
    deadlines: RunDeadlines | None,
) -> None:  # fmt: skip
    """One run on a minimal input, stopped at the load's deadline or when it is cancelled."""
    watch = deadlines.watch(job.deadline) if deadlines is not None else None
    options = watch.options if watch is not None else ort.RunOptions()
    job.on_cancel(lambda: setattr(options, "terminate", True))
    try:
        session.run(None, warmup_feeds(signature), options)
    except ORT_ERRORS as exc:  # a model that cannot run on a minimal input is not READY
        if options.terminate:
            if job.cancelled.is_set():
                raise LoadFailed("load cancelled", "cancelled") from None
            raise job.timed_out() from None
        reason = f"warm-up run failed: {without_source_locations(str(exc))}"
        raise LoadFailed(reason, "rejected") from exc
    finally:
        if watch is not None:
            watch.done()

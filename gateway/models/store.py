"""The versions this gateway holds and their states; each load runs bounded on threads of
its own (load_job.py), never on a thread that serves requests or follows the registry."""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from gateway.errors import ModelNotFound, ModelNotReady
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.load_job import LoadJob, LoadOutcome
from gateway.models.loader import load_version
from gateway.models.run_deadlines import RunDeadlines
from gateway.models.version import LoadedVersion
from gateway.settings import Settings
from registry_client.repository import VersionSource

__all__ = ["VersionState", "VersionStatus", "VersionStore"]

_log = logging.getLogger(__name__)
_Key = tuple[str, str]


class VersionState(enum.Enum):
    """Lifecycle of a version on this gateway (Triton's names for the repository index)."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version's state, with the reason when it failed."""

    model: str
    version: str
    state: VersionState
    reason: str = ""
    loading_since: float | None = None  # Unix time its load began, while LOADING
    memory_bytes: int | None = None  # peak memory its probe measured, once READY


class VersionStore:
    """Holds versions by (model, version).

    Request threads only read `_ready`, a mapping replaced whole (copy on write) under
    `_lock` by the thread that finishes a load, so a lookup never takes a lock or waits on a
    load. At most `settings.load_threads` loads run at once; each has
    `settings.load_timeout_seconds`, and builds its version as `settings` say (loader.py).
    """

    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, deadlines: RunDeadlines | None = None
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._slots = threading.Semaphore(settings.load_threads)
        self._timeout = settings.load_timeout_seconds
        self._deadlines = deadlines
        self._lock = threading.Lock()
        self._ready: Mapping[str, Mapping[str, LoadedVersion]] = MappingProxyType({})
        self._status: dict[_Key, VersionStatus] = {}
        self._jobs: dict[_Key, LoadJob] = {}
        self._listeners: list[Callable[[], None]] = []
        self._closed = False

    def on_settled(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the load's thread) whenever a load ends, READY or FAILED."""
        self._listeners.append(listener)

    def load_all(self, sources: Iterable[VersionSource], on_done: Callable[[], None]) -> None:
        """Load every source in the background; on_done runs once all have finished."""
        futures = [self.load(s) for s in sources]
        remaining = [len(futures)]
        countdown = threading.Lock()

        def finished(_: Future[None]) -> None:
            with countdown:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                on_done()

        if not futures:
            on_done()
        for future in futures:
            future.add_done_callback(finished)

    def load(self, source: VersionSource, fetch: Callable[[], Path] | None = None) -> Future[None]:
        """Load one version in the background (`fetch` first brings its artifact to a local
        file); it is LOADING until it is READY or FAILED. A load of the same version still
        under way is cancelled. The future is done when this load has ended."""
        key = (source.model, source.version)
        job = LoadJob(f"{source.model}-{source.version}", self._timeout)
        done: Future[None] = Future()
        with self._lock:
            if self._closed:
                done.set_result(None)
                return done
            previous = self._jobs.get(key)
            self._jobs[key] = job
            self._status[key] = VersionStatus(*key, VersionState.LOADING, loading_since=time.time())
        if previous is not None:
            previous.cancel()
        thread = threading.Thread(target=self._load, args=(source, fetch, job, done),
                                  name=f"onnxgate-load-{job.name}", daemon=True)  # fmt: skip
        thread.start()
        return done

    def cancel(self, model: str, version: str) -> None:
        """Stop a load under way (its probe is killed, its warm-up terminated) and forget
        the version's state; a READY copy, if any, stays."""
        with self._lock:
            job = self._jobs.pop((model, version), None)
            if job is not None and version not in self._ready.get(model, {}):
                self._status.pop((model, version), None)
        if job is not None:
            job.cancel()
            _log.info("load cancelled", extra={"model": model, "version": version})

    def unload(self, model: str, version: str) -> None:
        """Forget a version: new requests cannot reach it, in-flight ones finish on it."""
        self.cancel(model, version)
        with self._lock:
            models = {m: dict(v) for m, v in self._ready.items()}
            gone = models.get(model, {}).pop(version, None)
            self._ready = MappingProxyType({m: MappingProxyType(v) for m, v in models.items() if v})
            self._status.pop((model, version), None)
        if gone is not None:
            gone.close()
        self._metrics.model_loaded.labels(model, version).set(0)
        _log.info("version unloaded", extra={"model": model, "version": version})

    def status(self, model: str, version: str) -> VersionStatus | None:
        """One version's state, if known."""
        return self._status.get((model, version))

    def _load(
        self,
        source: VersionSource,
        fetch: Callable[[], Path] | None,
        job: LoadJob,
        done: Future[None],
    ) -> None:
        try:
            while not self._slots.acquire(timeout=0.1):  # the budget starts with a slot
                if job.cancelled.is_set():
                    return
            try:
                settings, metrics, deadlines = self._settings, self._metrics, self._deadlines
                outcome = job.run(
                    lambda j: load_version(source, settings, metrics, j, deadlines, fetch)
                )
            finally:
                self._slots.release()
            if self._settle(source, job, outcome):
                for listener in self._listeners:
                    listener()
        finally:
            done.set_result(None)

    def _settle(self, source: VersionSource, job: LoadJob, outcome: LoadOutcome) -> bool:
        """Publish a load's outcome unless it was cancelled or superseded; True if it was."""
        key = (source.model, source.version)
        with self._lock:
            if self._jobs.get(key) is not job or outcome.cancelled:
                return False
            del self._jobs[key]
            if outcome.failure is not None:
                self._status[key] = VersionStatus(*key, VersionState.FAILED, str(outcome.failure))
        if outcome.failure is not None:
            _log.error("version failed to load", extra={
                "model": source.model, "version": source.version,
                "reason": str(outcome.failure)})  # fmt: skip
            self._metrics.model_load_failures.labels(*key, outcome.failure.kind).inc()
            self._metrics.model_loaded.labels(*key).set(0)
            return True
        loaded = outcome.result
        assert isinstance(loaded, LoadedVersion)
        info = loaded.info
        self._metrics.model_load_seconds.labels(source.model).observe(info.load_seconds)
        self._metrics.model_loaded.labels(*key).set(1)
        if info.memory_bytes is not None:
            self._metrics.model_memory_bytes.labels(*key).set(info.memory_bytes)
        _log.info("version ready", extra={
            "model": source.model, "version": source.version, "sha256": info.sha256,
            "load_seconds": round(info.load_seconds, 3), "memory_bytes": info.memory_bytes,
        })  # fmt: skip
        with self._lock:
            models = {m: dict(v) for m, v in self._ready.items()}
            replaced = models.setdefault(source.model, {}).get(source.version)
            models[source.model][source.version] = loaded
            self._ready = MappingProxyType({m: MappingProxyType(v) for m, v in models.items()})
            self._status[key] = VersionStatus(*key, VersionState.READY,
                                              memory_bytes=info.memory_bytes)  # fmt: skip
        if replaced is not None:  # a reload: the old copy's batcher answers what it holds
            replaced.close()
        return True

    def get(self, model: str, version: str) -> LoadedVersion:
        """The READY version; ModelNotReady when loading or failed, else ModelNotFound."""
        versions = self._ready.get(model)
        if versions is not None:
            loaded = versions.get(version)
            if loaded is not None:
                return loaded
        status = self._status.get((model, version))
        if status is None:
            raise ModelNotFound(
                f"Request for unknown model: '{model}' version '{version}' is not found"
            )
        detail = f": {status.reason}" if status.reason else ""
        raise ModelNotReady(
            f"model '{model}' version '{version}' is not ready ({status.state.name}{detail})"
        )

    def ready_versions(self) -> Mapping[str, Mapping[str, LoadedVersion]]:
        """Snapshot of READY versions by model and version."""
        return self._ready

    def inflight_by_model(self) -> dict[str, int]:
        """Requests being served now, per model, over its READY versions."""
        return {
            model: sum(v.inflight for v in versions.values())
            for model, versions in self._ready.items()
        }

    def statuses(self) -> list[VersionStatus]:
        """Every known version's state, sorted by model then version name."""
        with self._lock:
            return sorted(self._status.values(), key=lambda s: (s.model, s.version))

    def knows_model(self, model: str) -> bool:
        """Whether any version of the model is known here, in any state."""
        return any(m == model for m, _ in list(self._status))

    def is_loading(self, model: str) -> bool:
        """Whether some version of the model is still loading."""
        return any(
            s.model == model and s.state is VersionState.LOADING
            for s in list(self._status.values())
        )

    def close(self) -> None:
        """Cancel every load (nothing waits for them) and stop the versions' batchers."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.cancel()
        for versions in self._ready.values():
            for loaded in versions.values():
                loaded.close()

"""The versions this gateway holds and their states, loaded on a background executor."""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType

from gateway.errors import ModelNotFound, ModelNotReady
from gateway.metrics import GatewayMetrics
from gateway.models.loader import LoadError, LoadOptions, load_version
from gateway.models.version import LoadedVersion
from registry_client.repository import VersionSource

__all__ = ["VersionState", "VersionStatus", "VersionStore"]

_log = logging.getLogger(__name__)


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


class VersionStore:
    """Holds versions by (model, version).

    Request threads only read `_ready`, a mapping replaced whole (copy on write) by the load
    executor's thread under `_lock`, so a lookup never takes a lock or waits on a load.
    """

    def __init__(self, options: LoadOptions, metrics: GatewayMetrics, load_threads: int) -> None:
        self._options = options
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(load_threads, thread_name_prefix="onnxgate-load")
        self._lock = threading.Lock()
        self._ready: Mapping[str, Mapping[str, LoadedVersion]] = MappingProxyType({})
        self._status: dict[tuple[str, str], VersionStatus] = {}

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

    def load(self, source: VersionSource) -> Future[None]:
        """Load one version on the load executor; its state is LOADING until it finishes."""
        with self._lock:
            self._status[(source.model, source.version)] = VersionStatus(
                source.model, source.version, VersionState.LOADING
            )
        return self._executor.submit(self._load, source)

    def unload(self, model: str, version: str) -> None:
        """Forget a version: new requests cannot reach it, in-flight ones finish on it."""
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

    def _load(self, source: VersionSource) -> None:
        key = (source.model, source.version)
        try:
            loaded = load_version(source, self._options, self._metrics)
        except LoadError as exc:
            _log.error(
                "version failed to load",
                extra={"model": source.model, "version": source.version, "reason": str(exc)},
            )
            self._metrics.model_load_failures.labels(*key).inc()
            self._metrics.model_loaded.labels(*key).set(0)
            with self._lock:
                self._status[key] = VersionStatus(*key, VersionState.FAILED, str(exc))
            return
        self._metrics.model_load_seconds.labels(source.model).observe(loaded.info.load_seconds)
        self._metrics.model_loaded.labels(*key).set(1)
        _log.info(
            "version ready",
            extra={
                "model": source.model,
                "version": source.version,
                "sha256": loaded.info.sha256,
                "load_seconds": round(loaded.info.load_seconds, 3),
            },
        )
        with self._lock:
            models = {m: dict(v) for m, v in self._ready.items()}
            replaced = models.setdefault(source.model, {}).get(source.version)
            models[source.model][source.version] = loaded
            self._ready = MappingProxyType({m: MappingProxyType(v) for m, v in models.items()})
            self._status[key] = VersionStatus(*key, VersionState.READY)
        if replaced is not None:  # a reload: the old copy's batcher answers what it holds
            replaced.close()

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
        """Stop the load executor (loads under way finish, queued ones are dropped) and the
        versions' batchers."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        for versions in self._ready.values():
            for loaded in versions.values():
                loaded.close()

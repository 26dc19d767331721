"""The status pages' reader: a background thread that reads the registry every
`refresh_seconds`, but only while someone looks, and keeps the last reading.

A page view only notes that it was made (a timestamp and, for a model page, the model); the
thread reads the overview and the details of the models viewed recently, and swaps each
reading in whole. When Redis does not answer, the last reading stays, with the error."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.status.detail import DetailReader
from gateway.status.overview import read_overview
from gateway.status.snapshot import ModelDetail, Overview
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError

__all__ = ["Reading", "StatusWorker"]

_log = logging.getLogger("gateway.status")
# Pages refresh themselves every refresh_seconds; a reader gone this many refreshes stops
# the reading.
_IDLE_REFRESHES = 6
_MIN_IDLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Reading:
    """The last overview and model details read, and the last failure to read (kept until a
    reading succeeds)."""

    overview: Overview | None
    details: dict[str, ModelDetail]
    error: str
    error_at: float


class StatusWorker:
    def __init__(
        self,
        connect: Callable[[], RegistryClient],
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_seconds = refresh_seconds
        self._connect = connect
        self._clock = clock
        self._idle_seconds = max(_IDLE_REFRESHES * refresh_seconds, _MIN_IDLE_SECONDS)
        self._lock = threading.Lock()  # guards _viewed_at, _wanted
        self._viewed_at = float("-inf")
        self._wanted: dict[str, float] = {}  # model -> when its page was last viewed
        self._reading = Reading(None, {}, "", 0.0)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="onnxgate-status", daemon=True)

    @property
    def reading(self) -> Reading:
        return self._reading

    def viewed(self, model: str | None = None) -> None:
        """A page was asked for (a model's page: `model`). Costs a lock and a timestamp; wakes
        the thread when it was idle or the model is new to it."""
        now = self._clock()
        with self._lock:
            idle = now - self._viewed_at > self._idle_seconds
            self._viewed_at = now
            new = model is not None and model not in self._wanted
            if model is not None:
                self._wanted[model] = now
        if idle or new:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop and wait for a reading under way (bounded by the Redis
        client's timeouts) to end."""
        self._stopping.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        client: RegistryClient | None = None
        details: DetailReader | None = None
        while not self._stopping.is_set():
            self._wake.wait(None if self._idle() else self.refresh_seconds)
            self._wake.clear()
            if self._stopping.is_set() or self._idle():
                continue
            try:
                if client is None:
                    client = self._connect()
                    details = DetailReader(client)
                assert details is not None
                self._read(client, details)
            except RegistryError as exc:
                _log.warning("status pages: registry unreadable", extra={"reason": str(exc)})
                previous = self._reading
                self._reading = Reading(previous.overview, previous.details, str(exc), time.time())
            except Exception:  # a bug in a page's reading must not end the pages for good
                _log.exception("status pages: reading failed")
        if client is not None:
            client.close()

    def _idle(self) -> bool:
        with self._lock:
            return self._clock() - self._viewed_at > self._idle_seconds

    def _read(self, client: RegistryClient, details: DetailReader) -> None:
        overview = read_overview(client)
        now = self._clock()
        with self._lock:
            self._wanted = {m: t for m, t in self._wanted.items() if now - t <= self._idle_seconds}
            wanted = sorted(self._wanted)
        known = {summary.name for summary in overview.models}
        read = {model: details.read(model) for model in wanted if model in known}
        self._reading = Reading(overview, read, "", 0.0)

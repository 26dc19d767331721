"""Per-version request statistics of the current 1-minute windows, kept in memory.

Request threads only append a tuple to a deque (atomic, no lock); a background thread folds
the queue into the windows' t-digests several times a second, and the flusher's thread encodes
the changed windows and writes them to Redis. Requests are counted per (version, role) and per
revision of the rule that routed them, so a reader can tell a new rule's traffic from the one
before.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.telemetry.window_ledger import mark_unwritten, take_pending
from registry_client.stats.store import WindowWrite
from registry_client.stats.window import VersionStats, encode_window, window_of

__all__ = ["RequestStats"]


@dataclass(slots=True)
class _ModelWindow:
    by_version: dict[tuple[str, str, int | None], VersionStats] = field(default_factory=dict)
    dirty: bool = True
    confirmed: bool = False

    def version(self, version: str, role: str, revision: int | None) -> VersionStats:
        key = (version, role, revision)
        found = self.by_version.get(key)
        if found is None:
            found = self.by_version[key] = VersionStats(version, role, revision=revision)
        return found


class RequestStats:
    """Statistics per (model, window, version, role, rule revision). Thread-safe.

    A closed window stays until its last write has been made twice (window_ledger says why);
    while Redis is unreachable at most `keep_windows` windows are kept, the oldest are given
    up (and logged).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        keep_windows: int = 60,
        on_given_up: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_given_up` is told of each window dropped unwritten after `keep_windows`."""
        self._on_given_up = on_given_up
        self._clock = clock
        self._keep_windows = keep_windows
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, int], _ModelWindow] = {}
        self._recorded: deque[tuple[str, str, str, str, float, float, int | None]] = deque()

    def record(
        self, model: str, version: str, role: str, code: str, seconds: float,
        revision: int | None = None,
    ) -> None:  # fmt: skip
        """One finished request; `seconds` counts only when `code` is OK; `revision`: of the
        rule that routed it (the route's, already at hand). Costs an append."""
        self._recorded.append((model, version, role, code, seconds, self._clock(), revision))

    def fold(self) -> None:
        """Move the recorded requests into their windows (see TelemetryTasks: often, in small
        batches)."""
        with self._lock:
            self._fold()

    def _fold(self) -> None:
        """Move the recorded requests into their windows; the caller holds the lock."""
        recorded = self._recorded
        for _ in range(len(recorded)):  # appends racing with us wait for the next fold
            model, version, role, code, seconds, at, revision = recorded.popleft()
            window = self._model_window(model, window_of(at))
            window.version(version, role, revision).record(code, seconds)

    def record_comparison(
        self,
        model: str,
        primary: str,
        shadow: str,
        output: str,
        *,
        rows: int,
        agreeing_rows: int,
        abs_diff_sum: float,
        elements: int,
        max_abs_diff: float,
        revision: int | None = None,
    ) -> None:
        """One shadow output compared with the primary's, mirrored under rule `revision`."""
        window = window_of(self._clock())
        with self._lock:
            state = self._model_window(model, window)
            compared = state.version(shadow, "shadow", revision).comparison(primary, output)
            compared.rows += rows
            compared.agreeing_rows += agreeing_rows
            compared.abs_diff_sum += abs_diff_sum
            compared.elements += elements
            compared.max_abs_diff = max(compared.max_abs_diff, max_abs_diff)

    def _model_window(self, model: str, window: int) -> _ModelWindow:
        key = (model, window)
        state = self._windows.get(key)
        if state is None:
            state = self._windows[key] = _ModelWindow()
        state.dirty = True
        return state

    def pending(self) -> list[WindowWrite]:
        """Encode every changed window and mark it written; a closed window already written
        is written once more, then forgotten (window_ledger says why). Call failed() with the
        result when the write does not succeed."""
        current = window_of(self._clock())
        with self._lock:
            self._fold()
            return take_pending(
                self._windows,
                closed=lambda key: key[1] < current,
                expired=lambda key: key[1] < current - self._keep_windows,
                encode=lambda key, state: WindowWrite(
                    key[0], key[1], encode_window(state.by_version.values())
                ),
                what="statistics",
                on_given_up=self._on_given_up,
            )

    def failed(self, writes: Iterable[WindowWrite]) -> None:
        """Mark windows whose write failed as changed, so the next flush writes them again."""
        with self._lock:
            mark_unwritten(self._windows, [(item.model, item.window) for item in writes])

    def windows(self) -> int:
        """Windows held in memory (for tests and the log)."""
        with self._lock:
            self._fold()
            return len(self._windows)

"""Stop model runs that outlive their deadline, from one watching thread.

A request whose deadline passes while onnxruntime is still running its model would otherwise
hold its request thread until the run ends, however long that takes. Every run is given its
own `RunOptions`; this thread sets `terminate` on those whose deadline has passed, and
onnxruntime stops the run at its next kernel boundary.

The request path pays one `RunOptions()` (about 0.4 us) and a dict insert and delete; the
watcher, not a timer per run, keeps the deadlines, waking every `tick` seconds, so a run is
stopped at most one tick after its deadline.
"""

from __future__ import annotations

import itertools
import threading
import time

import onnxruntime as ort

__all__ = ["RunDeadlines", "RunWatch"]


class RunWatch:
    """One run being watched: pass `options` to session.run, then call `done()`."""

    __slots__ = ("_key", "_owner", "options")

    def __init__(self, owner: RunDeadlines, key: int, options: ort.RunOptions) -> None:
        self._owner = owner
        self._key = key
        self.options = options

    def done(self) -> bool:
        """Stop watching; True when the run was terminated because its deadline passed."""
        self._owner.forget(self._key)
        return bool(self.options.terminate)


class RunDeadlines:
    """Owns the watching thread; start() and stop() belong to the composition root."""

    def __init__(self, tick_seconds: float = 0.02) -> None:
        self._tick = tick_seconds
        self._runs: dict[int, tuple[float, ort.RunOptions]] = {}
        self._keys = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="onnxgate-run-deadlines",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def watching(self) -> int:
        """Runs being watched now."""
        return len(self._runs)

    def watch(self, deadline: float) -> RunWatch:
        """RunOptions that this watcher terminates once `deadline` (monotonic) passes."""
        options = ort.RunOptions()
        key = next(self._keys)  # itertools.count is atomic under the GIL
        self._runs[key] = (deadline, options)
        return RunWatch(self, key, options)

    def forget(self, key: int) -> None:
        self._runs.pop(key, None)

    def terminate_all(self) -> int:
        """Terminate every watched run now (the process is stopping); returns how many."""
        runs = list(self._runs.values())
        for _, options in runs:
            options.terminate = True
        return len(runs)

    def _watch(self) -> None:
        while not self._stopping.wait(self._tick):
            now = time.monotonic()
            for deadline, options in list(self._runs.values()):
                if deadline <= now:
                    options.terminate = True

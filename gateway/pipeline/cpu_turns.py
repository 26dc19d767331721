"""Turns at the CPU: at most `count` requests (--grpc-threads) do their work at once.

The server has more call threads than turns: one more per stream it allows, more while calls
wait for their request message, and a request waiting in its version's queue holds a thread
but no turn. A request takes its turn once admitted and gives it back once its response is
encoded; so no more than `count` threads run Python work at a time, the measured best on a
core (more threads only contend for the GIL). A C-level queue of tokens is the cheapest gate
CPython has.
"""

from __future__ import annotations

import queue
import time

from gateway.errors import DeadlineExceeded

__all__ = ["RequestTurns"]


class RequestTurns:
    """A fixed number of turns; take() waits for one until the request's deadline."""

    def __init__(self, count: int) -> None:
        self._tokens: queue.SimpleQueue[int] = queue.SimpleQueue()
        for token in range(count):
            self._tokens.put(token)

    def take(self, deadline: float | None) -> int:
        """A turn, or DeadlineExceeded if the deadline passes first (nothing was run)."""
        try:
            if deadline is None:
                return self._tokens.get()
            # A deadline may pass between dispatch and here; get() refuses negative timeouts.
            return self._tokens.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            raise DeadlineExceeded(
                "deadline passed while the request waited for a request thread; the model did"
                " not run it"
            ) from None

    def give_back(self, token: int) -> None:
        self._tokens.put(token)

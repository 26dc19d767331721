"""The one deadline a /metrics connection waits under at a time, on the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Deadline"]


class Deadline:
    """Calls `on_expiry` once `seconds` after the last set(), unless cancelled or set again
    meanwhile. Used by one thread (the event loop)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_expiry: Callable[[], None]) -> None:
        self._loop = loop
        self._on_expiry = on_expiry
        self._timer: asyncio.TimerHandle | None = None

    def set(self, seconds: float) -> None:
        """Expire `seconds` from now, replacing the deadline set before."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(seconds, self._expire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        self._on_expiry()

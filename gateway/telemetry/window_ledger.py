"""The bookkeeping both windowed recorders (request statistics, drift sketches) share: which
windows changed since they were written, and when a window may be forgotten."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from typing import Protocol, TypeVar

__all__ = ["mark_unwritten", "take_pending"]

_log = logging.getLogger(__name__)


class _Changeable(Protocol):
    dirty: bool


K = TypeVar("K", bound=Hashable)
S = TypeVar("S", bound=_Changeable)
T = TypeVar("T")


def take_pending(
    windows: MutableMapping[K, S],
    *,
    closed: Callable[[K], bool],
    expired: Callable[[K], bool],
    encode: Callable[[K, S], T],
    what: str,
    on_given_up: Callable[[], None],
) -> list[T]:
    """Encode every changed window and mark it written. A closed window is forgotten once
    written; an expired one (kept unwritten too long: Redis was away) is given up, logged and
    counted through `on_given_up`."""
    writes: list[T] = []
    for key, state in list(windows.items()):
        if expired(key):
            del windows[key]
            on_given_up()
            _log.warning(f"{what} window given up: Redis was unreachable too long",
                         extra={"window": repr(key)})  # fmt: skip
        elif state.dirty:
            writes.append(encode(key, state))
            state.dirty = False
        elif closed(key):
            del windows[key]
    return writes


def mark_unwritten(windows: MutableMapping[K, S], keys: Iterable[K]) -> None:
    """Windows whose write failed are changed again, so the next flush writes them."""
    for key in keys:
        state = windows.get(key)
        if state is not None:
            state.dirty = True

"""The bookkeeping both windowed recorders (request statistics, drift sketches) share: which
windows changed since they were written, and when a window may be forgotten.

A window's write overwrites this replica's own field with the window's whole state, so
writing it again never counts twice. A closed window is written once more, a flush after its
last write, before it is forgotten: a write a Redis primary acknowledged and lost as it
crashed, before its replica had it (replication is asynchronous), is written again, to the
primary Sentinel or the Cluster promoted (the confirming write fails while there is none, and
is retried like any other)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, MutableMapping
from typing import Protocol, TypeVar

__all__ = ["mark_unwritten", "take_pending"]

_log = logging.getLogger(__name__)


class _Changeable(Protocol):
    dirty: bool  # changed since its last write
    confirmed: bool  # written again, unchanged, a flush after its last write


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
    """Encode every changed window and mark it written. A closed window is written once more
    (unchanged) and forgotten at the next flush; an expired one (kept unwritten too long:
    Redis was away) is given up, logged and counted through `on_given_up`."""
    writes: list[T] = []
    for key, state in list(windows.items()):
        if expired(key):
            del windows[key]
            if state.dirty:  # its last change never reached Redis
                on_given_up()
                _log.warning(f"{what} window given up: Redis was unreachable too long",
                             extra={"window": repr(key)})  # fmt: skip
        elif state.dirty:
            writes.append(encode(key, state))
            state.dirty = state.confirmed = False
        elif closed(key) and not state.confirmed:
            writes.append(encode(key, state))
            state.confirmed = True
        elif closed(key):
            del windows[key]
    return writes


def mark_unwritten(windows: MutableMapping[K, S], keys: Iterable[K]) -> None:
    """Windows whose write failed are written again at the next flush: changed again, or
    still to be confirmed when the write that failed was the confirming one."""
    for key in keys:
        state = windows.get(key)
        if state is None:
            continue
        if state.confirmed:
            state.confirmed = False
        else:
            state.dirty = True

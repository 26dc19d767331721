"""Per-version request statistics in Redis: gateways overwrite their share of a window,
readers merge every replica and window of a time range."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from registry_client.connection import RedisClient
from registry_client.errors import redis_unreachable_as_error
from registry_client.schema import Keys, validate_name
from registry_client.stats.window import (
    WINDOW_SECONDS,
    RevisionKey,
    StatsFormatError,
    VersionStats,
    decode_window,
    merge_by_revision,
    merge_into,
    window_of,
)

__all__ = ["MergedStats", "StatsStore", "WindowWrite", "WindowedStats"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WindowWrite:
    """One replica's cumulative state of one model's window, encoded."""

    model: str
    window: int
    payload: str


@dataclass(frozen=True, slots=True)
class MergedStats:
    """Every replica's statistics of one model over a time range, merged per (version, role)
    and per (version, role, rule revision)."""

    model: str
    first_window: int
    last_window: int
    by_version: Mapping[tuple[str, str], VersionStats]
    # requests per (version, role, revision) and window, so shares can be taken over the
    # same minutes
    requests_by_window: Mapping[RevisionKey, Mapping[int, int]]
    replicas: frozenset[str]
    unreadable: int  # replica windows skipped because their format could not be read
    by_revision: Mapping[RevisionKey, VersionStats] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WindowedStats:
    """Statistics per window, each merged over every replica, per (version, role); and per
    (version, role, revision)."""

    by_window: Mapping[int, Mapping[tuple[str, str], VersionStats]]
    replicas: frozenset[str]
    unreadable: int
    by_window_and_revision: Mapping[int, Mapping[RevisionKey, VersionStats]] = field(
        default_factory=dict
    )


class StatsStore:
    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def write(self, replica: str, windows: Iterable[WindowWrite], ttl_seconds: int) -> None:
        """Overwrite this replica's field of each window; idempotent, so safe to retry."""
        field = validate_name(replica, "replica id")
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for item in windows:
                key = self._keys.stats(item.model, item.window)
                pipe.hset(key, field, item.payload)
                pipe.expire(key, ttl_seconds)
            pipe.execute()

    def read(self, model: str, since_seconds: float, now: float | None = None) -> MergedStats:
        """Merge the windows that overlap the last `since_seconds`, every replica."""
        now = time.time() if now is None else now
        return self.read_span(model, now - max(since_seconds, WINDOW_SECONDS) + 1, now)

    def read_span(self, model: str, start: float, end: float) -> MergedStats:
        """Merge the windows from the one `start` (Unix seconds) falls in to the one `end`
        falls in, every replica."""
        first, last = window_of(start), window_of(end)
        windows = self.read_windows(model, first, last)
        merged: dict[tuple[str, str], VersionStats] = {}
        by_revision: dict[RevisionKey, VersionStats] = {}
        by_window: dict[RevisionKey, dict[int, int]] = {}
        for found in windows.by_window.values():
            merge_into(merged, found.values())
        for window, revised in windows.by_window_and_revision.items():
            merge_by_revision(by_revision, revised.values())
            for key, item in revised.items():
                by_window.setdefault(key, {})[window] = item.requests
        return MergedStats(model, first, last, merged, by_window, windows.replicas,
                           windows.unreadable, by_revision)  # fmt: skip

    def read_windows(self, model: str, first: int, last: int) -> WindowedStats:
        """Windows `first` to `last` (inclusive), each merged over every replica."""
        validate_name(model, "model name")
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for window in range(first, last + 1):
                pipe.hgetall(self._keys.stats(model, window))
            found: list[Mapping[bytes, bytes]] = pipe.execute()
        by_window: dict[int, dict[tuple[str, str], VersionStats]] = {}
        by_revision: dict[int, dict[RevisionKey, VersionStats]] = {}
        replicas: set[str] = set()
        unreadable = 0
        for window, fields in zip(range(first, last + 1), found, strict=True):
            for replica, payload in fields.items():
                try:
                    stats = decode_window(payload)
                except StatsFormatError as exc:
                    unreadable += 1
                    _log.warning("statistics skipped", extra={"model": model, "reason": str(exc)})
                    continue
                merge_into(by_window.setdefault(window, {}), stats)
                merge_by_revision(by_revision.setdefault(window, {}), stats)
                replicas.add(replica.decode(errors="replace"))
        return WindowedStats(by_window, frozenset(replicas), unreadable, by_revision)

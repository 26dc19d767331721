"""Reading the joined quality state: every joiner's field of every minute in a range, merged
per (version, role, segment dimension, segment value), and the join's counts."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from registry_client.connection import RedisClient
from registry_client.errors import redis_unreachable_as_error
from registry_client.quality.state import (
    QualityFormatError,
    QualityState,
    StateKey,
    decode_states,
    new_state,
)
from registry_client.records.values import as_text
from registry_client.schema import Keys, validate_name

__all__ = ["MergedQuality", "QualityStore"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MergedQuality:
    """The states of a range of minutes merged over every joiner, the joiners found, and how
    many fields were skipped as unreadable (a format or a task this reader cannot merge)."""

    states: Mapping[StateKey, QualityState]
    writers: frozenset[str]
    unreadable: int


class QualityStore:
    """Reads what LabelJoiner writes; thread-safe (redis-py pools are)."""

    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def read(self, model: str, first_minute: int, last_minute: int) -> dict[StateKey, QualityState]:
        """Minutes `first_minute` to `last_minute` (inclusive, minutes since the epoch of the
        predictions), merged over every joiner and minute."""
        return dict(self.read_merged(model, first_minute, last_minute).states)

    def read_merged(self, model: str, first_minute: int, last_minute: int) -> MergedQuality:
        """As read(), with the joiners found and the count of unreadable fields skipped."""
        validate_name(model, "model name")
        minutes = range(first_minute, last_minute + 1)
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(self._keys.quality(model, minute))
            found: list[Mapping[bytes, bytes]] = pipe.execute()
        merged: dict[StateKey, QualityState] = {}
        writers: set[str] = set()
        unreadable = 0
        for fields in found:
            for writer, payload in fields.items():
                try:
                    states = decode_states(payload)
                    _merge_into(merged, states)
                except QualityFormatError as exc:
                    unreadable += 1
                    _log.warning("quality state skipped", extra={"model": model,
                                                                 "reason": str(exc)})  # fmt: skip
                    continue
                writers.add(as_text(writer))
        return MergedQuality(merged, frozenset(writers), unreadable)

    def counts(self, model: str) -> dict[str, int]:
        """The join's counts: joined, replaced, late and unmatched:<reason>."""
        validate_name(model, "model name")
        with redis_unreachable_as_error():
            raw = self._redis.hgetall(self._keys.quality_counts(model))
        return {as_text(name): int(value) for name, value in raw.items()}


def _merge_into(
    merged: dict[StateKey, QualityState], states: Mapping[StateKey, QualityState]
) -> None:
    """Add `states` into `merged`; QualityFormatError (nothing added) when a state's kind
    differs from the one merged under its key (the model's task changed)."""
    for key, state in states.items():
        known = merged.get(key)
        if known is not None and type(known) is not type(state):
            raise QualityFormatError(f"state {key!r} is {state.KIND}, not {known.KIND}")
    for key, state in states.items():
        if key not in merged:
            merged[key] = new_state(state.KIND)
        merged[key].merge(state)  # type: ignore[arg-type]  # same kind, checked above

"""Drift sketches and reference profiles in Redis.

Sketches: `{ns:model}:sketch:{version}:m{minute}` and `...:h{hour}`, one hash field per replica
holding its cumulative state of that window (so a retried write never counts twice). Minutes
are kept `minute_ttl` (1 h by default), hours `hour_ttl` (8 days): a reader of the last hour
merges minutes, of a longer range whole hours. References: `{ns}:reference:{model}:{v}`,
one field per feature, written atomically and audited like every registry write.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from registry_client.connection import Pipeline, RedisClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import (
    FeatureSketch,
    SketchFormatError,
    decode_sketches,
    merge_sketches,
)
from registry_client.errors import NotFound, redis_unreachable_as_error
from registry_client.records.values import as_text
from registry_client.schema import Keys, validate_name
from registry_client.stats.window import WINDOW_SECONDS, window_of

__all__ = [
    "HOUR",
    "HOUR_TTL_SECONDS",
    "MINUTE",
    "MINUTE_TTL_SECONDS",
    "DriftStore",
    "MergedSketches",
    "SketchWrite",
]

MINUTE, HOUR = "m", "h"
# Minute windows are kept an hour (about 6.5 MiB per model-version and replica at 30 features
# and 500 rows/s, benchmarks/RESULTS.md), hours 8 days; readers of longer ranges use hours.
MINUTE_TTL_SECONDS = 3600
HOUR_TTL_SECONDS = 8 * 86400
META_FIELD = "_meta"
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SketchWrite:
    """One replica's cumulative sketches of one (model, version) window, encoded."""

    model: str
    version: str
    granularity: str  # MINUTE or HOUR
    window: int  # minutes or hours since the Unix epoch
    payload: str

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.version, self.granularity, self.window)


@dataclass(frozen=True, slots=True)
class MergedSketches:
    rows: int
    features: Mapping[str, FeatureSketch]
    replicas: frozenset[str]
    unreadable: int
    granularity: str


class DriftStore:
    def __init__(
        self,
        client: RedisClient,
        keys: Keys,
        audit: Callable[[Pipeline, str, str, str, object, object, str], None],
    ) -> None:
        self._redis = client
        self._keys = keys
        self._audit = audit

    def _key(self, model: str, version: str, granularity: str, window: int) -> str:
        return "{" + f"{self._keys.namespace}:{model}" + "}" + f":sketch:{version}:" + (
            f"{granularity}{window}")  # fmt: skip

    def write(
        self, replica: str, writes: Iterable[SketchWrite], minute_ttl: int, hour_ttl: int
    ) -> None:
        """Overwrite this replica's field of each window; idempotent, so safe to retry."""
        field = validate_name(replica, "replica id")
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for item in writes:
                key = self._key(item.model, item.version, item.granularity, item.window)
                pipe.hset(key, field, item.payload)
                pipe.expire(key, minute_ttl if item.granularity == MINUTE else hour_ttl)
            pipe.execute()

    def read(
        self,
        model: str,
        version: str,
        since_seconds: float,
        *,
        minute_ttl: int = MINUTE_TTL_SECONDS,
        now: float | None = None,
    ) -> MergedSketches:
        """Every replica's sketches of the version over the last `since_seconds`: minutes
        while they are kept, whole hours for longer ranges."""
        validate_name(model, "model name")
        validate_name(version, "version")
        now = time.time() if now is None else now
        if since_seconds <= minute_ttl - WINDOW_SECONDS:
            last = window_of(now)
            first = window_of(now - max(since_seconds, WINDOW_SECONDS) + 1)
            granularity = MINUTE
        else:
            last, first = int(now // 3600), int((now - since_seconds) // 3600)
            granularity = HOUR
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for window in range(first, last + 1):
                pipe.hgetall(self._key(model, version, granularity, window))
            found: list[Mapping[bytes, bytes]] = pipe.execute()
        merged: dict[str, FeatureSketch] = {}
        rows, unreadable, replicas = 0, 0, set()
        for fields in found:
            for replica, payload in fields.items():
                try:
                    window_rows, features = decode_sketches(payload)
                except SketchFormatError as exc:
                    unreadable += 1
                    _log.warning("sketch skipped", extra={"model": model, "reason": str(exc)})
                    continue
                rows += window_rows
                merge_sketches(merged, features.items())
                replicas.add(replica.decode(errors="replace"))
        return MergedSketches(rows, merged, frozenset(replicas), unreadable, granularity)

    def set_reference(
        self, model: str, version: str, features: Mapping[str, FeatureReference],
        meta: Mapping[str, object], *, actor: str, dry_run: bool = False,
    ) -> None:  # fmt: skip
        """Replace the version's reference profile, atomically and audited (with `dry_run`,
        encoded as it would be stored, and not stored)."""
        key = self._keys.reference(model, version)
        fields = {name: ref.to_json() for name, ref in features.items()}
        fields[META_FIELD] = json.dumps(dict(meta), sort_keys=True)
        if dry_run:
            return
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]  # str values are fine
            self._audit(pipe, actor, "reference.set", model, None,
                        {"version": version, **meta, "features": len(features)}, "")  # fmt: skip
            pipe.execute()

    def get_reference(self, model: str, version: str) -> dict[str, FeatureReference]:
        """The version's reference per feature; NotFound when it has none."""
        with redis_unreachable_as_error():
            fields = self._redis.hgetall(self._keys.reference(model, version))
        if not fields:
            raise NotFound(f"version {version!r} of model {model!r} has no reference profile:"
                           " set one with gatectl reference set")  # fmt: skip
        named = {as_text(k): v for k, v in fields.items()}
        return {k: FeatureReference.from_json(v) for k, v in named.items() if k != META_FIELD}

    def reference_summary(self, model: str, version: str) -> dict[str, object] | None:
        """The stored reference's meta and its number of `features`, None when there is
        none; a meta that cannot be read is said so rather than raised (a new profile
        replaces it whole)."""
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            pipe.hlen(self._keys.reference(model, version))
            pipe.hget(self._keys.reference(model, version), META_FIELD)
            length, raw = pipe.execute()
        if not length:
            return None
        try:
            meta = {} if raw is None else dict(json.loads(raw))
        except (ValueError, TypeError):
            meta = {"meta": "unreadable"}
        return {**meta, "features": length - (0 if raw is None else 1)}

    def reference_meta(self, model: str, version: str) -> dict[str, object]:
        with redis_unreachable_as_error():
            raw = self._redis.hget(self._keys.reference(model, version), META_FIELD)
        return {} if raw is None else dict(json.loads(raw))

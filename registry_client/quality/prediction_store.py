"""The prediction log in Redis: gateways write what a later label needs of each prediction;
whoever joins labels looks predictions up by id. Layout and sizing: predictions.py."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence

from registry_client.connection import RedisClient
from registry_client.errors import redis_unreachable_as_error
from registry_client.quality.predictions import (
    DAY_SECONDS,
    PredictionFormatError,
    PredictionRecord,
    bucket_count,
    bucket_of,
    day_of,
    decode_records,
    encode_records,
)
from registry_client.records.values import as_text
from registry_client.schema import Keys, validate_name

__all__ = ["PredictionStore"]

_log = logging.getLogger(__name__)


class PredictionStore:
    """Thread-safe (redis-py pools are; the bucket-count cache has a lock)."""

    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, int], int] = {}  # (model, day) -> its bucket count

    def write(
        self, model: str, entries: Sequence[tuple[str, Sequence[PredictionRecord]]],
        ttl_seconds: int,
    ) -> None:  # fmt: skip
        """Store each id's records (its primary's and shadows'), filed under the day of the
        first; an id written again is replaced whole, so a retried write never duplicates.
        Each day's keys expire `ttl_seconds` after the day ends."""
        validate_name(model, "model name")
        days: dict[int, _DayWrite] = {}
        with redis_unreachable_as_error():
            for request_id, records in entries:
                day = day_of(records[0].time)
                batch = days.get(day)
                if batch is None:
                    batch = days[day] = _DayWrite(self._bucket_count(model, day, ttl_seconds))
                batch.add(request_id, records)
            with self._redis.pipeline(transaction=False) as pipe:
                for day, batch in days.items():
                    expire_at = (day + 1) * DAY_SECONDS + ttl_seconds
                    for bucket, mapping in batch.fields.items():
                        key = self._keys.predictions(model, day, bucket)
                        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                        pipe.expireat(key, expire_at)
                    for minute, counted in batch.logged_per_minute().items():
                        logged_key = self._keys.predictions_logged(model, minute)
                        for version_role, count in counted.items():
                            pipe.hincrby(logged_key, version_role, count)
                        pipe.expireat(logged_key, expire_at)
                    count_key = self._keys.prediction_count(model, day)
                    pipe.incrby(count_key, batch.ids)
                    pipe.expireat(count_key, expire_at + DAY_SECONDS)  # sizes the next day
                pipe.execute()

    def logged(self, model: str, first_minute: int, last_minute: int) -> dict[tuple[str, str], int]:
        """Predictions logged per (version, role) in minutes `first_minute` to `last_minute`
        (inclusive, minutes since the epoch), every replica: what label coverage divides by.
        A retried write counts its predictions again, so this may exceed what was logged by
        the writes an outage made a gateway retry."""
        validate_name(model, "model name")
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for minute in range(first_minute, last_minute + 1):
                pipe.hgetall(self._keys.predictions_logged(model, minute))
            found: list[dict[bytes, bytes]] = pipe.execute()
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for fields in found:
            for name, count in fields.items():
                version, _, role = as_text(name).rpartition("|")
                totals[version, role] += int(count)
        return dict(totals)

    def lookup(
        self, model: str, ids: Iterable[str], ttl_seconds: int, now: float
    ) -> dict[str, list[PredictionRecord]]:
        """The records of each id found among the days the log keeps (the newest day wins
        when an id was reused); ids not found are left out."""
        validate_name(model, "model name")
        wanted = list(dict.fromkeys(ids))
        days = list(range(day_of(now), day_of(now - ttl_seconds) - 1, -1))
        with redis_unreachable_as_error():
            counts = self._redis.mget([self._keys.prediction_buckets(model, d) for d in days])
            found: dict[str, list[PredictionRecord]] = {}
            for day, count in zip(days, counts, strict=True):
                if count is None or not wanted:
                    continue
                by_key: dict[str, list[str]] = defaultdict(list)
                for request_id in wanted:
                    bucket = bucket_of(request_id, int(count))
                    by_key[self._keys.predictions(model, day, bucket)].append(request_id)
                with self._redis.pipeline(transaction=False) as pipe:
                    for key, key_ids in by_key.items():
                        pipe.hmget(key, key_ids)
                    values = pipe.execute()
                for key_ids, key_values in zip(by_key.values(), values, strict=True):
                    for request_id, value in zip(key_ids, key_values, strict=True):
                        if value is not None:
                            found[request_id] = self._decode(model, request_id, value, day)
                wanted = [i for i in wanted if i not in found]
        return {i: records for i, records in found.items() if records}

    def _decode(
        self, model: str, request_id: str, value: bytes, day: int
    ) -> list[PredictionRecord]:
        try:
            return decode_records(as_text(value), day)
        except PredictionFormatError as exc:
            _log.warning("prediction skipped", extra={"model": model, "request_id": request_id,
                                                      "reason": str(exc)})  # fmt: skip
            return []

    def _bucket_count(self, model: str, day: int, ttl_seconds: int) -> int:
        """The day's bucket count: cached; else the one its first writer set; else set now
        from the day before's volume (SET NX: every writer agrees on the first one set)."""
        with self._lock:
            known = self._buckets.get((model, day))
        if known is not None:
            return known
        key = self._keys.prediction_buckets(model, day)
        stored = self._redis.get(key)
        if stored is None:
            previous = self._redis.get(self._keys.prediction_count(model, day - 1))
            proposed = bucket_count(int(previous or 0))
            expire_at = (day + 1) * DAY_SECONDS + ttl_seconds
            self._redis.set(key, proposed, nx=True, exat=expire_at)
            stored = self._redis.get(key)
        count = int(stored if stored is not None else bucket_count(0))
        with self._lock:
            self._buckets[model, day] = count
            for stale in [k for k in self._buckets if k[1] < day - 1]:
                del self._buckets[stale]
        return count


class _DayWrite:
    """One day's share of a write: each bucket's fields, and the records per (minute,
    version, role) that label coverage counts. Built once per logged prediction, so kept to
    plain dicts."""

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets
        self.fields: dict[int, dict[str, str]] = {}  # bucket -> id -> its records, encoded
        self.ids = 0
        self._logged: dict[tuple[int, str, str], int] = {}

    def add(self, request_id: str, records: Sequence[PredictionRecord]) -> None:
        bucket = bucket_of(request_id, self.buckets)
        mapping = self.fields.get(bucket)
        if mapping is None:
            mapping = self.fields[bucket] = {}
        mapping[request_id] = encode_records(records)
        self.ids += 1
        logged = self._logged
        for record in records:
            counted = (record.time // 60, record.version, record.role)
            logged[counted] = logged.get(counted, 0) + 1

    def logged_per_minute(self) -> dict[int, dict[str, int]]:
        """minute -> `version|role` -> records."""
        counted: dict[int, dict[str, int]] = defaultdict(dict)
        for (minute, version, role), count in self._logged.items():
            counted[minute][f"{version}|{role}"] = count
        return counted

"""The prediction log in Redis: gateways write what a later label needs of each prediction;
whoever joins labels looks predictions up by id. Layout and sizing: predictions.py."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import redis

from registry_client.connection import RedisClient, release_pipeline
from registry_client.errors import Unreachable, redis_unreachable_as_error
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
        first, in one transaction; an id written again is replaced whole. A write retried
        after its answer was lost counts nothing twice: what the ids hold already is read
        first and left out of the day's and the minutes' counts. Each day's keys expire
        `ttl_seconds` after the day ends. Unreachable when Redis does not answer (the write
        may have been applied: write it again)."""
        validate_name(model, "model name")
        days: dict[int, _DayWrite] = {}
        with redis_unreachable_as_error():
            for request_id, records in entries:
                day = day_of(records[0].time)
                batch = days.get(day)
                if batch is None:
                    batch = days[day] = _DayWrite(self._bucket_count(model, day, ttl_seconds))
                batch.add(request_id, records)
            self._leave_out_stored(model, days)
            for _ in range(3):
                if self._written(model, days, ttl_seconds):
                    return
            raise Unreachable(
                "the predictions were not written: the registry's keys were being deleted"
                " (FLUSHALL?) at every attempt; write them again"
            )

    def _written(self, model: str, days: Mapping[int, _DayWrite], ttl_seconds: int) -> bool:
        """One attempt at the write's transaction; False when the guard was touched (a
        FLUSHALL): try again."""
        pipe = self._redis.pipeline(transaction=True)
        try:
            pipe.watch(self._keys.prediction_guard(model))
            pipe.multi()
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
            return True
        except redis.WatchError as exc:
            lost = exc.__context__
            if isinstance(lost, redis.ConnectionError | redis.TimeoutError):
                raise Unreachable(f"Redis is unreachable: {lost}; the predictions may or may"
                                  " not have been written: write them again") from exc  # fmt: skip
            return False
        finally:
            release_pipeline(pipe)

    def _leave_out_stored(self, model: str, days: Mapping[int, _DayWrite]) -> None:
        """Read what the ids of a write hold already (an earlier attempt of it, whose answer
        was lost), and count only the records they lack. Not watched: an id is written by
        the gateway that served it, whose earlier attempt has ended, applied whole or not at
        all, by the time it writes again."""
        wanted = [(day, bucket, list(mapping)) for day, batch in days.items()
                  for bucket, mapping in batch.fields.items()]  # fmt: skip
        with self._redis.pipeline(transaction=False) as pipe:
            for day, bucket, ids in wanted:
                pipe.hmget(self._keys.predictions(model, day, bucket), ids)
            found: list[list[bytes | None]] = pipe.execute()
        for (day, _, ids), values in zip(wanted, found, strict=True):
            for request_id, value in zip(ids, values, strict=True):
                if value is not None:
                    days[day].stored(self._decode(model, request_id, value, day))

    def logged(self, model: str, first_minute: int, last_minute: int) -> dict[tuple[str, str], int]:
        """Predictions logged per (version, role) in minutes `first_minute` to `last_minute`
        (inclusive, minutes since the epoch), every replica: what label coverage divides by.
        A write retried after its answer was lost counts nothing twice."""
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

    def stored(self, records: Sequence[PredictionRecord]) -> None:
        """An id of this write holds `records` already: neither it nor they count again."""
        self.ids -= 1
        logged = self._logged
        for record in records:
            counted = (record.time // 60, record.version, record.role)
            if logged.get(counted, 0) > 0:
                logged[counted] -= 1

    def logged_per_minute(self) -> dict[int, dict[str, int]]:
        """minute -> `version|role` -> records (those left out: none)."""
        counted: dict[int, dict[str, int]] = defaultdict(dict)
        for (minute, version, role), count in self._logged.items():
            if count:
                counted[minute][f"{version}|{role}"] = count
        return counted

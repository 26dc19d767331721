"""The join: labels from a model's stream added to the quality state of their predictions,
exactly once. A batch's state, its stream position (the checkpoint) and the labels it applied
are written in one WATCH/MULTI transaction that watches the checkpoint (and the joiner's lease),
so a batch is either counted whole or not at all, across retries, restarts and joiners taking
over from one another. Each joiner writes its own field of a window; readers sum the fields.
No Lua (a gateway's Redis user may not EVAL)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from registry_client.connection import Pipeline, RedisClient, release_pipeline
from registry_client.errors import Unreachable, redis_unreachable_as_error
from registry_client.quality.labels import StoredLabel, label_of, parse_stored_label
from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.predictions import (
    DAY_SECONDS,
    MISSING,
    OTHER,
    PredictionRecord,
    day_of,
)
from registry_client.quality.state import (
    BinaryState,
    MulticlassState,
    QualityState,
    StateKey,
    decode_states,
    encode_states,
    new_state,
)
from registry_client.quality.task import QualityConfig
from registry_client.records.values import as_text
from registry_client.schema import Keys, validate_name

__all__ = ["INVALID", "UNKNOWN_ID", "JoinResult", "LabelJoiner"]

_log = logging.getLogger(__name__)

UNKNOWN_ID = "unknown_id"  # unknown or expired
INVALID = "invalid"  # a label (or its prediction) the model's task cannot score


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What one join() did. `joined` counts every label added (a replacing one too),
    `replaced` those that took an earlier label for the same prediction back."""

    joined: int = 0
    replaced: int = 0
    unmatched: dict[str, int] = field(default_factory=dict)  # reason -> labels
    late: int = 0  # labels past the model's label deadline, not joined
    lease_lost: bool = False  # the lease was not ours: nothing written
    remaining: bool = False  # more labels are waiting after this batch


def _next_id(stream_id: str) -> str:
    return f"{stream_id.partition('-')[0]}-{int(stream_id.partition('-')[2] or 0) + 1}"


class _Batch:
    """The state one batch reads, changes and writes back, for one model and joiner."""

    def __init__(self, keys: Keys, model: str, config: QualityConfig, writer: str) -> None:
        self.keys, self.model, self.config, self.writer = keys, model, config, writer
        self.windows: dict[int, dict[StateKey, QualityState]] = {}
        self.applied: dict[int, dict[str, str]] = {}  # day -> id -> "value,weight,arrival"
        self.applied_changed: dict[int, dict[str, str]] = {}
        self.admitted: dict[str, set[str]] = {}  # dimension -> values kept apart
        self.admitted_new: dict[str, set[str]] = {}
        self.joined = self.replaced = self.late = 0
        self.unmatched: dict[str, int] = {}

    def load(self, client: RedisClient, found: Mapping[str, list[PredictionRecord]]) -> None:
        """Read this writer's windows, the applied labels and admitted values the rows touch,
        after the WATCH: each is written only with the watched checkpoint, so a change fails
        the EXEC."""
        minutes = sorted({r.time // 60 for records in found.values() for r in records})
        by_day: dict[int, list[str]] = {}
        for request_id, records in found.items():
            by_day.setdefault(day_of(records[0].time), []).append(request_id)
        dimensions = self.config.segments
        with client.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hget(self.keys.quality(self.model, minute), self.writer)
            for day, ids in by_day.items():
                pipe.hmget(self.keys.quality_applied(self.model, day), ids)
            for dimension in dimensions:
                pipe.smembers(self.keys.quality_segments(self.model, dimension))
            replies = pipe.execute()
        windows, replies = replies[: len(minutes)], replies[len(minutes) :]
        for minute, payload in zip(minutes, windows, strict=True):
            # Our own field unreadable: stop (QualityFormatError) rather than overwrite it.
            self.windows[minute] = {} if payload is None else decode_states(payload)
        applied, replies = replies[: len(by_day)], replies[len(by_day) :]
        for (day, ids), values in zip(by_day.items(), applied, strict=True):
            self.applied[day] = {i: as_text(v) for i, v in zip(ids, values, strict=True) if v}
        for dimension, members in zip(dimensions, replies, strict=True):
            self.admitted[dimension] = {as_text(m) for m in members}

    def apply(self, entry: StoredLabel | None, records: list[PredictionRecord] | None) -> None:
        """Add one label to its prediction's records (taking back the one it replaces)."""
        label = None if entry is None else label_of(self.config, entry.value)
        if entry is None or label is None:
            self._unmatched(INVALID)
        elif not records:
            self._unmatched(UNKNOWN_ID)
        elif self.config.task == "multiclass" and any(
            label_of(self.config, r.score) is None
            for r in records  # not a class index
        ):
            self._unmatched(INVALID)
        elif entry.arrival - records[0].time > self.config.label_deadline_seconds:
            self.late += 1
        else:
            day = day_of(records[0].time)
            previous = self.applied.setdefault(day, {}).get(entry.request_id)
            old = _parse_applied(self.config, previous) if previous else None
            for record in records:
                if old is not None:
                    self._add(record, old[0], -old[1], old[2] - record.time)
                self._add(record, label, entry.weight, entry.arrival - record.time)
            self.replaced += old is not None
            self.joined += 1
            text = f"{entry.value!r},{entry.weight!r},{entry.arrival!r}"
            self.applied[day][entry.request_id] = text
            self.applied_changed.setdefault(day, {})[entry.request_id] = text

    def _unmatched(self, reason: str) -> None:
        self.unmatched[reason] = self.unmatched.get(reason, 0) + 1

    def _segment(self, dimension: str, value: str) -> str:
        admitted = self.admitted.setdefault(dimension, set())
        if value in admitted:
            return value
        if len(admitted) >= self.config.max_segment_values:
            return OTHER
        admitted.add(value)
        self.admitted_new.setdefault(dimension, set()).add(value)
        return value

    def _add(self, record: PredictionRecord, label: float, weight: float, delay: float) -> None:
        window = self.windows.setdefault(record.time // 60, {})
        keys: list[StateKey] = [(record.version, record.role, "", "")]
        for index, dimension in enumerate(self.config.segments):
            value = record.segments[index] if index < len(record.segments) else MISSING
            keys.append((record.version, record.role, dimension, self._segment(dimension, value)))
        for key in keys:
            state = window.get(key)
            if state is None:
                state = window[key] = new_state(self.config.task)
            if isinstance(state, BinaryState):
                state.add(record.score, int(label), weight, self.config.threshold, delay)
            elif isinstance(state, MulticlassState):
                state.add(int(record.score), int(label), weight, delay)
            else:
                state.add(record.score, label, weight, delay)

    def queue_writes(self, pipe: Pipeline, checkpoint: str) -> None:
        """Queue every write of the batch (inside MULTI)."""
        model, keys = self.model, self.keys
        window_ttl = int(self.config.label_deadline_seconds) + 2 * DAY_SECONDS
        for minute, states in self.windows.items():
            if not states:
                continue
            pipe.hset(keys.quality(model, minute), self.writer, encode_states(states))
            pipe.expire(keys.quality(model, minute), window_ttl)
        pipe.set(keys.labels_checkpoint(model), checkpoint)
        lookup_ttl = int(self.config.label_deadline_seconds) + DAY_SECONDS
        for day, mapping in self.applied_changed.items():
            pipe.hset(keys.quality_applied(model, day), mapping=mapping)  # type: ignore[arg-type]  # key type is invariant
            pipe.expireat(keys.quality_applied(model, day), (day + 1) * DAY_SECONDS + lookup_ttl)
        for dimension, values in self.admitted_new.items():
            pipe.sadd(keys.quality_segments(model, dimension), *sorted(values))
        counts = {"joined": self.joined, "replaced": self.replaced, "late": self.late}
        counts.update({f"unmatched:{r}": n for r, n in self.unmatched.items()})
        for name, count in counts.items():
            if count:
                pipe.hincrby(keys.quality_counts(model), name, count)


def _parse_applied(config: QualityConfig, text: str) -> tuple[float, float, float] | None:
    """(label, weight, arrival) of a label applied before; None when unreadable."""
    try:
        value, weight, arrival = (float(part) for part in text.split(","))
    except ValueError:
        return None
    label = label_of(config, value)
    return None if label is None else (label, weight, arrival)


class LabelJoiner:
    """Joins a model's labels into its quality state as `writer` (its field of each window).
    Not thread-safe: one owner; several joiners (processes) may run, each under its own
    writer name, and each batch is counted once whichever of them joins it."""

    def __init__(self, client: RedisClient, keys: Keys, writer: str) -> None:
        self._redis = client
        self._keys = keys
        self.writer = validate_name(writer, "writer")
        self._predictions = PredictionStore(client, keys)

    def join(
        self, model: str, config: QualityConfig, lease_key: str | None,
        lease_value: str | None, now: float, batch: int = 1000, settle_seconds: float = 0.0,
    ) -> JoinResult:  # fmt: skip
        """Join up to `batch` labels after the model's checkpoint that arrived at least
        `settle_seconds` before `now` (by the stream's clock, Redis'): a gateway writes a
        prediction a few seconds after it was made, so a label given at once waits that long
        rather than being counted unmatched. With `lease_key`, join only while it holds
        `lease_value` (else lease_lost, nothing written). The checkpoint, WATCHed, is what
        counts each batch once: a joiner whose lease ran out mid-join and the one that took
        it over cannot both write a batch (the lease is in another hash slot than the model's
        keys, so a Redis Cluster transaction cannot watch both). A concurrent join retries
        the batch from the new checkpoint. Unreachable when Redis does not answer (the batch
        may or may not have been written; joining again is safe)."""
        validate_name(model, "model name")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        checkpoint_key = self._keys.labels_checkpoint(model)
        with redis_unreachable_as_error():
            while True:
                if lease_key is not None and as_text(self._redis.get(lease_key)) != lease_value:
                    return JoinResult(lease_lost=True)
                pipe = self._redis.pipeline(transaction=True)
                try:
                    pipe.watch(checkpoint_key)
                    result, last = self._attempt(pipe, model, config, now, batch,
                                                 settle_seconds)  # fmt: skip
                    if last is not None:
                        pipe.execute()
                        self._trim(model, last)
                    return result
                except redis.WatchError as exc:
                    lost = exc.__context__
                    if isinstance(lost, redis.ConnectionError | redis.TimeoutError):
                        raise Unreachable(f"Redis is unreachable: {lost}; the batch may or may"
                                          " not have been joined: join again") from exc  # fmt: skip
                finally:
                    release_pipeline(pipe)

    def _attempt(
        self, pipe: Pipeline, model: str, config: QualityConfig, now: float,
        batch: int, settle_seconds: float,
    ) -> tuple[JoinResult, str | None]:  # fmt: skip
        """Read a batch, queue its writes on `pipe`; the last id joined (None: nothing)."""
        checkpoint = as_text(pipe.get(self._keys.labels_checkpoint(model)))
        start = "-" if not checkpoint else f"({checkpoint}"
        end = "+" if settle_seconds <= 0 else str(int((now - settle_seconds) * 1000))
        read = self._redis.xrange(self._keys.labels(model), min=start, max=end, count=batch + 1)
        entries = list(read or [])
        if not entries:
            return JoinResult(), None
        taken = entries[:batch]
        parsed = [parse_stored_label(fields) for _, fields in taken]
        ids = [entry.request_id for entry in parsed if entry is not None]
        ttl = int(config.label_deadline_seconds) + DAY_SECONDS
        found = self._predictions.lookup(model, ids, ttl_seconds=ttl, now=now) if ids else {}
        work = _Batch(self._keys, model, config, self.writer)
        work.load(self._redis, found)
        for entry in parsed:
            work.apply(entry, None if entry is None else found.get(entry.request_id))
        last = as_text(taken[-1][0])
        pipe.multi()
        work.queue_writes(pipe, last)
        counts = (work.joined, work.replaced, dict(work.unmatched), work.late)
        return JoinResult(*counts, remaining=len(entries) > batch), last

    def _trim(self, model: str, last: str) -> None:
        """Drop the entries up to `last`; on failure the next join trims them."""
        try:
            self._redis.xtrim(self._keys.labels(model), minid=_next_id(last), approximate=False)
        except redis.RedisError as exc:
            _log.warning("label stream not trimmed", extra={"model": model, "reason": str(exc)})

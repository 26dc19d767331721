"""The prediction log's recorder: the request path and the shadow workers only queue a
reference to what a prediction answered; a background thread turns the queue into records
(scores picked, segments read, the rate cap applied), and a flusher writes them.

An id's records are held `hold_seconds` before they are written, so that its shadows' records,
which finish after the primary's, are written with it in one field (a write replaces an id's
field whole: that is what makes a retried write safe). Every prediction not logged is counted
once, by reason: `buffer` (the queue, or the ids held, were full), `rate` (over the model's cap
per second), `id` (an id over 128 characters), `score` (not a finite number), `shadow_late` (a
shadow's record whose primary's was already written, or not logged: written alone it would
replace the primary's), `redis` (held too long, or too many held, while Redis was unreachable).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from gateway._proto import grpc_service_pb2 as pb
from gateway.quality.segments import segment_values
from registry_client.quality.predictions import PRIMARY, SHADOW, PredictionRecord
from registry_client.quality.scores import scores_of
from registry_client.quality.task import QualityConfig

__all__ = ["MAX_ID_CHARS", "PredictionRecorder", "PredictionWrite", "ShadowPrediction"]

MAX_ID_CHARS = 128
_Observed = tuple[
    str, str, str, str, Mapping[str, pb.InferParameter], Sequence[tuple[str, str | bytes]],
    np.ndarray, float,
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PredictionWrite:
    """One model's predictions ready to be written: (id, its records) pairs."""

    model: str
    entries: list[tuple[str, list[PredictionRecord]]]


# An id's held records: when it was first seen, and its records (its primary's, then its
# shadows'). A plain tuple: one is made per prediction.
_Held = tuple[float, list[PredictionRecord]]


class PredictionRecorder:
    """Thread-safe. observe() is the request path's only call: an append, or a count when
    the queue holds `buffer` requests already."""

    def __init__(
        self,
        dropped: Counter,
        unknown_segments: Counter,
        buffer: int,
        max_per_second: float,
        hold_seconds: float,
        keep_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dropped = dropped  # labels: model, reason
        self._unknown_segments = unknown_segments  # labels: model
        self._capacity = buffer  # requests queued; ids held
        self._max_per_second = max_per_second
        self._hold_seconds = hold_seconds
        self._keep_seconds = keep_seconds
        self._clock = clock
        self._queue: deque[_Observed] = deque()
        self._state_lock = threading.Lock()
        self._configs: dict[str, QualityConfig] = {}
        self._held: dict[tuple[str, str], _Held] = {}  # (model, id) -> its records
        self._second: dict[str, tuple[int, int]] = {}  # model -> (second, logged in it)

    def set_config(self, model: str, config: QualityConfig | None) -> None:
        """The model's quality config (None: its predictions are not logged)."""
        with self._state_lock:
            if config is None:
                self._configs.pop(model, None)
            else:
                self._configs[model] = config

    def score_output(self, model: str) -> str | None:
        """The output the model's scores are read from (run even when not asked for); None
        when its predictions are not logged. One dict lookup: the request path asks."""
        config = self._configs.get(model)
        return None if config is None else config.score_output

    def release_held(self) -> None:
        """Hold nothing from now on: what is held is written at the next pending() (a
        draining gateway's last predictions)."""
        self._hold_seconds = 0.0

    def observe(
        self, model: str, version: str, role: str, request_id: str,
        parameters: Mapping[str, pb.InferParameter],
        metadata: Sequence[tuple[str, str | bytes]], scores: np.ndarray,
    ) -> None:  # fmt: skip
        """Queue one answered request's score output (a reference, never written after). No
        lock: a deque's append and len are atomic, and the bound may be overshot by the few
        requests that check it at the same moment."""
        queue = self._queue
        if len(queue) >= self._capacity:
            self._dropped.labels(model, "buffer").inc(scores.shape[0] if scores.ndim else 1)
            return
        queue.append((model, version, role, request_id, parameters, metadata, scores,
                      self._clock()))  # fmt: skip

    def fold(self) -> int:
        """Turn the queue into held records; returns the predictions kept."""
        queue = self._queue
        kept = 0
        with self._state_lock:
            for _ in range(len(queue)):  # what was queued by now; appends go on meanwhile
                kept += self._fold_one(*queue.popleft())
        return kept

    def _fold_one(
        self, model: str, version: str, role: str, request_id: str,
        parameters: Mapping[str, pb.InferParameter],
        metadata: Sequence[tuple[str, str | bytes]], scores: np.ndarray, seen: float,
    ) -> int:  # fmt: skip
        config = self._configs.get(model)
        if config is None:
            return 0
        values = scores_of(config, scores)
        if len(request_id) > MAX_ID_CHARS:
            self._dropped.labels(model, "id").inc(len(values))
            return 0
        segments, unknown = segment_values(config.segments, parameters, metadata)
        if unknown and role == PRIMARY:  # a shadow's request is its primary's: counted once
            self._unknown_segments.labels(model).inc(unknown)
        if role != PRIMARY:
            return self._fold_shadow(model, version, request_id, values, segments, seen)
        allowed = self._allowance(model, int(seen), len(values))
        if allowed < len(values):
            self._dropped.labels(model, "rate").inc(len(values) - allowed)
        kept = 0
        for row, score in enumerate(values[:allowed]):
            if not math.isfinite(score):
                self._dropped.labels(model, "score").inc()
                continue
            if len(self._held) >= self._capacity:  # held through an outage: memory is bounded
                self._dropped.labels(model, "buffer").inc()
                continue
            key = request_id if len(values) == 1 else f"{request_id}:{row}"
            record = PredictionRecord(version, PRIMARY, int(seen), segments, score)
            held = self._held.get((model, key))
            if held is None:
                self._held[model, key] = (seen, [record])
            else:
                held[1].append(record)
            kept += 1
        return kept

    def _fold_shadow(
        self, model: str, version: str, request_id: str, values: list[float],
        segments: tuple[str, ...], seen: float,
    ) -> int:  # fmt: skip
        """A shadow's records join their primary's, held; never written alone."""
        kept = 0
        for row, score in enumerate(values):
            key = request_id if len(values) == 1 else f"{request_id}:{row}"
            held = self._held.get((model, key))
            if held is None:
                self._dropped.labels(model, "shadow_late").inc()
            elif not math.isfinite(score):
                self._dropped.labels(model, "score").inc()
            else:
                held[1].append(PredictionRecord(version, SHADOW, int(seen), segments, score))
                kept += 1
        return kept

    def _allowance(self, model: str, second: int, rows: int) -> int:
        """How many of `rows` the model's cap per second still lets through."""
        current, logged = self._second.get(model, (second, 0))
        if current != second:
            logged = 0
        allowed = max(0, min(rows, int(self._max_per_second) - logged))
        self._second[model] = (second, logged + allowed)
        return allowed

    def pending(self) -> list[PredictionWrite]:
        """Fold, then take the ids held `hold_seconds` (their shadows have had their time),
        one write per model. Call failed() when the write does not succeed."""
        self.fold()
        ready_before = self._clock() - self._hold_seconds
        by_model: dict[str, list[tuple[str, list[PredictionRecord]]]] = {}
        with self._state_lock:
            for (model, key), held in list(self._held.items()):
                if held[0] <= ready_before:
                    by_model.setdefault(model, []).append((key, held[1]))
                    del self._held[model, key]
        return [PredictionWrite(model, entries) for model, entries in by_model.items()]

    def failed(self, writes: Iterable[PredictionWrite]) -> None:
        """Hold what could not be written again; what has waited `keep_seconds`, or does not
        fit in `buffer` held ids, is given up (each of its records counted
        `redis`), so an outage costs bounded memory."""
        give_up_before = self._clock() - self._keep_seconds
        with self._state_lock:
            for write in writes:
                for key, records in write.entries:
                    too_many = len(self._held) >= self._capacity
                    if records[0].time < give_up_before or too_many:
                        self._dropped.labels(write.model, "redis").inc(len(records))
                        continue
                    held = self._held.setdefault((write.model, key), (records[0].time, []))
                    held[1][:0] = records

    def held(self) -> int:
        with self._state_lock:
            return len(self._held)


@dataclass(frozen=True, slots=True)
class ShadowPrediction:
    """What a shadow run needs to log its prediction under its primary's id: the request's
    id, parameters and metadata (references), and where its score output is among the
    outputs it runs."""

    recorder: PredictionRecorder
    request_id: str
    parameters: Mapping[str, pb.InferParameter]
    metadata: Sequence[tuple[str, str | bytes]]
    score_at: int

    def observe(
        self, model: str, version: str, outputs: Sequence[np.ndarray], role: str = SHADOW
    ) -> None:
        self.recorder.observe(model, version, role, self.request_id, self.parameters,
                              self.metadata, outputs[self.score_at])  # fmt: skip

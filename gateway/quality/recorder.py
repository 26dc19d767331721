"""The prediction log's recorder: the request path and the shadow workers only queue a
reference to what a prediction answered (a primary over its model's cap is only counted); a
background thread turns the queue into records (scores picked, segments read, the cap held
exactly, per row), and a flusher writes them. The request path never keeps a reference to
the request's parameters map, which would keep the whole request message alive until the
fold: it keeps the text of the segment parameters (gateway/quality/segments.py).

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
from gateway.quality.segments import SegmentParameters, segment_parameters, segment_values
from registry_client.quality.predictions import PRIMARY, SHADOW, PredictionRecord
from registry_client.quality.scores import rows_of, scores_of
from registry_client.quality.task import QualityConfig

__all__ = ["MAX_ID_CHARS", "PredictionRecorder", "PredictionWrite", "ShadowPrediction"]

MAX_ID_CHARS = 128
_Observed = tuple[
    str, str, str, str, SegmentParameters, Sequence[tuple[str, str | bytes]],
    np.ndarray, float,
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PredictionWrite:
    """One model's predictions ready to be written: (id, its records) pairs."""

    model: str
    entries: list[tuple[str, tuple[PredictionRecord, ...]]]


# An id's held records: when it was first seen, and its records (its primary's, then its
# shadows'). Tuples all the way down, never lists: a tuple of strings and numbers is untracked
# by the garbage collector once it has seen it, so thousands of held ids add nothing to the
# collections the whole gateway pays for.
_Held = tuple[float, tuple[PredictionRecord, ...]]


class PredictionRecorder:
    """Thread-safe. observe() is the request path's only call: an append; a count instead
    when the model's cap is reached this second or the queue holds `buffer` requests."""

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
        # model -> id -> its records, in the order first seen (so the ready ones come first)
        self._held: dict[str, dict[str, _Held]] = {}
        self._held_count = 0
        self._second: dict[str, list[int]] = {}  # model -> [second, rows logged in it]
        self._admitted: dict[str, list[int]] = {}  # model -> [second, requests let through]
        self._over_cap: deque[tuple[str, int]] = deque()  # (model, rows) not let through

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
        """Queue one answered request's score output (a reference, never written after) and
        the text of its segment parameters. A primary over its model's cap this second is
        not queued, only counted: traffic far above the cap costs a few lookups a request.
        No lock: a deque's append and len are atomic; the bound and the cap may be overshot
        by the few requests that check them at the same moment (the fold holds the cap
        exactly)."""
        now = self._clock()
        if role == PRIMARY and not self._admit(model, int(now)):
            config = self._configs.get(model)
            self._over_cap.append((model, 1 if config is None else rows_of(config, scores)))
            return
        queue = self._queue
        if len(queue) >= self._capacity:
            config = self._configs.get(model)
            rows = 1 if config is None else rows_of(config, scores)
            self._dropped.labels(model, "buffer").inc(rows)
            return
        queue.append((model, version, role, request_id, segment_parameters(parameters),
                      metadata, scores, now))  # fmt: skip

    def _admit(self, model: str, second: int) -> bool:
        """Whether the model's cap lets one more request be logged in this second."""
        window = self._admitted.get(model)
        if window is None or window[0] != second:
            window = self._admitted[model] = [second, 0]
        if window[1] >= self._max_per_second:
            return False
        window[1] += 1
        return True

    def fold(self) -> int:
        """Turn the queue into held records; returns the predictions kept."""
        over_cap: dict[str, int] = {}
        for _ in range(len(self._over_cap)):
            model, rows = self._over_cap.popleft()
            over_cap[model] = over_cap.get(model, 0) + rows
        for model, rows in over_cap.items():
            self._dropped.labels(model, "rate").inc(rows)
        queue = self._queue
        kept = 0
        with self._state_lock:
            for _ in range(len(queue)):  # what was queued by now; appends go on meanwhile
                kept += self._fold_one(*queue.popleft())
        return kept

    def _fold_one(
        self, model: str, version: str, role: str, request_id: str,
        parameters: SegmentParameters,
        metadata: Sequence[tuple[str, str | bytes]], scores: np.ndarray, seen: float,
    ) -> int:  # fmt: skip
        config = self._configs.get(model)
        if config is None:
            return 0
        values = scores_of(config, scores)
        if len(request_id) > MAX_ID_CHARS:
            self._dropped.labels(model, "id").inc(len(values))
            return 0
        held = self._held.get(model)
        if held is None:
            held = self._held[model] = {}
        if role != PRIMARY:
            segments, _ = segment_values(config.segments, parameters, metadata)
            return self._fold_shadow(model, version, request_id, values, segments, seen, held)
        allowed = self._allowance(model, int(seen), len(values))
        if allowed < len(values):
            self._dropped.labels(model, "rate").inc(len(values) - allowed)
            if not allowed:
                return 0  # over the cap: cheap, as most are when traffic far exceeds it
        segments, unknown = segment_values(config.segments, parameters, metadata)
        if unknown:  # a shadow's request is its primary's: counted once, here
            self._unknown_segments.labels(model).inc(unknown)
        kept = 0
        for row in range(allowed):
            score = values[row]
            if not math.isfinite(score):
                self._dropped.labels(model, "score").inc()
                continue
            key = request_id if len(values) == 1 else f"{request_id}:{row}"
            record = PredictionRecord(version, PRIMARY, int(seen), segments, score)
            found = held.get(key)
            if found is not None:  # an id reused while held
                held[key] = (found[0], (*found[1], record))
            elif self._held_count >= self._capacity:  # held through an outage: bounded
                self._dropped.labels(model, "buffer").inc()
                continue
            else:
                held[key] = (seen, (record,))
                self._held_count += 1
            kept += 1
        return kept

    def _fold_shadow(
        self, model: str, version: str, request_id: str, values: list[float],
        segments: tuple[str, ...], seen: float, held: dict[str, _Held],
    ) -> int:  # fmt: skip
        """A shadow's records join their primary's, held; never written alone."""
        kept = 0
        for row, score in enumerate(values):
            key = request_id if len(values) == 1 else f"{request_id}:{row}"
            found = held.get(key)
            if found is None:
                self._dropped.labels(model, "shadow_late").inc()
            elif not math.isfinite(score):
                self._dropped.labels(model, "score").inc()
            else:
                record = PredictionRecord(version, SHADOW, int(seen), segments, score)
                held[key] = (found[0], (*found[1], record))
                kept += 1
        return kept

    def _allowance(self, model: str, second: int, rows: int) -> int:
        """How many of `rows` the model's cap per second still lets through."""
        counted = self._second.get(model)
        if counted is None:
            counted = self._second[model] = [second, 0]
        elif counted[0] != second:
            counted[0], counted[1] = second, 0
        allowed = max(0, min(rows, int(self._max_per_second) - counted[1]))
        counted[1] += allowed
        return allowed

    def pending(self) -> list[PredictionWrite]:
        """Fold, then take the ids held `hold_seconds` (their shadows have had their time),
        one write per model. Call failed() when the write does not succeed."""
        self.fold()
        ready_before = self._clock() - self._hold_seconds
        writes = []
        with self._state_lock:
            for model, held in self._held.items():
                entries = []
                for key, (first_seen, records) in held.items():
                    if first_seen > ready_before:
                        break  # held in the order first seen: the rest are not ready either
                    entries.append((key, records))
                for key, _ in entries:
                    del held[key]
                self._held_count -= len(entries)
                if entries:
                    writes.append(PredictionWrite(model, entries))
        return writes

    def failed(self, writes: Iterable[PredictionWrite]) -> None:
        """Hold what could not be written again, ready to be retried at once; what has
        waited `keep_seconds`, or does not fit in `buffer` held ids, is given up (each of its
        records counted `redis`), so an outage costs bounded memory."""
        give_up_before = self._clock() - self._keep_seconds
        with self._state_lock:
            for write in writes:
                held = self._held.setdefault(write.model, {})
                retried = {}
                for key, records in write.entries:
                    if records[0].time < give_up_before or self._held_count >= self._capacity:
                        self._dropped.labels(write.model, "redis").inc(len(records))
                        continue
                    found = held.pop(key, None)  # a shadow's records folded since
                    if found is not None:
                        records = records + found[1]
                    else:
                        self._held_count += 1
                    retried[key] = (float(records[0].time), records)
                # First, so that the next pending() reaches them before what is still held.
                self._held[write.model] = retried | held

    def held(self) -> int:
        with self._state_lock:
            return self._held_count


@dataclass(frozen=True, slots=True)
class ShadowPrediction:
    """What a shadow run needs to log its prediction under its primary's id: the request's
    id, parameters and metadata (references: the request is kept only while its shadows
    run), and where its score output is among the outputs it runs."""

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

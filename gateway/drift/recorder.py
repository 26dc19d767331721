"""Drift recording: the request path only queues a reference to its inputs; a background
thread folds them into per-feature sketches of the current minute; closed minutes are merged
into the hour (the rollup readers use beyond the minutes' retention)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Counter

from gateway.drift.sampling import RowSampler
from gateway.telemetry.window_ledger import mark_unwritten, take_pending
from registry_client.drift.features import feature_columns
from registry_client.drift.sketch import (
    FeatureSketch,
    ReferenceBins,
    encode_sketches,
    merge_sketches,
)
from registry_client.drift.store import HOUR, MINUTE, SketchWrite
from registry_client.stats.window import window_of

__all__ = ["OUTPUT_PREFIX", "DriftRecorder"]

OUTPUT_PREFIX = "output:"
_Observed = tuple[str, str, Mapping[str, np.ndarray], int, Sequence[str], Sequence[np.ndarray]]


@dataclass(slots=True)
class _Window:
    features: dict[str, FeatureSketch] = field(default_factory=dict)
    rows: int = 0
    dirty: bool = True
    confirmed: bool = False
    in_hour: bool = False  # a closed minute is merged into its hour once

    def add(self, other: _Window) -> None:
        self.rows += other.rows
        merge_sketches(self.features, other.features.items())
        self.dirty = True


class DriftRecorder:
    """Thread-safe. observe() is the request path's only call: it never folds and never
    blocks on I/O; over `buffer_rows` queued rows, inputs are dropped and counted. With a
    sampler, a version's rows over its rate are a uniform sample (sampling.py)."""

    def __init__(
        self,
        dropped: Counter,
        buffer_rows: int,
        clock: Callable[[], float] = time.time,
        keep_minutes: int = 60,
        on_given_up: Callable[[], None] = lambda: None,
        sampler: RowSampler | None = None,
    ) -> None:
        self._on_given_up = on_given_up  # told of each minute dropped unwritten
        self._dropped = dropped
        self._sampler = sampler  # None: every row is sketched
        self._capacity = buffer_rows
        self._clock = clock
        self._keep_minutes = keep_minutes
        self._buffer_lock = threading.Lock()
        self._buffer: deque[_Observed] = deque()
        self._buffered_rows = 0
        self._state_lock = threading.Lock()
        self._windows: dict[tuple[str, str, str, int], _Window] = {}
        self._bins: dict[tuple[str, str], Mapping[str, ReferenceBins]] = {}
        self._names: dict[tuple[str, str], Mapping[str, Sequence[str]]] = {}

    def observe(
        self,
        model: str,
        version: str,
        feeds: Mapping[str, np.ndarray],
        output_names: Sequence[str] = (),
        outputs: Sequence[np.ndarray] = (),
    ) -> None:
        """Queue the inputs of one served request and the outputs it answered (references,
        not copies: the inputs are read-only views of the request, the outputs are not
        written after). Outputs are sketched as features named `output:NAME...`, so a
        canary's answers can be compared with the baseline's as its inputs are."""
        if self._sampler is not None and self._sampler.skips(model, version):
            return
        first = next(iter(feeds.values()), None)
        rows = first.shape[0] if first is not None and first.ndim else 1
        with self._buffer_lock:
            if self._buffered_rows + rows > self._capacity:
                self._dropped.labels(model).inc(rows)
                return
            self._buffer.append((model, version, feeds, rows, output_names, outputs))
            self._buffered_rows += rows

    def set_bins(self, model: str, version: str, bins: Mapping[str, ReferenceBins]) -> None:
        """The reference's bins per feature of a version; histograms are counted on them."""
        with self._state_lock:
            self._bins[model, version] = bins

    def set_feature_names(
        self, model: str, version: str, names: Mapping[str, Sequence[str]]
    ) -> None:
        """The column names a version registered, per input."""
        with self._state_lock:
            self._names[model, version] = names

    def fold(self) -> int:
        """Fold the queued inputs into the current minute's sketches; returns rows folded."""
        with self._buffer_lock:
            queued, self._buffer = self._buffer, deque()
            self._buffered_rows = 0
        grouped: dict[tuple[str, str, str, tuple[int, ...]], list[np.ndarray]] = defaultdict(list)
        rows: dict[tuple[str, str], int] = defaultdict(int)
        for model, version, feeds, count, output_names, outputs in queued:
            rows[model, version] += count
            for name, array in feeds.items():
                grouped[model, version, name, array.shape[1:]].append(array)
            for name, array in zip(output_names, outputs, strict=True):
                if array.ndim:
                    grouped[model, version, OUTPUT_PREFIX + name, array.shape[1:]].append(array)
        minute = window_of(self._clock())
        with self._state_lock:
            if self._sampler is not None:
                self._sampler.counted(rows)
            for (model, version), count in rows.items():
                state = self._windows.setdefault((model, version, MINUTE, minute), _Window())
                state.rows += count
                state.dirty = True
            for (model, version, name, _), arrays in grouped.items():
                batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
                features = self._windows[model, version, MINUTE, minute].features
                bins = self._bins.get((model, version), {})
                names = self._names.get((model, version), {}).get(name)
                for feature, column in feature_columns(name, batch, names):
                    if feature not in features:
                        features[feature] = FeatureSketch()
                    features[feature].update(column, bins.get(feature))
        return sum(rows.values())

    def pending(self) -> list[SketchWrite]:
        """Fold, roll closed minutes into their hour, and encode every changed window; a
        closed window already written is written once more, then forgotten (window_ledger
        says why). Call failed() when the write does not succeed."""
        self.fold()
        now = self._clock()
        minute, hour = window_of(now), int(now // 3600)
        with self._state_lock:
            for (model, version, granularity, window), state in list(self._windows.items()):
                if granularity == MINUTE and window < minute and not state.in_hour:
                    hour_key = (model, version, HOUR, window * 60 // 3600)
                    self._windows.setdefault(hour_key, _Window()).add(state)
                    state.in_hour = True
            return take_pending(
                self._windows,
                closed=lambda key: key[3] < (minute if key[2] == MINUTE else hour),
                expired=lambda key: key[2] == MINUTE and key[3] < minute - self._keep_minutes,
                encode=lambda key, state: SketchWrite(
                    *key, encode_sketches(state.rows, state.features)
                ),
                what="drift",
                on_given_up=self._on_given_up,
            )

    def failed(self, writes: Iterable[SketchWrite]) -> None:
        with self._state_lock:
            mark_unwritten(self._windows, [item.key for item in writes])

    def windows(self) -> int:
        with self._state_lock:
            return len(self._windows)

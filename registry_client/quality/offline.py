"""A version's quality on a labelled dataset, before it serves: the same states, metrics and
fairness figures live predictions are judged by, computed from rows scored offline.

Rows go through what the join does to a live prediction: the label checked and mapped as the
task takes it, each segment value read as the gateway reads one (empty, unprintable or over 64
characters: `__missing__`) and kept apart up to the model's `max_segment_values` in the order
met (the rest: `__other__`), so an evaluation and the live figures of a version compare.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry_client.errors import Rejected
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.fairness import fairness_gap, fairness_report
from registry_client.quality.metrics import Metrics, metrics_of
from registry_client.quality.predictions import MISSING, OTHER
from registry_client.quality.state import (
    MAX_CLASSES,
    BinaryState,
    MulticlassState,
    QualityState,
    new_state,
)
from registry_client.quality.task import QualityConfig

__all__ = [
    "MAX_SEGMENT_VALUE_CHARS",
    "MIN_SEGMENT_ROWS",
    "DatasetHashes",
    "capped_segments",
    "evaluate_rows",
    "task_labels",
]

# As the gateway reads a request's segment value (gateway/quality/segments.py, which
# registry_client may not import): a category, not a payload.
MAX_SEGMENT_VALUE_CHARS = 64
# A segment value with fewer labelled rows is left out of the fairness figures: a rate over a
# handful of rows is noise, and a gap between two such rates would refuse good models.
MIN_SEGMENT_ROWS = 30


@dataclass(frozen=True, slots=True)
class DatasetHashes:
    """The sha256 of each file an evaluation read (segments: None when none was given)."""

    data: str
    labels: str
    segments: str | None


def task_labels(config: QualityConfig, values: Sequence[float]) -> list[float]:
    """The label each state is given for `values`, as the join maps a label: binary 0 or 1
    (1 for the config's positive label), a multiclass class index under 64, a finite value for
    regression. Rejected naming the first row the task cannot take."""
    out: list[float] = []
    for row, value in enumerate(values):
        if not math.isfinite(value):
            raise Rejected(f"labels[{row}]: {value!r} is not a finite number")
        if config.task == "regression":
            out.append(float(value))
        elif config.task == "binary":
            if value not in (0, 1):
                raise Rejected(f"labels[{row}]: {value!r} is not a binary label (0 or 1)")
            out.append(1.0 if int(value) == config.positive_label else 0.0)
        else:
            if not float(value).is_integer() or not 0 <= value < MAX_CLASSES:
                raise Rejected(f"labels[{row}]: {value!r} is not a class index (an integer"
                               f" from 0 to {MAX_CLASSES - 1})")  # fmt: skip
            out.append(float(value))
    return out


def capped_segments(config: QualityConfig, values: Sequence[str]) -> list[str]:
    """One dimension's values as the join keys them: unusable ones `__missing__`, the first
    `max_segment_values` distinct ones kept apart in the order met, the rest `__other__`."""
    admitted: set[str] = set()
    out: list[str] = []
    for raw in values:
        usable = raw if raw and len(raw) <= MAX_SEGMENT_VALUE_CHARS and raw.isprintable() else (
            MISSING)  # fmt: skip
        if usable not in admitted and len(admitted) < config.max_segment_values:
            admitted.add(usable)
        out.append(usable if usable in admitted else OTHER)
    return out


def _add(config: QualityConfig, state: QualityState, score: float, label: float) -> None:
    if isinstance(state, BinaryState):
        state.add(score, int(label), 1.0, config.threshold)
    elif isinstance(state, MulticlassState):
        state.add(int(score), int(label))
    else:
        state.add(score, label)


def evaluate_rows(
    config: QualityConfig, scores: Sequence[float], labels: Sequence[float],
    segments: Mapping[str, Sequence[str]], hashes: DatasetHashes,
    min_segment_rows: float = MIN_SEGMENT_ROWS, now: float | None = None,
) -> Evaluation:  # fmt: skip
    """The Evaluation of scored rows: `scores` as scores_of() gives them, `labels` raw (checked
    by task_labels), `segments` the raw values of each dimension, row by row. Rejected names
    the first row or dimension that cannot be used."""
    rows = len(scores)
    if len(labels) != rows:
        raise Rejected(f"labels: {len(labels)} rows, the model scored {rows}")
    if rows == 0:
        raise Rejected("data: no rows to evaluate")
    unknown = sorted(set(segments) - set(config.segments))
    if unknown:
        raise Rejected(f"segments: {', '.join(unknown)} not among the model's segments"
                       f" ({', '.join(config.segments) or 'none'})")  # fmt: skip
    for dimension, values in segments.items():
        if len(values) != rows:
            raise Rejected(f"segments: {len(values)} rows of {dimension}, the data has {rows}")
    mapped = task_labels(config, labels)
    for row, score in enumerate(scores):
        if not math.isfinite(score):
            raise Rejected(f"scores[{row}]: the model's score {score!r} is not finite")
        if config.task == "multiclass" and not 0 <= score < MAX_CLASSES:
            raise Rejected(f"scores[{row}]: the model predicts class {score:g}; quality keeps"
                           f" classes 0 to {MAX_CLASSES - 1}")  # fmt: skip
    overall = new_state(config.task)
    by_value: dict[str, dict[str, QualityState]] = {d: {} for d in segments}
    keyed = {d: capped_segments(config, values) for d, values in segments.items()}
    for row, (score, label) in enumerate(zip(scores, mapped, strict=True)):
        _add(config, overall, score, label)
        for dimension, values in keyed.items():
            state = by_value[dimension].get(values[row])
            if state is None:
                state = by_value[dimension][values[row]] = new_state(config.task)
            _add(config, state, score, label)
    segment_metrics: dict[str, dict[str, Metrics]] = {
        d: {v: metrics_of(s) for v, s in sorted(states.items())} for d, states in by_value.items()
    }
    fairness: dict[str, dict[str, object]] = {}
    gaps: dict[str, tuple[str, float, str]] = {}
    for dimension, states in by_value.items():
        binary = {v: s for v, s in states.items() if isinstance(s, BinaryState)}
        if binary:
            fairness[dimension] = fairness_report(binary, min_segment_rows).to_json()
        gap = fairness_gap(states, min_segment_rows)
        if gap is not None:
            gaps[dimension] = gap
    return Evaluation(
        time=time.time() if now is None else now, data_sha256=hashes.data,
        labels_sha256=hashes.labels, segments_sha256=hashes.segments, rows=rows,
        task=config.task, metrics=metrics_of(overall), segments=segment_metrics,
        fairness=fairness, gaps=gaps,
    )  # fmt: skip

"""Labels in: each names a prediction by its id and gives the true value; they are appended to
the model's label stream `{ns:model}:labels` and joined with their predictions later (join.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from registry_client.connection import RedisClient
from registry_client.errors import Rejected, redis_unreachable_as_error
from registry_client.quality.state import MAX_CLASSES
from registry_client.quality.task import QualityConfig
from registry_client.records.values import as_text
from registry_client.schema import Keys, brief_repr, validate_name

__all__ = [
    "MAX_ID_CHARS",
    "Label",
    "LabelStore",
    "StoredLabel",
    "label_of",
    "label_problem",
    "parse_stored_label",
]

MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Label:
    """The true value of the prediction `request_id` (the class for a classifier), with a
    weight > 0 (1 unless the rows are weighted)."""

    request_id: str
    value: float
    weight: float = 1.0


def _is_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))  # fmt: skip


def label_problem(label: Label) -> tuple[str, str] | None:
    """(field, what is wrong) for an invalid label, None for a valid one."""
    rid = label.request_id
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID_CHARS or not rid.isprintable():
        return "request_id", f"expected 1 to {MAX_ID_CHARS} printable characters"
    if not _is_number(label.value):
        return "value", "expected a finite number"
    if not _is_number(label.weight) or label.weight <= 0:
        return "weight", "expected a finite number > 0"
    return None


class LabelStore:
    """Appends labels to a model's stream; thread-safe (redis-py pools are)."""

    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    def put(self, model: str, labels: Sequence[Label], now: float) -> int:
        """Append every label (fields id, v, w and t, the arrival time `now` in Unix seconds)
        and return how many were appended. Rejected names the field and index of the first
        invalid label; then nothing is appended."""
        validate_name(model, "model name")
        for index, label in enumerate(labels):
            problem = label_problem(label)
            if problem is not None:
                field, expected = problem
                raise Rejected(f"labels[{index}].{field}: {expected},"
                               f" got {brief_repr(getattr(label, field))}")  # fmt: skip
        if not labels:
            return 0
        stream = self._keys.labels(model)
        arrival = repr(float(now))
        with redis_unreachable_as_error(), self._redis.pipeline(transaction=False) as pipe:
            for label in labels:
                fields = {"id": label.request_id, "v": repr(float(label.value)),
                          "w": repr(float(label.weight)), "t": arrival}  # fmt: skip
                pipe.xadd(stream, fields)  # type: ignore[arg-type]  # key type is invariant
            pipe.execute()
        return len(labels)


@dataclass(frozen=True, slots=True)
class StoredLabel:
    """A label as the stream holds it, with its arrival time (Unix seconds)."""

    request_id: str
    value: float
    weight: float
    arrival: float


def parse_stored_label(stored: Mapping[bytes | str, bytes | str] | None) -> StoredLabel | None:
    """The label a stream entry holds; None when it is unreadable or invalid."""
    try:
        fields = {as_text(k): as_text(v) for k, v in (stored or {}).items()}
        entry = StoredLabel(fields.get("id", ""), float(fields["v"]), float(fields["w"]),
                       float(fields["t"]))  # fmt: skip
    except (KeyError, ValueError):
        return None
    numbers = (entry.value, entry.weight, entry.arrival)
    if not entry.request_id or not all(map(math.isfinite, numbers)) or entry.weight <= 0:
        return None
    return entry


def label_of(config: QualityConfig, value: float) -> float | None:
    """The label a state is given for a label value; None when the task cannot use it."""
    if config.task == "regression":
        return value
    if not value.is_integer():
        return None
    if config.task == "binary":
        return (1.0 if int(value) == config.positive_label else 0.0) if value in (0, 1) else None
    return value if 0 <= value < MAX_CLASSES else None

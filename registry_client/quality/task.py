"""What a model's quality is measured as: its task (binary, multiclass, regression), which
output holds the score, and the segments its labels are grouped by; the defaults inferred from
a version's output signature."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from registry_client.errors import Rejected
from registry_client.schema import NAME_RULE, brief_repr, is_valid_name

__all__ = [
    "MAX_LABEL_DEADLINE_SECONDS",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_VALUES",
    "TASKS",
    "OutputSignature",
    "QualityConfig",
    "infer_config",
    "parse_score_output",
    "signature_outputs",
]

TASKS = ("binary", "multiclass", "regression")
MAX_SEGMENTS = 8
MAX_SEGMENT_VALUES = 1024
MAX_LABEL_DEADLINE_SECONDS = 90 * 86400
FLOATING = ("FP16", "FP32", "FP64")
# onnxruntime's type strings, as a version's stored signature holds them, to OIP datatypes
# (as gateway/models/datatypes.py maps them; registry_client does not import the gateway).
_ONNX_TYPES = {
    "tensor(bool)": "BOOL", "tensor(uint8)": "UINT8", "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32", "tensor(uint64)": "UINT64", "tensor(int8)": "INT8",
    "tensor(int16)": "INT16", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
    "tensor(float16)": "FP16", "tensor(float)": "FP32", "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}  # fmt: skip
_SCORE_OUTPUT = re.compile(r"([^:]+)(?::(\d+))?")
# Each field as the error messages name it: the field, and gatectl's flag for it.
_FLAGS = {
    "task": "--task", "score_output": "--score-output", "score_index": "--score-output INDEX",
    "threshold": "--threshold", "positive_label": "--positive-label",
    "segments": "--segments", "max_segment_values": "--max-segment-values",
    "label_deadline_seconds": "--label-deadline",
}  # fmt: skip

# (name, OIP datatype, shape with -1 for dynamic dimensions)
OutputSignature = tuple[str, str, tuple[int, ...]]


def _field(name: str) -> str:
    return f"{name} ({_FLAGS[name]})"


@dataclass(frozen=True, slots=True)
class QualityConfig:
    """How a model's predictions are scored against their labels; validate() before use."""

    task: str
    score_output: str
    score_index: int | None  # the column of the score output; None: the whole row
    threshold: float = 0.5  # binary: a score at or above it predicts the positive class
    positive_label: int = 1
    segments: tuple[str, ...] = ()  # label attributes quality is also reported by
    max_segment_values: int = 32  # values per segment kept apart; the rest count as "other"
    label_deadline_seconds: float = 7 * 86400  # a prediction without a label by then: unlabelled

    def validate(self) -> QualityConfig:
        """Return self, or raise Rejected naming the field and what was expected."""
        if self.task not in TASKS:
            raise Rejected(f"{_field('task')}: expected one of {', '.join(TASKS)},"
                           f" got {brief_repr(self.task)}")  # fmt: skip
        if not self.score_output:
            raise Rejected(f"{_field('score_output')}: expected an output name, got ''")
        index = self.score_index
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)
                                  or index < 0):  # fmt: skip
            raise Rejected(f"{_field('score_index')}: expected an integer >= 0 or none,"
                           f" got {brief_repr(index)}")  # fmt: skip
        threshold = self.threshold
        if (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                or not math.isfinite(threshold) or not 0 <= threshold <= 1):  # fmt: skip
            raise Rejected(f"{_field('threshold')}: expected a number from 0 to 1,"
                           f" got {brief_repr(threshold)}")  # fmt: skip
        if isinstance(self.positive_label, bool) or self.positive_label not in (0, 1):
            raise Rejected(f"{_field('positive_label')}: expected 0 or 1,"
                           f" got {brief_repr(self.positive_label)}")  # fmt: skip
        self._validate_segments()
        values = self.max_segment_values
        if (
            isinstance(values, bool)
            or not isinstance(values, int)
            or not (1 <= values <= MAX_SEGMENT_VALUES)
        ):
            raise Rejected(f"{_field('max_segment_values')}: expected 1 to {MAX_SEGMENT_VALUES},"
                           f" got {brief_repr(values)}")  # fmt: skip
        deadline = self.label_deadline_seconds
        if (isinstance(deadline, bool) or not isinstance(deadline, int | float)
                or not 0 < deadline <= MAX_LABEL_DEADLINE_SECONDS):  # fmt: skip
            raise Rejected(f"{_field('label_deadline_seconds')}: expected more than 0 seconds"
                           f" and at most 90 days, got {brief_repr(deadline)}")  # fmt: skip
        return self

    def _validate_segments(self) -> None:
        if not isinstance(self.segments, tuple):
            raise Rejected(f"{_field('segments')}: expected a list of names,"
                           f" got {brief_repr(self.segments)}")  # fmt: skip
        if len(self.segments) > MAX_SEGMENTS:
            raise Rejected(f"{_field('segments')}: expected at most {MAX_SEGMENTS},"
                           f" got {len(self.segments)}")  # fmt: skip
        for segment in self.segments:
            if not isinstance(segment, str) or not is_valid_name(segment):
                raise Rejected(f"{_field('segments')}: {brief_repr(segment)} is not valid:"
                               f" expected {NAME_RULE}")  # fmt: skip
        if len(set(self.segments)) != len(self.segments):
            twice = sorted({s for s in self.segments if self.segments.count(s) > 1})
            raise Rejected(f"{_field('segments')}: each at most once, got {', '.join(twice)}"
                           " more than once")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON holds them (segments a list)."""
        fields = asdict(self)
        fields["segments"] = list(self.segments)
        return fields

    def to_json(self) -> str:
        """Compact JSON with sorted keys, as the model's `quality` field stores it."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> QualityConfig:
        """Parse and validate to_json()'s form; Rejected says what is wrong."""
        try:
            fields = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Rejected(f"quality config: not JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise Rejected(f"quality config: expected an object, got {brief_repr(fields)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        missing = sorted({"task", "score_output", "score_index"} - set(fields))
        if unknown or missing:
            raise Rejected(f"quality config: unknown fields {unknown}, missing {missing}")
        if isinstance(fields.get("segments"), list):
            fields["segments"] = tuple(fields["segments"])
        return cls(**fields).validate()


def parse_score_output(text: str) -> tuple[str, int | None]:
    """'probabilities:1' -> ('probabilities', 1); 'score' -> ('score', None)."""
    match = _SCORE_OUTPUT.fullmatch(text.strip())
    if match is None or not match.group(1).strip():
        raise Rejected(f"{_field('score_output')}: expected NAME or NAME:INDEX (INDEX an"
                       f" integer >= 0), got {brief_repr(text)}")  # fmt: skip
    index = match.group(2)
    return match.group(1).strip(), None if index is None else int(index)


def signature_outputs(signature: Mapping[str, Any]) -> list[OutputSignature]:
    """The outputs of a version's stored signature ({"outputs": [{name, type, shape}]}) as
    infer_config() takes them; onnxruntime's types become OIP datatypes (FP32, ...)."""
    outputs = []
    for output in signature.get("outputs", []):
        onnx_type = str(output.get("type", ""))
        shape = tuple(int(d) for d in output.get("shape", []))
        outputs.append((str(output["name"]), _ONNX_TYPES.get(onnx_type, onnx_type), shape))
    return outputs


def _width(shape: tuple[int, ...]) -> int | None:
    """Values per row: 1 for a rank-1 output (one per row), the last dimension when known."""
    if len(shape) == 1:
        return 1
    if len(shape) >= 2 and shape[-1] > 0:
        return shape[-1]
    return None


def _describe(outputs: Sequence[OutputSignature]) -> str:
    found = ", ".join(f"{n} {t} {list(s)}" for n, t, s in outputs)
    return found or "none"


def infer_config(
    outputs: Sequence[OutputSignature] | None, *, task: str | None = None,
    score_output: str | None = None, threshold: float | None = None,
    positive_label: int | None = None, segments: Sequence[str] | None = None,
    max_segment_values: int | None = None, label_deadline_seconds: float | None = None,
) -> QualityConfig:  # fmt: skip
    """A validated QualityConfig: the given fields (None: the default), the score output and
    task inferred from the output signature when not given. `score_output` is NAME[:INDEX].

    `outputs` None: no signature is known (no version yet); then both `task` and
    `score_output` are needed and are taken as given."""
    positive = 1 if positive_label is None else positive_label
    if task is not None and task not in TASKS:
        raise Rejected(f"{_field('task')}: expected one of {', '.join(TASKS)},"
                       f" got {brief_repr(task)}")  # fmt: skip
    if outputs is None:
        if task is None or score_output is None:
            raise Rejected(f"{_field('task')} and {_field('score_output')}: both needed"
                           " without an output signature to infer them from")  # fmt: skip
        name, index = parse_score_output(score_output)
        if task == "multiclass" and index is not None:
            raise Rejected(f"{_field('score_index')}: multiclass scores the whole row (argmax);"
                           f" give --score-output {name} without an index")  # fmt: skip
        chosen_task = task
    elif score_output is not None:
        name, index = parse_score_output(score_output)
        chosen = [o for o in outputs if o[0] == name]
        if not chosen:
            raise Rejected(f"{_field('score_output')}: no output {name!r}; the version's"
                           f" outputs are {_describe(outputs)}")  # fmt: skip
        _, datatype, shape = chosen[0]
        if datatype not in FLOATING:
            raise Rejected(f"{_field('score_output')}: {name!r} is {datatype}; a score is"
                           f" {', '.join(FLOATING)}")  # fmt: skip
    else:
        usable = [o for o in outputs if o[1] in FLOATING and _width(o[2]) is not None]
        if not usable:
            raise Rejected(f"{_field('score_output')}: no floating-point output with a known"
                           f" last dimension; outputs found: {_describe(outputs)}")  # fmt: skip
        name, datatype, shape = usable[0]
        index = None
    if outputs is not None:
        chosen_task, index = _task_and_index(task, name, shape, _width(shape), index, positive)
    config = QualityConfig(task=chosen_task, score_output=name, score_index=index)
    given = {"threshold": threshold, "positive_label": positive_label,
             "segments": None if segments is None else tuple(segments),
             "max_segment_values": max_segment_values,
             "label_deadline_seconds": label_deadline_seconds}  # fmt: skip
    fields = {**config.as_dict(), **{k: v for k, v in given.items() if v is not None}}
    fields["segments"] = tuple(fields["segments"])
    return QualityConfig(**fields).validate()


def _task_and_index(
    task: str | None, name: str, shape: tuple[int, ...], width: int | None,
    index: int | None, positive: int,
) -> tuple[str, int | None]:  # fmt: skip
    """The task and score column for output `name`, refusing a task its shape contradicts."""
    where = f"output {name!r} {list(shape)}"
    if index is not None and width is not None and index >= width:
        raise Rejected(f"{_field('score_index')}: {index} is past the {width} values per row"
                       f" of {where}")  # fmt: skip
    if width is None:
        if task is None or (index is None and task != "multiclass"):
            raise Rejected(f"{_field('score_output')}: the last dimension of {where} is"
                           " dynamic: give --task and NAME:INDEX")  # fmt: skip
        return task, index
    single = None if len(shape) == 1 else 0  # the one value of a row
    if task is None:
        task = "binary" if width == 2 else "multiclass" if width > 2 else "regression"
    if task == "binary":
        if index is not None:
            return task, index
        if width == 1:
            return task, single  # the value is the positive class's probability
        if width == 2:
            return task, positive
        raise Rejected(f"{_field('task')}: binary on {where} ({width} classes) needs the"
                       " positive class's column: --score-output NAME:INDEX")  # fmt: skip
    if task == "multiclass":
        if width < 2:
            raise Rejected(f"{_field('task')}: multiclass needs one score per class; {where}"
                           " has one value per row (binary or regression?)")  # fmt: skip
        if index is not None:
            raise Rejected(f"{_field('score_index')}: multiclass scores the whole row (argmax);"
                           f" give --score-output {name} without an index")  # fmt: skip
        return task, None
    if index is not None:
        return task, index
    if width == 1:
        return task, single
    raise Rejected(f"{_field('task')}: regression needs one value per row; {where} has"
                   f" {width}: give --score-output NAME:INDEX")  # fmt: skip

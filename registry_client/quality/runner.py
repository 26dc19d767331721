"""Running a registered version locally over a dataset, in batches, with onnxruntime: what
`gatectl evaluate` scores. The dataset is checked against the version's inputs first, so a
wrong file is refused naming the array, not with onnxruntime's message about a tensor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from registry_client.errors import Rejected

__all__ = ["run_version"]

# onnxruntime's input types to numpy's, as gateway/models/datatypes.py maps them (registry_client
# may not import the gateway).
_NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(int8)": np.int8,
    "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
    "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64,
}  # fmt: skip


def _session(artifact: bytes) -> Any:
    # Imported here: it costs half a second of CPU, and only evaluating a version needs it.
    import onnxruntime as ort

    try:
        return ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    except _ort_errors() as exc:
        raise Rejected(f"onnxruntime cannot load the version: {exc}") from exc


def _ort_errors() -> tuple[type[Exception], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return (ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidGraph,
            ort_state.InvalidProtobuf, ort_state.NotImplemented, ort_state.RuntimeException,
            ort_state.EPFail, RuntimeError)  # fmt: skip


def _feeds(session: Any, data: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Each input's array in the input's type, and the rows they share; Rejected naming the
    array that is missing, unexpected, of another kind or of another length."""
    inputs = {i.name: i.type for i in session.get_inputs()}
    missing = sorted(set(inputs) - set(data))
    if missing:
        raise Rejected(f"no array for the model's input {', '.join(map(repr, missing))} (found:"
                       f" {', '.join(map(repr, sorted(data))) or 'none'})")  # fmt: skip
    extra = sorted(set(data) - set(inputs))
    if extra:
        raise Rejected(f"array {', '.join(map(repr, extra))} is not an input of the model (its"
                       f" inputs: {', '.join(map(repr, sorted(inputs)))})")  # fmt: skip
    feeds: dict[str, np.ndarray] = {}
    for name, onnx_type in sorted(inputs.items()):
        array = data[name]
        wanted = _NUMPY_TYPES.get(onnx_type)
        if wanted is None:
            raise Rejected(f"input {name!r} is {onnx_type}: evaluate reads numeric inputs only")
        if array.ndim == 0:
            raise Rejected(f"array {name!r} is a scalar: expected one row per example")
        if not np.can_cast(array.dtype, wanted, casting="same_kind"):
            raise Rejected(f"array {name!r} holds {array.dtype}; the model's input is"
                           f" {onnx_type}")  # fmt: skip
        feeds[name] = array.astype(wanted, copy=False)
    lengths = {name: len(array) for name, array in feeds.items()}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{n} {count}" for n, count in lengths.items())
        raise Rejected(f"the input arrays have different numbers of rows: {found}")
    return feeds, next(iter(lengths.values()))


def run_version(
    artifact: bytes, data: Mapping[str, np.ndarray], output: str, batch: int
) -> np.ndarray:
    """The `output` of the version over every row of `data` (one array per input, rows on the
    first axis), run `batch` rows at a time and joined; Rejected naming what does not fit."""
    if batch < 1:
        raise Rejected(f"--batch: expected at least 1 row, got {batch}")
    session = _session(artifact)
    outputs = [o.name for o in session.get_outputs()]
    if output not in outputs:
        raise Rejected(f"the score output {output!r} is not an output of the version (its"
                       f" outputs: {', '.join(map(repr, outputs))})")  # fmt: skip
    feeds, rows = _feeds(session, data)
    parts = []
    for start in range(0, rows, batch):
        chunk = {name: array[start : start + batch] for name, array in feeds.items()}
        try:
            (found,) = session.run([output], chunk)
        except _ort_errors() as exc:
            raise Rejected(f"onnxruntime failed on rows {start} to"
                           f" {min(start + batch, rows) - 1}: {exc}") from exc  # fmt: skip
        found = np.asarray(found)
        taken = min(batch, rows - start)
        if found.ndim == 0 or len(found) != taken:
            raise Rejected(f"output {output!r} has {found.shape} for {taken} rows: expected one"
                           " row of output per row of input")  # fmt: skip
        parts.append(found)
    return np.concatenate(parts) if parts else np.empty((0,))

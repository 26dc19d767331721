"""Check a request's tensors against a version's signature and turn them into numpy arrays.

Every check runs before onnxruntime does, and every message is Triton's wording where Triton
has one, naming the input and the expected versus the given value.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gateway.errors import InvalidInput
from gateway.models.datatypes import BYTES, Datatype
from gateway.models.signature import Signature, TensorSpec
from gateway.pipeline.requests import InputTensor

__all__ = ["Binder", "OutputSelection", "decode_bytes_elements", "encode_bytes_elements"]

_LENGTH = struct.Struct("<I")
_MAX_ARRAY_BYTES = int(np.iinfo(np.intp).max)  # numpy's limit, even for arrays with no elements


def _names(names: Sequence[str]) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _dims(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def decode_bytes_elements(raw: bytes, count: int, name: str, model: str) -> np.ndarray:
    """Split raw BYTES (4-byte little-endian length, then the bytes, per element) into str."""
    elements: list[str] = []
    offset, size = 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise InvalidInput(
                f"incomplete BYTES element length for input '{name}' for model '{model}'"
                f" at byte {offset}"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInput(
                f"BYTES element {len(elements)} of input '{name}' for model '{model}' declares"
                f" {length} bytes but only {size - offset} remain"
            )
        elements.append(_utf8(raw[offset : offset + length], name, model))
        offset += length
    if len(elements) != count:
        raise InvalidInput(
            f"unexpected number of BYTES elements for input '{name}' for model '{model}'."
            f" Expected {count}, got {len(elements)}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array


def _utf8(value: bytes, name: str, model: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"BYTES input '{name}' for model '{model}' is not valid UTF-8, which ONNX string"
            " tensors require"
        ) from exc


def encode_bytes_elements(array: np.ndarray) -> bytes:
    """Serialise a string/bytes array as raw BYTES: 4-byte length, then the bytes, per element."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _matches(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """Same rank, every dimension equal or dynamic (-1) in the model, none negative."""
    if len(shape) != len(expected):
        return False
    for given, wanted in zip(shape, expected, strict=True):
        if given < 0 or (wanted != -1 and given != wanted):
            return False
    return True


def _shared_dims(
    inputs: Sequence[TensorSpec],
) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """Dimension names that more than one dynamic input dimension carries, with their
    (input, axis) places: onnxruntime fails at run time when they disagree."""
    places: dict[str, list[tuple[str, int]]] = {}
    for spec in inputs:
        for axis, dim in enumerate(spec.dim_names):
            if dim is not None and spec.shape[axis] == -1:
                places.setdefault(dim, []).append((spec.name, axis))
    return tuple((dim, tuple(p)) for dim, p in places.items() if len(p) > 1)


@dataclass(frozen=True, slots=True)
class OutputSelection:
    """The outputs a request wants, with their names ready for session.run."""

    specs: tuple[TensorSpec, ...]
    names: tuple[str, ...]


class Binder:
    """Validates and decodes requests for one model version; built once per version."""

    def __init__(self, model: str, signature: Signature, max_batch_size: int) -> None:
        self._model = model
        self._inputs = signature.inputs
        self._by_name = {spec.name: spec for spec in signature.inputs}
        self._outputs = {spec.name: spec for spec in signature.outputs}
        self._every_output = OutputSelection(
            signature.outputs, tuple(s.name for s in signature.outputs)
        )
        self._max_batch = max_batch_size if signature.batchable else 0
        # The first dimension of a batchable model is the batch: all inputs must agree on it
        # (onnxruntime's kernels and the dynamic batcher both count on that).
        self._one_batch = signature.batchable and len(signature.inputs) > 1
        self._shared_dims = _shared_dims(signature.inputs)

    def bind_inputs(self, tensors: Sequence[InputTensor]) -> dict[str, np.ndarray]:
        """Return the feeds for session.run, or raise InvalidInput naming the bad input."""
        if len(tensors) != len(self._inputs):
            self._raise_count_mismatch(tensors)
        feeds: dict[str, np.ndarray] = {}
        batch = -1
        for tensor in tensors:
            spec = self._by_name.get(tensor.name)
            if spec is None:
                raise InvalidInput(
                    f"unexpected inference input '{tensor.name}' for model '{self._model}'"
                )
            if tensor.name in feeds:
                raise InvalidInput(
                    f"input '{tensor.name}' appears more than once in the request for model"
                    f" '{self._model}'"
                )
            array = feeds[tensor.name] = self._decode(tensor, spec)
            if self._one_batch:
                if batch < 0:
                    batch = array.shape[0]
                elif array.shape[0] != batch:
                    raise InvalidInput(
                        f"input '{tensor.name}' batch size does not match other inputs for"
                        f" '{self._model}'. Expected {batch}, got {array.shape[0]}"
                    )
        for dim, places in self._shared_dims:
            (first, first_axis), *others = places
            size = feeds[first].shape[first_axis]
            for name, axis in others:
                if feeds[name].shape[axis] != size:
                    raise InvalidInput(
                        f"unexpected shape for input '{name}' for model '{self._model}'."
                        f" Expected dimension '{dim}' to be {size}, as in input '{first}',"
                        f" got {_dims(feeds[name].shape)}."
                    )
        return feeds

    def select_outputs(self, names: Sequence[str]) -> OutputSelection:
        """Resolve the requested outputs (empty: all), or raise InvalidInput for unknown ones."""
        if not names:
            return self._every_output
        chosen: list[TensorSpec] = []
        for name in names:
            spec = self._outputs.get(name)
            if spec is None:
                raise InvalidInput(
                    f"unexpected inference output '{name}' for model '{self._model}'"
                )
            if spec in chosen:
                raise InvalidInput(
                    f"output '{name}' is requested more than once for model '{self._model}'"
                )
            chosen.append(spec)
        return OutputSelection(tuple(chosen), tuple(s.name for s in chosen))

    def _raise_count_mismatch(self, tensors: Sequence[InputTensor]) -> None:
        given = [t.name for t in tensors]
        seen: set[str] = set()
        for name in given:
            if name not in self._by_name:
                raise InvalidInput(f"unexpected inference input '{name}' for model '{self._model}'")
            if name in seen:  # else the count message would name no missing input
                raise InvalidInput(
                    f"input '{name}' appears more than once in the request for model"
                    f" '{self._model}'"
                )
            seen.add(name)
        missing = [s.name for s in self._inputs if s.name not in given]
        raise InvalidInput(
            f"expected {len(self._inputs)} inputs but got {len(tensors)} inputs for model"
            f" '{self._model}'. Got input(s) {_names(given)}, but missing required input(s)"
            f" {_names(missing)}. Please provide all required input(s)."
        )

    def _decode(self, tensor: InputTensor, spec: TensorSpec) -> np.ndarray:
        datatype = spec.datatype
        if tensor.datatype != datatype.name:
            raise InvalidInput(
                f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model"
                f" '{self._model}' expects '{datatype.name}'"
            )
        shape = tuple(tensor.shape[:])  # a slice copies upb's repeated field at C speed
        self._check_shape(tensor.name, shape, spec.shape)
        count = math.prod(shape)
        if count == 0:  # no data to measure the shape against: bound it here
            self._check_empty_shape(tensor.name, shape, datatype)
        if tensor.raw is not None:
            return self._from_raw(tensor.name, tensor.raw, datatype, shape, count)
        return self._from_values(tensor.name, tensor.values or (), datatype, shape, count)

    def _check_shape(self, name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
        if not _matches(shape, expected):
            raise InvalidInput(
                f"unexpected shape for input '{name}' for model '{self._model}'."
                f" Expected {_dims(expected)}, got {_dims(shape)}."
            )
        if self._max_batch and shape[0] > self._max_batch:
            raise InvalidInput(
                f"inference request batch-size must be <= {self._max_batch} for"
                f" '{self._model}', got {shape[0]} for input '{name}'"
            )

    def _check_empty_shape(self, name: str, shape: tuple[int, ...], datatype: Datatype) -> None:
        """A shape with a 0 still needs numpy to describe it: the other dimensions times the
        element size must fit its index type, else reshape fails."""
        limit = _MAX_ARRAY_BYTES // datatype.numpy.itemsize
        if math.prod(d for d in shape if d) > limit:
            raise InvalidInput(
                f"unexpected shape for input '{name}' for model '{self._model}'. Expected the"
                f" non-zero dimensions to multiply to at most {limit}, got {_dims(shape)}."
            )

    def _from_raw(
        self, name: str, raw: bytes, datatype: Datatype, shape: tuple[int, ...], count: int
    ) -> np.ndarray:
        if datatype.name == BYTES:
            return decode_bytes_elements(raw, count, name, self._model).reshape(shape)
        expected = count * datatype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"input byte size mismatch for input '{name}' for model '{self._model}'."
                f" Expected {expected}, got {len(raw)}"
            )
        return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)

    def _from_values(
        self,
        name: str,
        values: Sequence[object],
        datatype: Datatype,
        shape: tuple[int, ...],
        count: int,
    ) -> np.ndarray:
        if len(values) != count:
            raise InvalidInput(
                f"unexpected number of elements in contents for input '{name}' for model"
                f" '{self._model}'. Expected {count}, got {len(values)}"
            )
        if datatype.name == BYTES:
            array = np.empty(count, dtype=object)
            array[:] = [
                _utf8(v, name, self._model) if isinstance(v, bytes) else str(v) for v in values
            ]
            return array.reshape(shape)
        wide = np.asarray(values)
        narrow = wide.astype(datatype.numpy)
        if narrow.dtype.kind in "iu" and not np.array_equal(narrow, wide):
            raise InvalidInput(
                f"contents of input '{name}' for model '{self._model}' hold values outside the"
                f" range of {datatype.name}"
            )
        return narrow.reshape(shape)

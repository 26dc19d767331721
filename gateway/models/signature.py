"""A model version's input and output tensors as onnxruntime reports them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.models.datatypes import BYTES, Datatype, from_onnx_type

__all__ = ["Signature", "SignatureError", "TensorSpec", "read_signature", "warmup_feeds"]


class SignatureError(ValueError):
    """Raised when a model has a tensor the gateway cannot serve (e.g. BF16, sequences)."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One named tensor: its datatype and shape, -1 marking a dynamic dimension."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # The model's name for each dimension (ONNX dim_param), None where it has none: inputs
    # that name a dimension alike must give it one size.
    dim_names: tuple[str | None, ...] = ()


@dataclass(frozen=True, slots=True)
class Signature:
    """All inputs and outputs of one version, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batchable(self) -> bool:
        """A dynamic first dimension on every tensor means requests may carry a batch."""
        tensors = self.inputs + self.outputs
        return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)


class _OrtArg(Protocol):
    name: str
    type: str
    shape: Sequence[int | str | None]


def _spec(arg: _OrtArg) -> TensorSpec:
    datatype = from_onnx_type(arg.type)
    if datatype is None:
        raise SignatureError(f"tensor '{arg.name}' has type {arg.type}, which is not served")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    names = tuple(d if isinstance(d, str) and d else None for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape, names)


def read_signature(inputs: Sequence[_OrtArg], outputs: Sequence[_OrtArg]) -> Signature:
    """Build a Signature from `session.get_inputs()` and `session.get_outputs()`."""
    return Signature(tuple(_spec(a) for a in inputs), tuple(_spec(a) for a in outputs))


def warmup_feeds(signature: Signature) -> dict[str, np.ndarray]:
    """A minimal input for every tensor: zeros (empty strings), one row for a dynamic dimension."""
    feeds: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        shape = tuple(1 if d == -1 else d for d in spec.shape)
        if spec.datatype.name == BYTES:
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy)
    return feeds

"""The Open Inference Protocol's tensor datatypes and their numpy and ONNX counterparts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BYTES", "DATATYPES", "Datatype", "from_onnx_type"]

BYTES = "BYTES"


@dataclass(frozen=True, slots=True)
class Datatype:
    """One wire datatype: its name, numpy dtype, element size and Triton config enum value."""

    name: str
    numpy: np.dtype[np.generic]
    itemsize: int  # 0 for BYTES: elements carry their own length
    onnx_type: str
    config_enum: int  # Triton model_config.proto DataType


def _datatype(name: str, numpy: type[np.generic] | type[object], onnx: str, enum: int) -> Datatype:
    dtype = np.dtype(numpy)
    return Datatype(name, dtype, 0 if name == BYTES else dtype.itemsize, onnx, enum)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _datatype("BOOL", np.bool_, "tensor(bool)", 1),
        _datatype("UINT8", np.uint8, "tensor(uint8)", 2),
        _datatype("UINT16", np.uint16, "tensor(uint16)", 3),
        _datatype("UINT32", np.uint32, "tensor(uint32)", 4),
        _datatype("UINT64", np.uint64, "tensor(uint64)", 5),
        _datatype("INT8", np.int8, "tensor(int8)", 6),
        _datatype("INT16", np.int16, "tensor(int16)", 7),
        _datatype("INT32", np.int32, "tensor(int32)", 8),
        _datatype("INT64", np.int64, "tensor(int64)", 9),
        _datatype("FP16", np.float16, "tensor(float16)", 10),
        _datatype("FP32", np.float32, "tensor(float)", 11),
        _datatype("FP64", np.float64, "tensor(double)", 12),
        _datatype(BYTES, object, "tensor(string)", 13),
    )
}

_BY_ONNX_TYPE = {d.onnx_type: d for d in DATATYPES.values()}


def from_onnx_type(onnx_type: str) -> Datatype | None:
    """Map an onnxruntime type string such as 'tensor(float)' to its datatype, if served."""
    return _BY_ONNX_TYPE.get(onnx_type)

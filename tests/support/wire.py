"""Build ModelInferRequests from numpy arrays and read responses back, as a client would."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

from gateway._proto import grpc_service_pb2 as pb

DATATYPE_OF = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.object_): "BYTES",
}
NUMPY_OF = {v: k for k, v in DATATYPE_OF.items()}
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def bytes_raw(array: np.ndarray) -> bytes:
    """Raw BYTES: per element a 4-byte little-endian length, then the bytes."""
    out = b""
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(data)) + data
    return out


def infer_request(
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str = "",
    outputs: Sequence[str] = (),
    raw: bool = True,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A request carrying inputs as raw_input_contents (default) or typed contents."""
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    for name, array in inputs.items():
        datatype = DATATYPE_OF[array.dtype]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            request.raw_input_contents.append(
                bytes_raw(array) if datatype == "BYTES" else array.tobytes()
            )
        else:
            values = array.reshape(-1).tolist()
            if datatype == "BYTES":
                values = [v if isinstance(v, bytes) else str(v).encode() for v in values]
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _split_bytes(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


def output_arrays(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Decode every output of a response from raw_output_contents."""
    arrays: dict[str, np.ndarray] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        shape = tuple(tensor.shape)
        if tensor.datatype == "BYTES":
            array = np.empty(len(_split_bytes(raw)), dtype=object)
            array[:] = _split_bytes(raw)
            arrays[tensor.name] = array.reshape(shape)
        else:
            arrays[tensor.name] = np.frombuffer(raw, NUMPY_OF[tensor.datatype]).reshape(shape)
    return arrays

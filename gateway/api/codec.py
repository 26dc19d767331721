"""Protobuf <-> transport-free types for ModelInfer. Structural checks only: the version's
Binder checks the tensors against its signature once the request is routed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway._proto import grpc_service_pb2 as pb
from gateway.errors import InvalidInput
from gateway.models.binding import encode_bytes_elements
from gateway.models.datatypes import BYTES
from gateway.pipeline.requests import InferRequest, InferResult, InputTensor

__all__ = ["decode_infer_request", "encode_infer_response"]

# Which InferTensorContents field carries each datatype's typed values. FP16 has none.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor, model: str) -> Sequence[object]:
    present = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInput(
            f"input '{tensor.name}' for model '{model}' has datatype '{tensor.datatype}',"
            " which can only be sent in raw_input_contents"
        )
    wrong = [name for name in present if name != field]
    if wrong:
        raise InvalidInput(
            f"input '{tensor.name}' for model '{model}' has datatype '{tensor.datatype}' but"
            f" sets contents.{wrong[0]}; expected contents.{field}"
        )
    values: Sequence[object] = getattr(tensor.contents, field)
    return values


ROUTING_KEY_PARAMETER = "routing_key"
ROUTING_KEY_METADATA = "x-routing-key"


def routing_key_of(
    request: pb.ModelInferRequest, metadata: Sequence[tuple[str, str | bytes]]
) -> str | None:
    """The request parameter `routing_key`, else the metadata `x-routing-key`, else None."""
    parameters = request.parameters
    if ROUTING_KEY_PARAMETER in parameters:
        return parameters[ROUTING_KEY_PARAMETER].string_param or None
    for key, value in metadata:
        if key == ROUTING_KEY_METADATA and isinstance(value, str):
            return value or None
    return None


def decode_infer_request(
    request: pb.ModelInferRequest,
    time_remaining: float | None,
    metadata: Sequence[tuple[str, str | bytes]] = (),
    still_wanted: Callable[[], bool] | None = None,
    request_id: str = "",
) -> InferRequest:
    """Translate a ModelInferRequest; InvalidInput when raw and typed contents are mixed.
    `still_wanted` tells whether the caller is still there (the call context's is_active)."""
    received = time.perf_counter()
    model = request.model_name
    raw = request.raw_input_contents
    tensors = request.inputs
    inputs: list[InputTensor]
    if raw:
        if len(raw) != len(tensors):
            raise InvalidInput(
                f"expected {len(tensors)} raw_input_contents entries (one per input) but got"
                f" {len(raw)} for model '{model}'"
            )
        inputs = []
        for index in range(len(raw)):  # indexing beats iterating upb's repeated fields
            tensor, data = tensors[index], raw[index]
            if tensor.HasField("contents"):
                raise InvalidInput(
                    "contents field must not be specified when using raw_input_contents for"
                    f" '{tensor.name}' for model '{model}'"
                )
            inputs.append(InputTensor(tensor.name, tensor.datatype, tensor.shape, data, None))
    else:
        inputs = [
            InputTensor(t.name, t.datatype, t.shape, None, _typed_values(t, model)) for t in tensors
        ]
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    return InferRequest(
        model=model,
        version=request.model_version,
        inputs=inputs,
        # Iterating an empty repeated field still costs a microsecond in upb.
        outputs=[o.name for o in request.outputs] if len(request.outputs) else [],
        deadline=deadline,
        received=received,
        routing_key=routing_key_of(request, metadata),
        still_wanted=still_wanted,
        request_id=request_id,
        parameters=request.parameters,
        metadata=metadata,
    )


def encode_infer_response(result: InferResult, request_id: str) -> pb.ModelInferResponse:
    """Build the response: every output in raw_output_contents, the serving version named,
    `id` the prediction's id."""
    response = pb.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=request_id
    )
    response.parameters["routed_by"].string_param = result.routed_by
    outputs = response.outputs
    raw = response.raw_output_contents
    for spec, array in result.outputs:
        datatype = spec.datatype.name
        outputs.add(name=spec.name, datatype=datatype, shape=array.shape)
        raw.append(encode_bytes_elements(array) if datatype == BYTES else array.tobytes())
    return response

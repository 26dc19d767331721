"""Transport-free request and result of one inference, passed between api and pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from gateway._proto import grpc_service_pb2 as pb
from gateway.models.signature import TensorSpec

__all__ = ["InferRequest", "InferResult", "InputTensor"]


@dataclass(slots=True)
class InputTensor:
    """One input as the caller sent it: raw bytes, or the typed values for its datatype."""

    name: str
    datatype: str
    shape: Sequence[int]
    raw: bytes | None
    values: Sequence[object] | None


@dataclass(slots=True)
class InferRequest:
    """One inference call: target, inputs, wanted outputs and the deadline (monotonic s)."""

    model: str
    version: str  # "" = let the route decide
    inputs: list[InputTensor]
    outputs: Sequence[str]  # empty = every output
    deadline: float | None
    received: float  # time.perf_counter() when the request arrived, for its duration
    routing_key: str | None = None  # sticky routing: same key, same version
    # The prediction's id: the request's `id`, else its x-request-id, else a generated one;
    # the response carries it back, and a label given later names it.
    request_id: str = ""
    # The call's own parameters and metadata, referenced, not copied: routing reads them, and
    # the prediction log a logged model's segments.
    parameters: Mapping[str, pb.InferParameter] = field(default_factory=dict)
    metadata: Sequence[tuple[str, str | bytes]] = ()
    # False once the caller has gone away: its outcome is then counted as Cancelled, not
    # against the version (a rollout judges versions on their outcomes), or DeadlineExceeded
    # when its deadline had passed.
    still_wanted: Callable[[], bool] | None = None


@dataclass(slots=True)
class InferResult:
    """What a version answered and how the request got there."""

    model: str
    version: str
    routed_by: str
    outputs: list[tuple[TensorSpec, np.ndarray]]

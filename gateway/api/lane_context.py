"""The call context of a ModelInfer call answered by the InferLane (infer_lane.py).

It is the part of grpc.ServicerContext that the inference servicer and the error mapping ask
of a unary call: its metadata, time remaining and whether its caller is still there, its
trailer, and abort. The lane's thread marks it cancelled when gRPC core reports the call
cancelled (by its caller, a lost connection or its deadline).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from gateway.api.error_mapping import answer_with_request_id, request_id_for

__all__ = ["LaneAbort", "LaneContext"]

_Metadata = Sequence[tuple[str, str | bytes]]


class LaneAbort(Exception):  # named like grpc's own abort, which it stands for
    """Raised by LaneContext.abort: the lane answers the call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


class LaneContext:
    """One call's context (see the module docstring)."""

    __slots__ = ("_call", "_code", "_deadline", "_trailing", "cancelled", "metadata")

    def __init__(self, call: Any, metadata: _Metadata, deadline: float) -> None:
        """`deadline` in time.time() seconds, as gRPC core gives it (infinite without one)."""
        self._call = call
        self.metadata = metadata
        self._deadline = deadline
        self._trailing: tuple[tuple[str, str | bytes], ...] | None = None
        self._code: grpc.StatusCode | None = None
        self.cancelled = False

    def invocation_metadata(self) -> _Metadata:
        return self.metadata

    def time_remaining(self) -> float:
        return max(self._deadline - time.time(), 0.0)

    def is_active(self) -> bool:
        return not self.cancelled

    def peer(self) -> str:
        peer = self._call.peer()
        return peer.decode() if isinstance(peer, bytes) else str(peer)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...] | None:
        return self._trailing

    def set_trailing_metadata(self, metadata: _Metadata) -> None:
        self._trailing = tuple(metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._code = code
        raise LaneAbort(code, details)

    def stamp_request_id(self) -> None:
        """Name the call's request id in its trailer (a refusal before the servicer runs)."""
        answer_with_request_id(self, request_id_for(self.metadata))  # type: ignore[arg-type]

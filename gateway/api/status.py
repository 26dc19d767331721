"""The one map from domain errors to gRPC status codes, for every RPC."""

from __future__ import annotations

import grpc

from gateway.errors import (
    Cancelled,
    DeadlineExceeded,
    GatewayError,
    InvalidInput,
    ModelFailed,
    ModelNotFound,
    ModelNotReady,
    NotAllowed,
    NotAuthenticated,
    NotConfigured,
    Overloaded,
    RegistryUnavailable,
    ServiceUnknown,
    TooManyCalls,
    TooManyStreams,
    Unsupported,
)

__all__ = ["CLIENT_ERRORS", "code_name", "status_for"]

_STATUS: dict[type[GatewayError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    ServiceUnknown: grpc.StatusCode.NOT_FOUND,
    ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    Overloaded: grpc.StatusCode.UNAVAILABLE,  # clients retry another replica
    TooManyStreams: grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC's own concurrency limit
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Cancelled: grpc.StatusCode.CANCELLED,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
    NotAuthenticated: grpc.StatusCode.UNAUTHENTICATED,
    NotAllowed: grpc.StatusCode.PERMISSION_DENIED,
    ModelFailed: grpc.StatusCode.INTERNAL,
    NotConfigured: grpc.StatusCode.FAILED_PRECONDITION,  # retrying does not help; setting up does
    TooManyCalls: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RegistryUnavailable: grpc.StatusCode.UNAVAILABLE,  # transient: retry with backoff
}

# Errors the caller can fix or retry: logged at INFO without a traceback.
CLIENT_ERRORS = frozenset(
    {InvalidInput, ModelNotFound, ServiceUnknown, DeadlineExceeded, Unsupported}
)


def status_for(error: GatewayError) -> grpc.StatusCode:
    """The status a domain error is answered with; unmapped ones are INTERNAL."""
    for cls in type(error).__mro__:
        code = _STATUS.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def code_name(error: GatewayError) -> str:
    """The status name for metric labels, e.g. 'INVALID_ARGUMENT'."""
    return status_for(error).name

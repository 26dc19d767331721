"""The bearer-token interceptor: the first thing every RPC passes when tokens are configured.

Inference, metadata and reflection need the `infer` scope; labels (the Feedback service) need
`feedback`, so a service that may infer may not grade its own predictions, nor the reverse; the
repository RPCs need `admin`; methods not listed here need `admin` too, so a new RPC is closed
until someone opens it.
Health checks stay open for load balancers and container probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from gateway.api.error_mapping import stamp_request_id
from gateway.api.status import status_for
from gateway.errors import GatewayError, NotAllowed, NotAuthenticated
from gateway.security.tokens import TokenTable

__all__ = ["AuthInterceptor", "required_scope"]

_log = logging.getLogger(__name__)
if TYPE_CHECKING:  # the stubs make it generic; at run time it is a plain class
    ServerInterceptorBase = grpc.ServerInterceptor[Any, Any]
else:
    ServerInterceptorBase = grpc.ServerInterceptor

_INFERENCE = "/inference.GRPCInferenceService/"
_INFER_METHODS = frozenset(
    _INFERENCE + name
    for name in ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                 "ModelInfer", "ModelStreamInfer", "ModelConfig")
)  # fmt: skip
_FEEDBACK_METHODS = frozenset({"/onnxgate.feedback.v1.Feedback/PutLabels"})
_OPEN_PREFIX = "/grpc.health.v1.Health/"
_REFLECTION_PREFIX = "/grpc.reflection."


def required_scope(method: str) -> str | None:
    """The scope a method needs; None for the open health service."""
    if method.startswith(_OPEN_PREFIX):
        return None
    if method in _INFER_METHODS or method.startswith(_REFLECTION_PREFIX):
        return "infer"
    if method in _FEEDBACK_METHODS:
        return "feedback"
    return "admin"


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], error: GatewayError, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that answers `error` without running `handler` and without waiting for the
    request message: a caller without a token cannot hold a thread by never sending it."""
    code = status_for(error)

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        stamp_request_id(method, context)  # a refused inference call has its id too
        context.abort(code, error.message)

    # Request-streaming handlers start before any message has arrived.
    kinds: dict[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
        "unary_unary": grpc.stream_unary_rpc_method_handler,
        "unary_stream": grpc.stream_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    kind = next(k for k in kinds if getattr(handler, k) is not None)
    return kinds[kind](
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class AuthInterceptor(ServerInterceptorBase):
    """Answers UNAUTHENTICATED without a known token and PERMISSION_DENIED without the scope.

    It runs for every call, before the method's handler (wrapped by error mapping as it was
    registered) is given the call; its refusals answer with their own status."""

    def __init__(self, tokens: TokenTable) -> None:
        self._tokens = tokens

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        error = self.refusal(method, handler_call_details.invocation_metadata)
        return handler if error is None else _refusal(handler, error, method)

    def refusal(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> GatewayError | None:
        """Why a call to `method` with `metadata` is refused (logged), or None."""
        scope = required_scope(method)
        if scope is None:
            return None
        authorization = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                authorization = value
                break
        caller = self._tokens.identify(authorization)
        if caller is None:
            why = "missing" if authorization is None else "unknown or malformed"
            _log.info("request refused", extra={"method": method, "code": "UNAUTHENTICATED",
                                                "detail": f"{why} bearer token"})  # fmt: skip
            return NotAuthenticated(
                "expected metadata 'authorization: Bearer <token>' with a token this gateway knows"
            )
        name, scopes = caller
        if scope not in scopes:
            _log.info("request refused", extra={"method": method, "code": "PERMISSION_DENIED",
                                                "caller": name})  # fmt: skip
            return NotAllowed(f"token {name!r} lacks the {scope!r} scope for {method}")
        return None

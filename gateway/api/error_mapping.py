"""Every RPC's errors mapped to statuses, and the request ids they are logged with.

Domain errors become their status from api/status.py with their message; anything else
becomes INTERNAL with a fixed message and a request id, and the traceback goes only to the log.

Each method's handler is wrapped once, as its service is registered (ErrorMappedRegistry),
not by a server interceptor: grpcio runs its interceptor pipeline on its one polling thread
for every call, and that cost 1.6% of the requests served (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from random import randbytes
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc

from gateway.api.status import CLIENT_ERRORS, status_for
from gateway.errors import GatewayError, ModelFailed

__all__ = [
    "REQUEST_ID_METADATA",
    "ErrorMappedRegistry",
    "answer_for",
    "answer_with_request_id",
    "new_request_id",
    "request_id_for",
    "request_id_of",
    "stamp_request_id",
]

_log = logging.getLogger(__name__)
if TYPE_CHECKING:  # the stubs make it generic; at run time it is a plain class
    _GenericHandlerBase = grpc.GenericRpcHandler[Any, Any]
else:
    _GenericHandlerBase = grpc.GenericRpcHandler
REQUEST_ID_METADATA = "x-request-id"
_MAX_REQUEST_ID_CHARS = 128
# The inference methods. Their call's request id goes in its trailer when a log line names
# it: on every failure (set here, whatever raised) and, by the servicer, on an access-logged
# answer. A stream's trailer names the stream, so it is set when the stream begins. Not on
# every ModelInfer answer: the response's `id` carries the prediction's id already, and a
# trailer on each answer cost 7% of the requests served at concurrency 32 (CPU per request
# 0.93x: gRPC's encoding of it, not the Python around it).
_INFERENCE_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
    }
)
# The request id of the unary inference call this thread is serving (see _wrap_call), so
# that its prediction, its log lines and a failure's trailer name the same generated id.
_call_request_id: ContextVar[str | None] = ContextVar("onnxgate_request_id", default=None)


def request_id_for(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The caller's x-request-id when it sent a usable one, else a fresh one: 32 hex digits,
    like uuid4().hex. An id correlates, it guards nothing, so it comes from `random` (0.3 us,
    holding the GIL) rather than os.urandom as uuid4 does (3 us, and a GIL hand-over in its
    system call, which at concurrency costs a wait for the GIL on every request)."""
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA:
            # Only what may go back in a trailer: printable ASCII (gRPC refuses the rest).
            if isinstance(value, str) and value and value.isascii() and value.isprintable():
                return value[:_MAX_REQUEST_ID_CHARS]
    return new_request_id()


def new_request_id() -> str:
    """A fresh request id (see request_id_for)."""
    return randbytes(16).hex()


def request_id_of(context: grpc.ServicerContext) -> str:
    """The id this call is answered with: the one already in its trailer (a stream's, or an
    answer already given its id), else the unary inference call's (chosen when it began),
    else the caller's, else a fresh one."""
    for key, value in context.trailing_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str):
            return value
    current = _call_request_id.get()
    if current is not None:
        return current
    return request_id_for(context.invocation_metadata())


def answer_with_request_id(context: grpc.ServicerContext, request_id: str) -> None:
    """Put `request_id` in the call's trailer (see _INFERENCE_METHODS for when)."""
    context.set_trailing_metadata(((REQUEST_ID_METADATA, request_id),))


def answer_for(error: Exception, method: str, context: grpc.ServicerContext) -> str:
    """Log `error` and return the message its caller gets: a domain error's own, or for
    anything INTERNAL a fixed one with the request id (the details stay in the log). Also
    used for the errors a ModelStreamInfer stream answers in-band."""
    request_id = request_id_of(context)
    if isinstance(error, GatewayError) and status_for(error) is not grpc.StatusCode.INTERNAL:
        # Callers' mistakes are routine: INFO without a traceback; the rest deserve a look.
        level = logging.INFO if type(error) in CLIENT_ERRORS else logging.WARNING
        _log.log(
            level,
            "request not served",
            extra={
                "method": method,
                "code": status_for(error).name,
                "request_id": request_id,
                "detail": error.message,
            },
        )
        return error.message
    if isinstance(error, ModelFailed):  # onnxruntime's reason says it all; no traceback
        reason = str(error.__cause__ or error)
        _log.error("model failed", extra={"method": method, "request_id": request_id,
                                          "detail": error.message, "reason": reason})  # fmt: skip
    else:
        _log.error("internal error", exc_info=error,
                   extra={"method": method, "request_id": request_id})  # fmt: skip
    return f"internal error (request {request_id})"


def _abort(error: Exception, method: str, context: grpc.ServicerContext) -> NoReturn:
    message = answer_for(error, method, context)
    code = status_for(error) if isinstance(error, GatewayError) else grpc.StatusCode.INTERNAL
    context.abort(code, message)


def _client_gone(error: Exception, context: grpc.ServicerContext) -> bool:
    """A request stream raises RpcError when its client cancels or disconnects: routine,
    and nobody is left to answer."""
    if isinstance(error, grpc.RpcError) and not context.is_active():
        _log.info("client went away", extra={"peer": context.peer()})
        return True
    return False


def _fail(error: Exception, method: str, context: grpc.ServicerContext) -> NoReturn:
    # A handler that aborted itself keeps its status (code() is newer than grpc-stubs).
    if context.code() is not None:  # type: ignore[attr-defined]
        raise error
    _abort(error, method, context)


def _stamp(context: grpc.ServicerContext) -> None:
    answer_with_request_id(context, request_id_for(context.invocation_metadata()))


def stamp_request_id(method: str, context: grpc.ServicerContext) -> None:
    """Give an inference call's answer its request id, for refusals made before this
    interceptor runs (authentication)."""
    if method in _INFERENCE_METHODS:
        _stamp(context)


def _wrap_call(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    """Unary responses, and grpc's callback-style streams (health Watch), which take a third
    argument and must keep their `experimental_non_blocking` mark."""

    def handle(request: Any, context: grpc.ServicerContext, *rest: Any) -> Any:
        try:
            return behavior(request, context, *rest)
        except Exception as error:  # the one place that maps every error to a status
            if _client_gone(error, context):
                return None
            _fail(error, method, context)

    def handle_inference(request: Any, context: grpc.ServicerContext) -> Any:
        request_id = request_id_for(context.invocation_metadata())
        token = _call_request_id.set(request_id)
        try:
            return behavior(request, context)
        except Exception as error:
            answer_with_request_id(context, request_id)
            if _client_gone(error, context):
                return None
            _fail(error, method, context)
        finally:
            _call_request_id.reset(token)

    if method in _INFERENCE_METHODS:
        return handle_inference
    if getattr(behavior, "experimental_non_blocking", False):
        handle.experimental_non_blocking = True  # type: ignore[attr-defined]
    return handle


def _wrap_streaming(
    behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    stamped = method in _INFERENCE_METHODS

    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        if stamped:
            _stamp(context)
        try:
            yield from behavior(request, context)
        except Exception as error:  # the one place that maps every error to a status
            if _client_gone(error, context):
                return
            _fail(error, method, context)

    return handle


def _wrapped(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_call(handler.unary_unary, method), **serializers
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_call(handler.stream_unary, method), **serializers
        )
    if handler.unary_stream is not None:
        if getattr(handler.unary_stream, "experimental_non_blocking", False):
            return grpc.unary_stream_rpc_method_handler(
                _wrap_call(handler.unary_stream, method), **serializers
            )
        return grpc.unary_stream_rpc_method_handler(
            _wrap_streaming(handler.unary_stream, method), **serializers
        )
    assert handler.stream_stream is not None  # a handler has exactly one of the four kinds
    return grpc.stream_stream_rpc_method_handler(
        _wrap_streaming(handler.stream_stream, method), **serializers
    )


class _MappedGenericHandler(_GenericHandlerBase):
    """A generic handler whose method handlers are wrapped, each once, when first asked for."""

    def __init__(self, inner: grpc.GenericRpcHandler[Any, Any]) -> None:
        self._inner = inner
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        wrapped = self._handlers.get(method)
        if wrapped is not None:
            return wrapped
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return self._handlers.setdefault(method, _wrapped(handler, method))


class ErrorMappedRegistry:
    """What services are registered on: `server`, each method's handler wrapped to map its
    errors (see the module docstring). The generated `add_*Servicer_to_server` functions take
    it as `as_server()`; they call only the two methods below. A method named in `elsewhere`
    is served by another taker of its wrapped handler (InferLane), not by `server`."""

    def __init__(
        self,
        server: grpc.Server,
        elsewhere: Mapping[str, Callable[[grpc.RpcMethodHandler[Any, Any]], None]] | None = None,
    ) -> None:
        self._server = server
        self._elsewhere = elsewhere or {}

    def as_server(self) -> grpc.Server:
        """This registry where grpcio's registration functions expect a server."""
        return cast(grpc.Server, self)

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        """Methods found by name at call time (the fallback for unregistered ones)."""
        self._server.add_generic_rpc_handlers(tuple(_MappedGenericHandler(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """A service's methods, which gRPC core matches by name before grpcio sees the call."""
        mine = {}
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            taker = self._elsewhere.get(method)
            if taker is None:
                mine[name] = _wrapped(handler, method)
            else:
                taker(_wrapped(handler, method))
        self._server.add_registered_method_handlers(service, mine)  # type: ignore[attr-defined]  # not in grpc-stubs

"""ModelInfer answered straight from gRPC core's completion queue, not by grpcio's server.

grpcio's synchronous server runs a few hundred lines of its own Python for every call around
the handler: a call state with a condition, four events on its one polling thread, and a
call thread that asks for the request message only once it runs, then waits for it. That
cost more than the gateway's whole request path (benchmarks/RESULTS.md). So gRPC core hands
ModelInfer's calls, as a registered method, to this lane's completion queue, whose thread
asks for each call's message at once and gives the call with its message to a call thread,
which runs the servicer and answers in one batch (metadata, response, status).

Every other method stays with grpcio's server. The two share one gRPC core server (port,
transport, connections), the call threads, the --max-calls count (grpcio's, which the lane
adds its calls to) and the drain (server.stop lets the lane's calls finish within the grace,
then cancels them). ModelInfer keeps the error mapping (status, message, x-request-id
trailer), bearer tokens (checked before the message is asked for), the receive timeout, the
caller's deadline and cancellation (`is_active`).

The lane reaches into grpcio's server for gRPC core's server object and its call count.
Should a grpcio release move them, `attach` says so and grpcio's server answers ModelInfer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc._common import STATUS_CODE_TO_CYGRPC_STATUS_CODE
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # grpcio ships no stubs for it

from gateway.api.call_threads import cancel_late
from gateway.api.lane_context import LaneAbort, LaneContext
from gateway.api.status import status_for
from gateway.errors import GatewayError

__all__ = ["InferLane"]

_log = logging.getLogger(__name__)
_NO_FLAGS = 0
_OK = STATUS_CODE_TO_CYGRPC_STATUS_CODE[grpc.StatusCode.OK]
_NEW_CALL = object()  # the tag of the registered-call request
_REFUSED = object()  # the tag of a call refused at once: nothing is left to do when it ends
# How often waits for request messages are checked, at least (a sweep when events keep
# coming, a poll timeout when they do not).
_SWEEP_SECONDS = 0.1
Refusal = Callable[[Sequence[tuple[str, str | bytes]]], GatewayError | None]


class _Call:
    """One ModelInfer call in the lane. It ends when gRPC core has reported both its close
    and the completion of its answer's batch (or the lane decided there is none to send):
    until then a call thread may still start a batch on the lane's completion queue, which
    must not be shut down before."""

    __slots__ = ("call", "context", "outstanding", "waiting_since")

    def __init__(self, event: Any) -> None:
        self.call = event.call
        self.context = LaneContext(event.call, event.invocation_metadata,
                                   event.call_details.deadline)  # fmt: skip
        self.waiting_since = time.monotonic()
        self.outstanding = 2  # its close, and its answer


class _Closing:
    """The tag of a call's close, which tells whether the call was cancelled (by its caller,
    its deadline or the drain). The call does not refer back to its tags: a cycle would keep
    gRPC core's call, and its HTTP/2 stream, alive until the garbage collector ran, and a
    connection's streams would run out meanwhile."""

    __slots__ = ("owner",)

    def __init__(self, owner: _Call) -> None:
        self.owner = owner


class _Answered(_Closing):
    """The tag of a call's answer (its one batch with the status)."""

    __slots__ = ()


def _status_batch(context: LaneContext, code: grpc.StatusCode, details: str) -> tuple[Any, ...]:
    status = cygrpc.SendStatusFromServerOperation(
        context.trailing_metadata(), STATUS_CODE_TO_CYGRPC_STATUS_CODE[code],
        details.encode(), _NO_FLAGS,
    )  # fmt: skip
    return (cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS), status)


class InferLane:
    """ModelInfer's calls, from gRPC core's completion queue to the call threads."""

    def __init__(
        self,
        method: str,
        execute: Callable[..., None],
        max_calls: int,
        receive_timeout: float,
        on_receive_expired: Callable[[], None],
        refusal: Refusal | None = None,
    ) -> None:
        """`execute(fn, *args)` runs fn on a call thread (CallThreads.execute); `refusal`
        (bearer tokens) answers a call's metadata with the error to refuse it with, or None."""
        self._method = method
        self._execute = execute
        self._max_calls = max_calls
        self._receive_timeout = receive_timeout
        self._on_receive_expired = on_receive_expired
        self._refusal = refusal
        self._handler: Callable[[Any, Any], Any] | None = None
        self._parse: Callable[[bytes], Any] | None = None
        self._serialize: Callable[[Any], bytes] | None = None
        self._queue = cygrpc.CompletionQueue()
        self._core: Any = None  # gRPC core's server (grpcio's cygrpc.Server)
        self._grpc_state: Any = None  # grpcio's server state: its lock and call count
        # Only the lane's thread reads or changes these two.
        self._waiting: dict[_Call, None] = {}  # calls whose message has not arrived yet
        self._open = 0  # calls taken and not ended (see _Call)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="onnxgate-infer-lane",
                                        daemon=True)  # fmt: skip

    def attach(self, server: grpc.Server) -> bool:
        """Take the method from `server` (created, not started); False if this grpcio's server
        is not built as the lane expects, and then grpcio serves the method."""
        core = getattr(server, "_cy_server", None)
        state = getattr(server, "_state", None)
        if not isinstance(core, cygrpc.Server) or not hasattr(state, "active_rpc_count"):
            return False
        core.register_completion_queue(self._queue)
        core.register_method(self._method)
        self._core, self._grpc_state = core, state
        return True

    @property
    def method(self) -> str:
        """The method's full name, as gRPC matches it."""
        return self._method

    def serve_with(self, handler: grpc.RpcMethodHandler[Any, Any]) -> None:
        """The method's handler (error-mapped, as registered), run for each call."""
        assert handler.unary_unary is not None and handler.request_deserializer is not None
        assert handler.response_serializer is not None
        self._handler = handler.unary_unary
        self._parse = handler.request_deserializer
        self._serialize = handler.response_serializer

    def start(self) -> None:
        """Start taking calls; the server has started."""
        self._request()
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Once the server has stopped (no new calls): wait up to `timeout` s for the calls
        taken to end, then end the lane's thread; False if some still run then (the thread
        ends after them)."""
        if self._core is None:
            return True
        self._stopping.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _request(self) -> None:
        try:
            self._core.request_registered_call(self._queue, self._queue, self._method,
                                               _NEW_CALL)  # fmt: skip
        except (ValueError, RuntimeError):  # the server is shutting down
            pass

    def _poll(self) -> None:
        queue, waiting = self._queue, self._waiting
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        while True:
            event = queue.poll(time.time() + _SWEEP_SECONDS)
            if event.completion_type == cygrpc.CompletionType.operation_complete:
                tag = event.tag
                if type(tag) is _Answered:
                    self._ended(tag.owner)
                elif type(tag) is _Call:
                    waiting.pop(tag, None)
                    self._arrived(tag, event.batch_operations[0].message())
                elif type(tag) is _Closing:
                    if event.batch_operations[0].cancelled():
                        tag.owner.context.cancelled = True
                    self._ended(tag.owner)
                elif tag is _NEW_CALL and event.success:
                    self._begin(_Call(event))
            if waiting and time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + _SWEEP_SECONDS
                self._expire_late()
            if self._stopping.is_set() and not self._open:
                break
        # No call thread can start a batch on the queue any more.
        queue.shutdown()
        while queue.poll().completion_type != cygrpc.CompletionType.queue_shutdown:
            pass

    def _begin(self, lane_call: _Call) -> None:
        """A new call: refused at once (too many calls, no token), else its message asked for."""
        state = self._grpc_state
        # Under grpcio's lock, as grpcio asks for its next call: one count of calls with
        # grpcio's own (--max-calls); and while a drain begins, a call not asked for yet
        # stays in gRPC core, which answers it CANCELLED, unserved.
        with state.lock:
            self._request()
            full = state.active_rpc_count >= self._max_calls
            if not full:
                state.active_rpc_count += 1
        call = lane_call.call
        if full:
            batch = _status_batch(lane_call.context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  "Concurrent RPC limit exceeded!")  # fmt: skip
            call.start_server_batch((*batch, cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS)),
                                    _REFUSED)  # fmt: skip
            return
        self._open += 1
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),),
                                _Closing(lane_call))  # fmt: skip
        error = None if self._refusal is None else self._refusal(lane_call.context.metadata)
        if error is not None:
            lane_call.context.stamp_request_id()
            self._send(lane_call, _status_batch(lane_call.context, status_for(error),
                                                error.message))  # fmt: skip
            return
        self._waiting[lane_call] = None
        call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), lane_call)

    def _arrived(self, lane_call: _Call, message: bytes | None) -> None:
        if message is not None:
            self._execute(self._answer, lane_call, message)
        elif lane_call.context.is_active():  # the caller closed its side without a message
            self._send(lane_call, _status_batch(
                lane_call.context, grpc.StatusCode.UNIMPLEMENTED,
                f'"{self._method}" requires exactly one request message.',
            ))  # fmt: skip
        else:  # cancelled (or late) before its message came: nothing to answer
            self._ended(lane_call)

    def _ended(self, lane_call: _Call) -> None:
        lane_call.outstanding -= 1
        if lane_call.outstanding:
            return
        self._open -= 1
        state = self._grpc_state
        with state.lock:
            state.active_rpc_count -= 1

    def _answer(self, lane_call: _Call, message: bytes) -> None:
        """On a call thread: the servicer's answer, or the status its error maps to. Exactly
        one batch is sent, also for a call cancelled meanwhile (gRPC core fails it)."""
        assert self._handler is not None and self._parse is not None
        assert self._serialize is not None
        context = lane_call.context
        try:
            request = self._parse(message)
        except Exception as exc:  # protobuf's DecodeError: not a ModelInferRequest
            self._send(lane_call, _status_batch(
                context, grpc.StatusCode.INVALID_ARGUMENT,
                f"the request message is not a ModelInferRequest: {exc}",
            ))  # fmt: skip
            return
        try:
            serialized = self._serialize(self._handler(request, context))
        except LaneAbort as abort:
            self._send(lane_call, _status_batch(context, abort.code, abort.details))
            return
        except Exception:  # the error mapping answers every error; this is a defect
            _log.exception("internal error", extra={"method": self._method})
            self._send(lane_call, _status_batch(context, grpc.StatusCode.INTERNAL,
                                                "internal error"))  # fmt: skip
            return
        self._send(lane_call, (
            cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
            cygrpc.SendMessageOperation(serialized, _NO_FLAGS),
            cygrpc.SendStatusFromServerOperation(context.trailing_metadata(), _OK, b"",
                                                 _NO_FLAGS),
        ))  # fmt: skip

    @staticmethod
    def _send(lane_call: _Call, batch: tuple[Any, ...]) -> None:
        lane_call.call.start_server_batch(batch, _Answered(lane_call))

    def _expire_late(self) -> None:
        """Cancel the calls whose request message is later than the receive timeout."""
        started_before = time.monotonic() - self._receive_timeout
        late = [c for c in self._waiting if c.waiting_since <= started_before]
        for lane_call in late:
            del self._waiting[lane_call]
            if cancel_late(lane_call.call, self._receive_timeout):
                self._on_receive_expired()

"""One /metrics connection on the event loop: TLS handshake, request head, answer, keep-alive.

Every wait has a deadline. A connection gets `request_timeout` from accept to a complete
request head, TLS handshake included; a kept-alive one `idle_timeout` for the next request to
start, then `request_timeout` for its head; a closing one `request_timeout` for its response
to leave. Reading pauses while a request is answered, so a client that pipelines requests
without reading the responses holds one response at most before it is dropped.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from gateway.metrics.http.deadline import Deadline
from gateway.metrics.http.limits import ConnectionMetrics, ConnectionTable, MetricsLimits
from gateway.metrics.http.messages import (
    Exposition,
    HeadBuffer,
    HeadTooLarge,
    MalformedRequest,
    Page,
    Request,
    Response,
    answer,
    encode_response,
    parse_head,
)
from gateway.metrics.http.render import Renderer
from gateway.metrics.http.tls import TlsSession
from gateway.security.tokens import TokenTable

__all__ = ["Connection", "Shared"]

_log = logging.getLogger("gateway.metrics.http")
_PLAIN = (("Content-Type", "text/plain"),)


class _State(enum.Enum):
    HANDSHAKE = "handshake"  # TLS handshake under way
    WAITING = "waiting"  # for a request head (idle when kept alive and nothing came yet)
    BUSY = "busy"  # a complete request is being answered
    CLOSING = "closing"  # closed by us; the last response may still be leaving
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Shared:
    """What every connection of one server uses; all of it on the event-loop thread except
    the renderer's pool."""

    loop: asyncio.AbstractEventLoop
    limits: MetricsLimits
    table: ConnectionTable[Connection]
    renderer: Renderer
    metrics: ConnectionMetrics
    tokens: TokenTable | None
    ssl_context: ssl.SSLContext | None
    on_full: Callable[[], None]  # the cap was reached: evicting or refusing


class Connection(asyncio.Protocol):
    """The protocol of one accepted connection; see the module docstring for its deadlines."""

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._transport: asyncio.Transport | None = None
        self._state = _State.HANDSHAKE
        self._received = HeadBuffer(shared.limits.max_head_bytes)
        self._idle = False
        self._counted = False  # a connection counts once among the rejected, if at all
        self._peer_done = False  # the client shut its side: answer, then close
        self._writing_paused = False
        self._deadline = Deadline(shared.loop, self._expire)
        self._tls: TlsSession | None = None

    # Transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        shared = self._shared
        if shared.table.closed:  # accepted as the server stopped
            self._state = _State.CLOSED
            transport.abort()
            return
        admitted, evicted = shared.table.admit(self)
        if evicted is not None:
            evicted.evict()
        if evicted is not None or not admitted:
            shared.on_full()
        if not admitted:
            self._state = _State.CLOSED
            self._count("limit")
            transport.abort()
            return
        self._deadline.set(shared.limits.request_timeout)  # runs through the TLS handshake
        if shared.ssl_context is None:
            self._state = _State.WAITING
        else:
            self._tls = TlsSession(shared.ssl_context)

    def data_received(self, data: bytes) -> None:
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        if self._tls is not None:
            data = self._decrypt(data)
            if self._state is not _State.WAITING and self._state is not _State.BUSY:
                return  # still in the handshake, or it failed
        # Bounded by one read: reading pauses in BUSY.
        self._received.add(data)
        if self._state is _State.WAITING:
            if self._idle and data:  # the next request starts: request_timeout from here
                self._idle = False
                self._deadline.set(self._shared.limits.request_timeout)
            self._take_head()
        if self._peer_done and self._state is _State.WAITING:  # TLS close_notify, no request
            self._close()

    def eof_received(self) -> bool:
        self._peer_done = True
        return self._state is _State.BUSY  # still answer a request under way (a half-close)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state is _State.HANDSHAKE:
            self._count("handshake")
        self._forget()

    # Our side

    def close_now(self, reason: str | None) -> None:
        """Drop the connection and anything unsent, counting it under `reason` if given."""
        if self._state is _State.CLOSED:
            return
        if reason is not None:
            self._count(reason)
        self._forget()
        assert self._transport is not None
        self._transport.abort()

    def evict(self) -> None:
        """Make room for a new connection; counted unless this one was only closing."""
        self.close_now(None if self._state is _State.CLOSING else "evicted")

    def _forget(self) -> None:
        self._state = _State.CLOSED
        self._shared.table.forget(self)
        self._received.clear()
        self._deadline.cancel()

    def _count(self, reason: str) -> None:
        if not self._counted:
            self._counted = True
            self._shared.metrics.rejected.labels(reason).inc()

    def _expire(self) -> None:
        quietly = self._state is _State.WAITING and self._idle  # a kept connection unused
        self.close_now(None if quietly else "timeout")

    def _decrypt(self, data: bytes) -> bytes:
        """The application bytes in `data`; completes the handshake (HANDSHAKE to WAITING)
        or, when it fails, sends the alert and closes."""
        assert self._tls is not None and self._transport is not None
        try:
            plain = self._tls.receive(data)
        except ssl.SSLError as exc:
            _log.debug("metrics TLS failed", extra={"reason": str(exc)})
            self._transport.write(self._tls.outgoing())  # the alert says why
            if self._state is _State.HANDSHAKE:
                self._count("handshake")
            self._close()
            return b""
        self._transport.write(self._tls.outgoing())  # handshake flights, session tickets
        if self._state is _State.HANDSHAKE and self._tls.established:
            self._state = _State.WAITING
        if self._tls.peer_closed:
            self._peer_done = True
        return plain

    def _write(self, data: bytes) -> bool:
        """Send `data`; False when the connection broke instead (and is closed)."""
        assert self._transport is not None
        if self._tls is None:
            self._transport.write(data)
            return True
        try:
            self._tls.send(data)
        except ssl.SSLError as exc:
            _log.debug("metrics TLS failed", extra={"reason": str(exc)})
            self.close_now(None)
            return False
        self._transport.write(self._tls.outgoing())
        return True

    def _take_head(self) -> None:
        try:
            head = self._received.take_head()
        except HeadTooLarge:
            self._refuse("431 Request Header Fields Too Large", "too_large")
            return
        if head is None:
            return
        try:
            request = parse_head(head)
        except MalformedRequest as exc:
            self._refuse("400 Bad Request", "malformed", f"{exc}\n")
            return
        if self._writing_paused:  # pipelining without reading what we sent
            self.close_now(None)
            return
        assert self._transport is not None
        self._state = _State.BUSY
        self._shared.table.busy(self)
        self._deadline.cancel()
        self._transport.pause_reading()
        outcome = answer(request, self._shared.tokens, self._shared.renderer.pages is not None)
        if isinstance(outcome, Exposition | Page):
            loop = self._shared.loop

            def rendered(done: Future[Response]) -> None:  # on a render thread
                loop.call_soon_threadsafe(self._rendered, request, done)

            self._shared.renderer.submit(outcome, rendered)
        else:
            self._respond(request, outcome)

    def _rendered(self, request: Request, done: Future[Response]) -> None:
        if self._state is not _State.BUSY:  # gone while it rendered
            return
        if done.cancelled():  # the server is stopping
            self.close_now(None)
            return
        failure = done.exception()
        if failure is not None:
            _log.error("metrics rendering failed", exc_info=failure)
            response = Response("500 Internal Server Error", _PLAIN, b"rendering failed\n")
        else:
            response = done.result()
        self._respond(request, response)

    def _respond(self, request: Request, response: Response) -> None:
        assert self._transport is not None
        keep = request.keeps_connection(response) and not self._peer_done
        if not self._write(
            encode_response(response, keep_alive=keep, head_only=request.method == "HEAD")
        ):
            return
        if not keep:
            self._close()
            return
        self._state = _State.WAITING
        self._shared.table.evictable(self, kept=True)
        self._transport.resume_reading()
        if self._received:  # a pipelined request is already here
            self._deadline.set(self._shared.limits.request_timeout)
            # On the next turn of the loop, not deeper in this stack: a client pipelining
            # thousands of requests gets them answered one turn each, fairly with the others.
            self._shared.loop.call_soon(self._next_pipelined)
        else:
            self._idle = True
            self._deadline.set(self._shared.limits.idle_timeout)

    def _next_pipelined(self) -> None:
        if self._state is _State.WAITING:
            self._take_head()

    def _refuse(self, status: str, reason: str, text: str = "") -> None:
        assert self._transport is not None
        self._count(reason)
        body = text.encode() if text else f"{status}\n".encode()
        if self._write(encode_response(Response(status, _PLAIN, body), keep_alive=False)):
            self._close()

    def _close(self) -> None:
        """Close once the response has left, or drop it after request_timeout."""
        assert self._transport is not None
        self._state = _State.CLOSING
        self._shared.table.evictable(self, kept=False)
        self._deadline.set(self._shared.limits.request_timeout)
        if self._tls is not None:
            self._tls.close()
            self._transport.write(self._tls.outgoing())
        self._transport.close()

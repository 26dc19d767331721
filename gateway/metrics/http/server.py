"""The /metrics server: a listening socket served by one event-loop thread, a small render
pool, and the connection table that caps what clients can hold."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.metrics.http.connection import Connection, Shared
from gateway.metrics.http.limits import ConnectionMetrics, ConnectionTable, MetricsLimits
from gateway.metrics.http.render import Pages, Renderer
from gateway.security.tokens import TokenTable

__all__ = ["MetricsServer", "start_metrics_server"]

_log = logging.getLogger("gateway.metrics.http")
_FULL_WARNING_SECONDS = 60.0
_ACCEPT_BATCH = 32


class MetricsServer:
    """Serves one registry until shutdown(). A waiting connection costs a socket and a few
    hundred bytes on the event loop, never a thread: the threads are the loop's and the
    renderer's `limits.render_threads`, however many clients connect."""

    def __init__(
        self,
        listener: socket.socket,
        registry: CollectorRegistry,
        ssl_context: ssl.SSLContext | None,
        tokens: TokenTable | None,
        limits: MetricsLimits,
        pages: Pages | None = None,
    ) -> None:
        self.server_address: tuple[Any, ...] = listener.getsockname()
        self.server_port: int = self.server_address[1]
        self.limits = limits
        self._listener = listener
        self._ssl_context = ssl_context
        self._tokens = tokens
        self._table: ConnectionTable[Connection] = ConnectionTable(limits.max_connections)
        self.metrics = ConnectionMetrics(registry, self._table)
        self._renderer = Renderer(registry, limits.render_threads, pages)
        self._lock = threading.Lock()  # guards the stop request against the loop's start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._started = threading.Event()
        self._next_full_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="onnxgate-metrics", daemon=True)

    def start(self) -> None:
        """Start serving on the event-loop thread."""
        self._thread.start()
        self._started.wait()

    def shutdown(self) -> None:
        """Stop accepting, drop every connection and wait for the server's threads to end
        (a rendering under way finishes first); then stop the status pages."""
        self._request_stop()
        self._thread.join()
        if self._renderer.pages is not None:
            self._renderer.pages.stop()

    def server_close(self) -> None:
        """Ask the server to stop without waiting for it; shutdown() waits."""
        self._request_stop()

    def _request_stop(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._started.set()  # also if it failed

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_error)
        shared = Shared(
            loop, self.limits, self._table, self._renderer, self.metrics, self._tokens,
            self._ssl_context, self._warn_full,
        )  # fmt: skip
        accepting: set[asyncio.Task[Any]] = set()
        listener = self._listener
        retry: list[asyncio.TimerHandle] = []

        def accept() -> None:
            # A batch per turn of the loop: a new connection's request is read a turn or two
            # after it is admitted, before a burst of newer ones can push it out of the table.
            for _ in range(_ACCEPT_BATCH):
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    return
                except OSError as exc:  # out of descriptors: the kernel queues them meanwhile
                    _log.warning("metrics server cannot accept; retrying in 1 s",
                                 extra={"reason": str(exc)})  # fmt: skip
                    loop.remove_reader(listener.fileno())
                    retry[:] = [loop.call_later(1.0, loop.add_reader, listener.fileno(), accept)]
                    return
                task = loop.create_task(
                    loop.connect_accepted_socket(lambda: Connection(shared), sock)
                )
                accepting.add(task)
                task.add_done_callback(accepting.discard)

        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = loop, stop
            if self._stopping:  # asked before the loop could hear it
                stop.set()
        loop.add_reader(listener.fileno(), accept)
        self._started.set()
        try:
            await stop.wait()
        finally:
            loop.remove_reader(listener.fileno())
            for handle in retry:
                handle.cancel()
            listener.close()  # connections the kernel still queues are reset
            self._table.close()  # accepted ones not yet made are dropped in connection_made
            for connection in self._table.open_connections():
                connection.close_now(None)
            if accepting:  # each finishes once its connection_made has run
                await asyncio.wait(accepting)
            for _ in range(2):  # an aborted transport closes its socket a turn later
                await asyncio.sleep(0)
            self._renderer.close()  # blocks the loop, which has nothing left to serve
            await asyncio.sleep(0)  # renderings finished meanwhile find their connection gone

    def _warn_full(self) -> None:
        """At most once a minute: the rejected counter says how often."""
        assert self._loop is not None
        now = self._loop.time()
        if now >= self._next_full_warning:
            self._next_full_warning = now + _FULL_WARNING_SECONDS
            _log.warning(
                "metrics connection limit reached: evicting connections that have not sent a"
                " complete request, or refusing new ones",
                extra={"max_connections": self.limits.max_connections},
            )


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A client's failed connection is its business; anything else is ours."""
    failure = context.get("exception")
    if isinstance(failure, OSError):
        _log.debug("metrics connection failed", extra={"reason": str(failure)})
        return
    _log.error("metrics server error", exc_info=failure, extra={"reason": context.get("message")})


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port; IPv4 when the host has an IPv4 address, as the WSGI server
    this replaces always was, so `localhost` stays 127.0.0.1; an IPv6-only host works too."""
    found = socket.getaddrinfo(
        host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = min(found, key=lambda a: a[0] != socket.AF_INET)
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        # A long queue: a burst of connections waits there instead of losing its SYNs (and
        # a second to their retransmission); they are accepted, and evicted, at once.
        listener.listen(socket.SOMAXCONN)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


def start_metrics_server(
    port: int,
    host: str,
    registry: CollectorRegistry,
    ssl_context: ssl.SSLContext | None = None,
    tokens: TokenTable | None = None,
    limits: MetricsLimits | None = None,
    pages: Pages | None = None,
) -> MetricsServer:
    """Serve `registry` (and `pages` under /status) on host:port (0: a free port) until
    shutdown(), which stops `pages` too; over TLS with `ssl_context`, only to tokens with the
    `metrics` scope with `tokens`. Raises OSError when the port cannot be bound, ValueError
    when `registry` already has this server's metrics."""
    listener = _bind(host, port)
    try:
        server = MetricsServer(
            listener, registry, ssl_context, tokens, limits or MetricsLimits(), pages
        )
    except ValueError:  # the registry has these metrics already
        listener.close()
        raise
    server.start()
    return server

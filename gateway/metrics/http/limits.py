"""What bounds the /metrics server, which connection goes when it is full, and the counts of
connections it closed before answering them."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["REASONS", "ConnectionMetrics", "ConnectionTable", "MetricsLimits"]

REASONS = ("limit", "evicted", "timeout", "too_large", "malformed", "handshake")
C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class MetricsLimits:
    """Bounds of one /metrics server (seconds, bytes, counts)."""

    # From accept (TLS handshake included), or from the first byte of a later request on a
    # kept connection, to the end of the request head; also what a response may take to
    # leave once the connection is closing.
    request_timeout: float = 10.0
    # A kept-alive connection may wait this long for its next request: longer than
    # Prometheus' default 1 m scrape interval, so a scraper reuses its connection (and
    # its TLS session) from one scrape to the next.
    idle_timeout: float = 75.0
    max_connections: int = 256  # open at once, TLS handshakes included
    render_threads: int = 2
    max_head_bytes: int = 8192  # request line and headers; Prometheus sends a few hundred

    def __post_init__(self) -> None:
        if min(self.request_timeout, self.idle_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if min(self.max_connections, self.render_threads, self.max_head_bytes) < 1:
            raise ValueError("limits must be at least 1")


class ConnectionTable(Generic[C]):
    """The open connections and the order they are evicted in when the cap is reached.

    A connection is evictable while it waits for a request head, or while a response it did
    not read holds its close. Those that have not sent a complete request yet (tricklers,
    silent clients, half-done handshakes) and closing ones go first, oldest first; connections
    kept alive after a served request only when no such one is left, so the scraper that comes
    back every interval is not the one pushed out by a flood of new connections. A connection
    whose request is being answered is never evicted: with every connection there, a new one
    is refused. Used by one thread (the event loop)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: set[C] = set()
        self._first: dict[C, None] = {}  # insertion-ordered: the oldest first
        self._kept: dict[C, None] = {}
        self.closed = False

    def __len__(self) -> int:
        return len(self._open)

    def open_connections(self) -> list[C]:
        return list(self._open)

    def close(self) -> None:
        """The server stops: connection_made drops what is accepted from now on."""
        self.closed = True

    def admit(self, connection: C) -> tuple[bool, C | None]:
        """(admitted, the connection evicted to make room or None); an admitted connection
        starts evictable, first in line."""
        evicted = None
        if len(self._open) >= self._limit:
            line = self._first or self._kept
            if not line:
                return False, None
            evicted = next(iter(line))
            self.forget(evicted)
        self._open.add(connection)
        self._first[connection] = None
        return True, evicted

    def evictable(self, connection: C, kept: bool) -> None:
        """`connection` waits again: after a served request (kept) or to finish closing."""
        self._first.pop(connection, None)
        self._kept.pop(connection, None)
        (self._kept if kept else self._first)[connection] = None

    def busy(self, connection: C) -> None:
        """`connection` has sent a complete request: not evicted until it waits again."""
        self._first.pop(connection, None)
        self._kept.pop(connection, None)

    def forget(self, connection: C) -> None:
        self._open.discard(connection)
        self.busy(connection)


class ConnectionMetrics:
    """The server's own metrics, on the registry it serves."""

    def __init__(self, registry: CollectorRegistry, table: ConnectionTable[C]) -> None:
        self.rejected = Counter(
            "onnxgate_metrics_connections_rejected",
            "Connections to /metrics the server closed before serving a request, by reason:"
            " limit (refused: the connection cap was reached and none could be evicted),"
            " evicted (closed, not yet having sent a complete request, to admit a new one),"
            " timeout (TLS handshake and request head, or the response when closing, not done"
            " in time), too_large (request head over the limit: 431), malformed (not HTTP/1.x:"
            " 400), handshake (TLS handshake failed).",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.rejected.labels(reason)
        self.open = Gauge(
            "onnxgate_metrics_connections_open",
            "Connections to /metrics open now, TLS handshakes included.",
            registry=registry,
        )
        self.open.set_function(lambda: len(table))

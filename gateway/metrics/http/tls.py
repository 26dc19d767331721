"""TLS for one connection over memory buffers: bytes from the socket in, bytes to send out.

asyncio's own TLS (start_server(ssl=...), start_tls) gives every connection a 256 KiB read
buffer from its first byte, about 310 KiB with OpenSSL's state: a full table of half-done
handshakes would hold some 80 MB. Here one costs OpenSSL's state, about 50 KiB, and its
handshake runs under the connection's own deadline like any other wait.
"""

from __future__ import annotations

import ssl

__all__ = ["TlsSession"]

_READ_SIZE = 64 * 1024


class TlsSession:
    """The server side of one TLS connection; not thread-safe (the event loop's)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.established = False
        self.peer_closed = False  # the client sent close_notify

    def receive(self, data: bytes) -> bytes:
        """Take `data` from the socket; returns the application bytes it completes (none
        while the handshake runs). Raises ssl.SSLError when the handshake fails or a record
        is corrupt; outgoing() may then hold the alert to send before closing."""
        self._incoming.write(data)
        if not self.established:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.established = True
        plain = bytearray()
        while not self.peer_closed:
            try:
                chunk = self._ssl.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # read() returns nothing only at the peer's close_notify
                self.peer_closed = True
            plain += chunk
        return bytes(plain)

    def send(self, data: bytes) -> None:
        """Encrypt `data` into outgoing(); raises ssl.SSLError."""
        view = memoryview(data)
        while view:
            view = view[self._ssl.write(view) :]

    def close(self) -> None:
        """Queue our close_notify in outgoing(), if the handshake got that far."""
        if self.established:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:  # SSLWantReadError: the client's close_notify is not here
                pass

    def outgoing(self) -> bytes:
        """What is to be sent to the client now (handshake, records, alerts, tickets)."""
        return self._outgoing.read()

"""The /metrics endpoint: prometheus_client's WSGI app, optionally behind TLS and a token.

prometheus_client's own start_http_server has TLS but no authentication, so this serves its
WSGI app on a threading server of our own.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from gateway.api.tokens import TokenTable

__all__ = ["MetricsServer", "start_metrics_server"]

_log = logging.getLogger(__name__)
_WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
HANDSHAKE_TIMEOUT_SECONDS = 10.0


class MetricsServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape; a TLS handshake happens on that thread, never the accept loop."""

    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.settimeout(HANDSHAKE_TIMEOUT_SECONDS)  # a silent client cannot hold a thread
        if self.ssl_context is not None:
            connection = self.ssl_context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed handshake or a dropped scrape is the client's business: no traceback."""
        _log.info("metrics connection failed", extra={"peer": str(client_address)})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base's name
        """Scrapes are not logged: one line per scrape would drown the gateway's own."""


def _guarded(app: _WSGIApp, tokens: TokenTable) -> _WSGIApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        caller = tokens.identify(environ.get("HTTP_AUTHORIZATION"))
        if caller is None:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"'),
                                                ("Content-Type", "text/plain")])  # fmt: skip
            return [b"expected header 'Authorization: Bearer <token>' with a known token\n"]
        if "metrics" not in caller[1]:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [f"token {caller[0]!r} lacks the 'metrics' scope\n".encode()]
        return app(environ, start_response)

    return guarded


def start_metrics_server(
    port: int,
    host: str,
    registry: CollectorRegistry,
    ssl_context: ssl.SSLContext | None = None,
    tokens: TokenTable | None = None,
) -> MetricsServer:
    """Serve `registry` on a daemon thread; shut down with shutdown() and server_close()."""
    app: _WSGIApp = make_wsgi_app(registry)
    if tokens is not None:
        app = _guarded(app, tokens)
    server = make_server(host, port, app, MetricsServer, handler_class=_QuietHandler)
    assert isinstance(server, MetricsServer)
    server.ssl_context = ssl_context
    threading.Thread(target=server.serve_forever, name="onnxgate-metrics", daemon=True).start()
    return server

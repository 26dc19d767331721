"""The /metrics endpoint: the gateway's registry over HTTP, optionally behind TLS and a token,
with limits no client can get around.

prometheus_client's own servers give each connection a thread whose timeout is per read, so a
client sending a byte a second holds a thread for ever, and a thousand such clients a thousand
threads. Here one event-loop thread holds every connection and renders nothing; the exposition
is rendered on a fixed pool (`MetricsLimits.render_threads`). Every connection has a deadline
for its whole request head, TLS handshake included; the open connections are capped, and at
the cap the oldest connection that has not sent a complete request is evicted to admit the new
one, so tricklers cannot lock a scraper out. What is refused, evicted or timed out is counted
in `onnxgate_metrics_connections_rejected_total{reason}` on the registry served.

The answers are make_wsgi_app's (content negotiation, gzip, `name[]`, any path), over
HTTP/1.1 with keep-alive, as Prometheus scrapes.
"""

from __future__ import annotations

from gateway.metrics.http.limits import MetricsLimits
from gateway.metrics.http.server import MetricsServer, start_metrics_server

__all__ = ["MetricsLimits", "MetricsServer", "start_metrics_server"]

"""The /metrics endpoint of a process (a gateway, or a supervisor serving its workers'
aggregate), as the settings ask for it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.metrics.http import MetricsServer, start_metrics_server
from gateway.security.material import Security
from gateway.settings import Settings
from gateway.status.service import StatusPages

__all__ = ["start_metrics_endpoint"]


def start_metrics_endpoint(
    settings: Settings, security: Security, registry: CollectorRegistry, redis_url: str | None
) -> MetricsServer | None:
    """Serve `registry` on metrics_port (None: -1, no endpoint), over the gRPC port's TLS with
    metrics_tls, only to tokens with the `metrics` scope with metrics_auth; and the status
    pages of the registry at `redis_url` unless turned off (or there is no registry)."""
    if settings.metrics_port < 0:
        return None
    tls = security.tls if settings.metrics_tls else None
    pages = None
    if settings.status_pages and redis_url:
        pages = StatusPages(redis_url, settings.namespace, settings.status_refresh_seconds)
        pages.start()
    try:
        return start_metrics_server(
            settings.metrics_port, settings.host, registry,
            None if tls is None else tls.ssl_context(),
            security.tokens if settings.metrics_auth else None, pages=pages,
        )  # fmt: skip
    except BaseException:
        if pages is not None:
            pages.stop()
        raise

"""The optional access log (--access-log-sample): one line per sampled ModelInfer request.

Sampled, not complete: at thousands of requests a second a line each would cost more than the
request (a JSON line is tens of microseconds). With a rate of 0 the request path pays one float
comparison and nothing here runs.
"""

from __future__ import annotations

import logging
import time

from gateway.process.logs import ACCESS_LOGGER

__all__ = ["log_access"]

_log = logging.getLogger(ACCESS_LOGGER)


def log_access(model: str, version: str | None, code: str, started: float, request_id: str) -> None:
    """One line: the version that served (None when the request failed before one was
    known), the status the caller got, the time since `started` (perf_counter) in ms."""
    _log.info(
        "request",
        extra={
            "model": model,
            "version": version,
            "role": "primary",  # shadow copies are not answered, so not in this log
            "code": code,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "request_id": request_id,
        },
    )

"""Structured logging: one JSON object per line (or plain text), fields from `extra=`.

Times are UTC with milliseconds and an explicit `Z` (2026-12-02T10:15:30.123Z), in both
formats, so lines from gateways in different time zones, and from other systems, can be joined
and ordered without knowing where each was written.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["ACCESS_LOGGER", "configure_logging"]

# The access log (--access-log-sample): asked for by its own flag, so --log-level does not
# silence it.
ACCESS_LOGGER = "onnxgate.access"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _UtcFormatter(logging.Formatter):
    """Times as UTC with milliseconds and `Z`, whatever the host's time zone."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(_UtcFormatter):
    """Formats a record as JSON with time, level, logger, message and every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(_UtcFormatter):
    """One readable line: time, level, logger, message, then the extra fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        return f"{line} {extras}" if extras else line


def configure_logging(level: str, fmt: str) -> None:
    """Send the gateway's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)

"""Errors of the registry client; gatectl maps them to exit codes.

RegistryError
+-- Rejected       validation failed or the thing is not there (exit 1)
|   +-- NotFound   no such model, version or rule
+-- Conflict       the rule changed underneath: read it again and retry (exit 3)
+-- Unreachable    Redis did not answer (exit 4)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

__all__ = [
    "Conflict",
    "NotFound",
    "RegistryError",
    "Rejected",
    "Unreachable",
    "redis_unreachable_as_error",
]


class RegistryError(Exception):
    """Base of the registry client's errors; the message says what to do."""


class Rejected(RegistryError):
    """Raised when a write fails validation; nothing was written."""


class NotFound(Rejected):
    """Raised when the model, version or rule does not exist."""


class Conflict(RegistryError):
    """Raised when expected_revision no longer matches; nothing was written."""


class Unreachable(RegistryError):
    """Raised when Redis cannot be reached; nothing is known to have been written."""


@contextmanager
def redis_unreachable_as_error() -> Iterator[None]:
    """Turn a lost connection or a timeout into Unreachable, with what to check."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unreachable(f"Redis is unreachable: {exc}; check --redis-url") from exc

"""Errors of the registry client; gatectl maps them to exit codes.

RegistryError
+-- Rejected       validation failed or the thing is not there (exit 1)
|   +-- NotFound   no such model, version or rule
+-- Conflict       the rule changed underneath: read it again and retry (exit 3)
+-- Unreachable    Redis did not answer, or refused writes for its own state (exit 4)
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
    """Raised when Redis cannot be reached, or refuses writes for its own state (full, too
    few replicas, read-only); nothing is known to have been written."""


def _redis_message(exc: redis.ResponseError) -> str:
    """Redis' own message: redis-py puts the command of a pipeline that met it before it."""
    return str(exc).rpartition("caused error: ")[2]


def _refusal(exc: redis.ResponseError) -> str | None:
    """Why Redis refused a command for its own state rather than for the command, or None."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "it is full (used memory above maxmemory, and its policy evicts nothing)"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "it is a read-only replica (a failover under way, or the URL names a replica)"
    message = _redis_message(exc)
    if message.startswith("NOREPLICAS"):
        return "the primary has fewer connected replicas than its min-replicas-to-write"
    if message.startswith("MASTERDOWN"):
        return "it is a replica that lost its primary"
    return None


@contextmanager
def redis_unreachable_as_error() -> Iterator[None]:
    """Turn a lost connection, a timeout, or a write Redis refused for its own state into
    Unreachable, with what to check."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unreachable(f"Redis is unreachable: {exc}; check --redis-url") from exc
    except redis.ResponseError as exc:
        reason = _refusal(exc)
        if reason is None:
            raise
        raise Unreachable(f"Redis refused the write: {reason}: {_redis_message(exc)}") from exc

"""How the registry reaches its Redis: the client built from a URL with its timeouts and
retries, the private Redis a gateway runs when it is given no URL, and giving a pipeline's
connection back to the pool whatever happened to it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import redis
from redis.maint_notifications import MaintNotificationsConfig

__all__ = [
    "PRIVATE_SOCKET_NAME",
    "default_data_dir",
    "private_redis_url",
    "redis_client",
    "release_pipeline",
]

PRIVATE_SOCKET_NAME = "redis.sock"


def redis_client(url: str) -> redis.Redis:
    """A client of the Redis at a `redis://`, `rediss://` or `unix://` URL, with retries; it
    connects lazily, on its first command."""
    retry = redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=1.0, base=0.05), 3)
    # Maintenance notifications (redis-py 8's default with RESP3 over TCP) make the pool
    # skip its check that a connection handed out has no unread reply left on it; the
    # registry's Redis sends none, so keep the check.
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=5, retry=retry,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )  # fmt: skip


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where a gateway started without --redis-url keeps its private Redis; gatectl looks
    for it there too."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", ".")) / ".local" / "share")
    return Path(base) / "onnxgate"


def private_redis_url(data_dir: Path) -> str:
    """The unix-socket URL of the private Redis in a data directory."""
    return f"unix://{data_dir / PRIVATE_SOCKET_NAME}"


def release_pipeline(pipe: redis.client.Pipeline) -> None:
    """Reset a pipeline and give its connection back to the pool, also when the UNWATCH that
    reset() sends fails. redis-py's reset() gives the connection back only once UNWATCH is
    answered or fails with a ConnectionError; a TimeoutError (not one) or a refusal escapes
    before that and the connection never returns: redis-py 8's pool makes 100, then every
    user gets "Too many connections" (tests/system/test_redis_pool_integrity.py)."""
    try:
        pipe.reset()
    except redis.RedisError:
        if pipe.connection is not None:
            pipe.connection.disconnect()  # type: ignore[no-untyped-call]  # its WATCH ends too
        pipe.watching = False
        pipe.reset()

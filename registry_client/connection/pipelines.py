"""Pipelines of either kind of client: whether one has begun its MULTI, and giving its
connection back to the pool whatever happened to it."""

from __future__ import annotations

import redis
import redis.cluster

__all__ = ["Pipeline", "in_transaction", "release_pipeline"]

Pipeline = redis.client.Pipeline | redis.cluster.ClusterPipeline


def in_transaction(pipe: Pipeline) -> bool:
    """Whether pipe.multi() was called: the writes queued since then are to be executed."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        return bool(pipe._execution_strategy._explicit_transaction)  # type: ignore[attr-defined]
    return bool(pipe.explicit_transaction)


def release_pipeline(pipe: Pipeline) -> None:
    """Reset a pipeline and give its connection back to the pool, also when the UNWATCH that
    reset() sends fails. redis-py's reset() gives the connection back only once UNWATCH is
    answered or fails with a ConnectionError; a TimeoutError (not one) or a refusal escapes
    before that and the connection never returns: redis-py 8's pool makes 100, then every
    user gets "Too many connections" (tests/system/test_redis_pool_integrity.py)."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        pipe.reset()  # type: ignore[no-untyped-call]  # its strategy disconnects a connection whose UNWATCH failed
        return
    try:
        pipe.reset()
    except redis.RedisError:
        if pipe.connection is not None:
            pipe.connection.disconnect()  # type: ignore[no-untyped-call]  # its WATCH ends too
        pipe.watching = False
        pipe.reset()

"""The redis-py client of a RedisLocation: a plain client for one server, the primary a
Sentinel deployment names (found again after a failover), or a Redis Cluster client (slots
found again after a shard fails over). All with the same timeouts and retries; each connects
lazily, on its first command."""

from __future__ import annotations

import threading
from typing import Any, cast
from urllib.parse import urlencode

import redis
import redis.cluster
import redis.sentinel
from redis.maint_notifications import MaintNotificationsConfig

from registry_client.connection.urls import RedisLocation, parse_redis_url

__all__ = ["RedisClient", "is_cluster", "redis_client", "redis_client_at"]

# What the registry's modules are given: one server's or a Sentinel primary's client, or a
# Cluster's. They use the commands both have; a transaction keeps to one hash slot.
RedisClient = redis.Redis | redis.cluster.RedisCluster

SOCKET_TIMEOUT_SECONDS = 5.0


def redis_client(url: str) -> RedisClient:
    """A client of the Redis a URL names (registry_client.connection.urls), with retries."""
    return redis_client_at(parse_redis_url(url))


def redis_client_at(location: RedisLocation) -> RedisClient:
    """A client of the Redis at `location`, with retries."""
    if location.topology == "sentinel":
        return _sentinel_primary(location)
    if location.topology == "cluster":
        # Used as the RedisCluster it makes: every attribute is that client's.
        return cast(redis.cluster.RedisCluster, _LazyCluster(location))
    # Maintenance notifications (redis-py 8's default with RESP3 over TCP) make the pool
    # skip its check that a connection handed out has no unread reply left on it; the
    # registry's Redis sends none, so keep the check.
    return redis.Redis.from_url(
        location.server_url, socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS, retry=_retry(),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )  # fmt: skip


def _retry() -> redis.retry.Retry:
    return redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=1.0, base=0.05), 3)


def _timeouts() -> dict[str, Any]:
    return {
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": SOCKET_TIMEOUT_SECONDS,
    }


def _options(location: RedisLocation) -> dict[str, Any]:
    """The URL's query as redis-py's own URL parser types it (TLS files, timeouts)."""
    if not location.options:
        return {}
    parsed: dict[str, Any] = redis.connection.parse_url(  # type: ignore[no-untyped-call]
        "redis://localhost/?" + urlencode(location.options)
    )
    return {name: value for name, value in parsed.items() if name not in ("host", "port")}


def _sentinel_primary(location: RedisLocation) -> redis.Redis:
    """The primary the sentinels name; its pool asks them again whenever it connects, and
    drops connections to a primary that became a replica, so a failover is followed."""
    timeouts = _timeouts()
    options = _options(location)
    tls = {name: value for name, value in options.items() if name.startswith("ssl_")}
    sentinel_kwargs: dict[str, Any] = dict(timeouts)
    if location.tls:
        sentinel_kwargs.update(ssl=True, **tls)
    if location.sentinel_username:
        sentinel_kwargs["username"] = location.sentinel_username
    if location.sentinel_password is not None:
        sentinel_kwargs["password"] = location.sentinel_password
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]  # unannotated
        [(endpoint.host, endpoint.port) for endpoint in location.endpoints],
        sentinel_kwargs=sentinel_kwargs,
    )
    primary: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]  # unannotated
        location.service, redis_class=redis.Redis, db=location.db,
        username=location.username, password=location.password, ssl=location.tls,
        retry=_retry(), retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
        **(timeouts | options),  # the URL's own timeouts win
    )  # fmt: skip
    return primary


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Redis Cluster (one slot per transaction, sharded pub/sub)."""
    return isinstance(client, redis.cluster.RedisCluster | _LazyCluster)


class _LazyCluster:
    """A Cluster client made on first use. redis-py's RedisCluster asks a seed node for the
    slots' owners as it is made, and fails when none answers; made here instead, a gateway
    started while the cluster is away starts all the same and reaches it later, as it
    would one server. Its failure to be made is a ConnectionError, as one server's would
    be; the next use tries again."""

    def __init__(self, location: RedisLocation) -> None:
        self._location = location
        self._lock = threading.Lock()
        self._client: redis.cluster.RedisCluster | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _made(self) -> redis.cluster.RedisCluster:
        with self._lock:
            if self._client is None:
                try:
                    self._client = _cluster(self._location)
                except redis.exceptions.RedisClusterException as exc:
                    raise redis.ConnectionError(
                        f"no seed node of {self._location.describe()} answers: {exc}"
                    ) from exc
            return self._client


def _cluster(location: RedisLocation) -> redis.cluster.RedisCluster:
    """A Cluster client from its seed nodes; it learns the slots' owners, and learns them
    again when a node answers MOVED or stops answering (a shard's failover)."""
    nodes = [
        redis.cluster.ClusterNode(e.host, e.port)  # type: ignore[no-untyped-call]  # unannotated
        for e in location.endpoints
    ]
    return redis.cluster.RedisCluster(
        startup_nodes=nodes,
        username=location.username, password=location.password, ssl=location.tls,
        # Learn the slots' owners again at the first connection error or MOVED. redis-py
        # counts errors towards its default of 5 per pipeline, and each transaction is a new
        # pipeline that gives up after its retries: a failed-over shard's transactions would
        # go to the dead primary forever.
        reinitialize_steps=1,
        retry=_retry(), maint_notifications_config=MaintNotificationsConfig(enabled=False),
        **(_timeouts() | _options(location)),  # the URL's own timeouts win
    )  # fmt: skip

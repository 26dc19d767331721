"""Pub/sub on either kind of client. A Redis Cluster's hints go by sharded pub/sub
(SPUBLISH/SSUBSCRIBE): the channel is hash-tagged like the keys of the transaction that
publishes it, so the message stays within that shard and is part of that transaction; one
server's (or a Sentinel primary's) by PUBLISH/SUBSCRIBE."""

from __future__ import annotations

from collections.abc import Callable

import redis
import redis.cluster

from registry_client.connection.clients import RedisClient, is_cluster
from registry_client.connection.pipelines import Pipeline

__all__ = ["Subscription", "queue_publish"]


def queue_publish(pipe: Pipeline, channel: str, message: str) -> None:
    """Queue the publication of `message` on `channel` in a transaction."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        # Issued as a command: redis-py's cluster pipeline has no spublish method, and
        # checks that the channel's slot is the transaction's.
        pipe.execute_command("SPUBLISH", channel, message)  # type: ignore[no-untyped-call]
    else:
        pipe.publish(channel, message)


class Subscription:
    """One channel subscribed to. `wait` says whether a message came within a timeout; a
    lost connection raises redis's ConnectionError (subscribe again then)."""

    def __init__(self, client: RedisClient, channel: str) -> None:
        self._sharded = is_cluster(client)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._callbacks: list[tuple[object, Callable[..., None]]] = []
        if self._sharded:
            self._pubsub.ssubscribe(channel)
        else:
            self._pubsub.subscribe(channel)

    def on_reconnect(self, callback: Callable[..., None]) -> None:
        """Call `callback` whenever redis-py connects the subscription again by itself (it
        resubscribes, and what was published meanwhile is lost)."""
        for connection in self._connections():
            connection.register_connect_callback(callback)  # type: ignore[no-untyped-call]
            self._callbacks.append((connection, callback))

    def wait(self, timeout: float) -> bool:
        """Whether a message arrived within `timeout` seconds."""
        if self._sharded:
            message = self._pubsub.get_sharded_message(timeout=timeout)
        else:
            message = self._pubsub.get_message(timeout=timeout)
        return message is not None

    def close(self) -> None:
        for connection, callback in self._callbacks:  # the pool hands them to others next
            connection.deregister_connect_callback(callback)  # type: ignore[attr-defined]
        self._callbacks.clear()
        self._pubsub.close()

    def _connections(self) -> list[redis.connection.AbstractConnection]:
        if self._sharded:
            nodes = self._pubsub.node_pubsub_mapping.values()
            return [p.connection for p in nodes if p.connection is not None]
        connection = self._pubsub.connection
        return [] if connection is None else [connection]

"""How the registry reaches its Redis: the URL forms (one server, Sentinel, Cluster), the
client each gets with its timeouts and retries, pipelines of either kind, and the private
Redis a gateway runs when it is given no URL."""

from registry_client.connection.channels import Subscription, queue_publish
from registry_client.connection.clients import (
    RedisClient,
    is_cluster,
    redis_client,
    redis_client_at,
)
from registry_client.connection.pipelines import Pipeline, in_transaction, release_pipeline
from registry_client.connection.private import (
    PRIVATE_SOCKET_NAME,
    default_data_dir,
    private_redis_url,
)
from registry_client.connection.urls import RedisLocation, RedisUrlError, parse_redis_url

__all__ = [
    "PRIVATE_SOCKET_NAME",
    "Pipeline",
    "RedisClient",
    "RedisLocation",
    "RedisUrlError",
    "Subscription",
    "default_data_dir",
    "in_transaction",
    "is_cluster",
    "parse_redis_url",
    "private_redis_url",
    "queue_publish",
    "redis_client",
    "redis_client_at",
    "release_pipeline",
]

"""RegistryClient: models, versions and routing rules in Redis, every write audited.

Every write is validated first and is atomic (WATCH/MULTI): it bumps `{ns}:epoch`, appends to
the audit stream and publishes a hint on `{ns}:events`. Each kind of record has its module
under registry_client.records; the client is all of them over one connection pool, with the
statistics and drift stores that share it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from registry_client.connection import RedisClient, redis_client
from registry_client.drift.store import DriftStore
from registry_client.quality.labels import Label, LabelStore
from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.store import QualityStore
from registry_client.records.artifacts import MAX_ARTIFACT_BYTES
from registry_client.records.evaluations import EvaluationRecords
from registry_client.records.gateways import GatewayRecords
from registry_client.records.lifecycle import VersionLifecycle
from registry_client.records.measurements import MeasurementRecords
from registry_client.records.rules import AuditEntry
from registry_client.stats.store import StatsStore

__all__ = ["MAX_ARTIFACT_BYTES", "AuditEntry", "RegistryClient", "unregistered_versions"]


class RegistryClient(GatewayRecords, VersionLifecycle, EvaluationRecords, MeasurementRecords):
    """The registry over one Redis connection pool. Thread-safe (redis-py pools are).

    Its records build on each other: models and versions (ModelRecords), the rules routing
    to them (RuleRecords), the gateways' heartbeats reporting which rule they apply
    (GatewayRecords); versions retired and back (VersionLifecycle), their evaluations
    (EvaluationRecords) and the metrics measured on them over time (MeasurementRecords)."""

    def __init__(self, client: RedisClient, namespace: str = "onnxgate") -> None:
        super().__init__(client, namespace)
        self.stats = StatsStore(client, self.keys)
        self.drift = DriftStore(client, self.keys, self._audit)
        self.predictions = PredictionStore(client, self.keys)
        self.labels = LabelStore(client, self.keys)
        self.quality = QualityStore(client, self.keys)

    def put_labels(self, model: str, labels: Sequence[Label], now: float | None = None) -> int:
        """Give the true value of earlier predictions, named by their ids; returns how many
        were taken. They are joined with their predictions in the background (within seconds
        while a gateway runs): a label for an unknown or expired id is counted as unmatched,
        and a second label for an id replaces the first. Rejected (nothing taken) names the
        first invalid label's index and field; Unreachable when Redis does not answer."""
        return self.labels.put(model, labels, time.time() if now is None else now)

    @classmethod
    def from_url(cls, url: str, namespace: str = "onnxgate") -> RegistryClient:
        """Connect lazily to the Redis a URL names (one server, a Sentinel primary or a
        Cluster: registry_client.connection.urls), with retries. RedisUrlError (a
        ValueError) for a URL of no such form."""
        return cls(redis_client(url), namespace)


def unregistered_versions(
    client: RegistryClient, versions: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (model, version) pairs have no record in the registry, read in one round trip
    (a gateway checks that the registry still has what it serves)."""
    if not versions:
        return set()
    with client._connection(), client._redis.pipeline(transaction=False) as pipe:
        for model, version in versions:
            pipe.hget(client.keys.version(model, version), "status")  # HGET: in a gateway's ACL
        found = pipe.execute()
    return {pair for pair, status in zip(versions, found, strict=True) if status is None}

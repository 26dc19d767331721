"""The label join in the gateway: the gateway holding the joiner lease joins every model's new
labels with their predictions each interval; the others stand by and take over within the
lease's TTL when it goes. Exactness does not rest on the lease (each batch is written in one
transaction that checks the checkpoint and the lease), only the saving of duplicate work does.

A label is joined once it has settled (join.py) and, after the registry was unreachable, only
when the registry has answered for a settling time again and this gateway's own prediction log
has caught up: the predictions held through an outage are written before the labels given
meanwhile are looked for, and not counted unmatched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import redis

from gateway.metrics.gateway_metrics import GatewayMetrics
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError
from registry_client.quality.join import JoinResult, LabelJoiner
from registry_client.quality.task import QualityConfig
from registry_client.records.leases import Lease

__all__ = ["MAX_BATCHES_PER_TICK", "LabelJoining"]

_log = logging.getLogger(__name__)

# A tick joins at most this many batches per model, so one model's backlog cannot hold the
# others' labels back for long; the rest is joined at the next ticks.
MAX_BATCHES_PER_TICK = 20


class LabelJoining:
    """Joins labels while this gateway holds the lease; tick() runs on a Periodic's thread."""

    def __init__(
        self, client: RegistryClient, replica: str, metrics: GatewayMetrics,
        configs: Callable[[], Mapping[str, QualityConfig]], lease_seconds: float,
        settle_seconds: float, log_caught_up: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._lease = Lease(client, client.keys.label_joiner, replica, lease_seconds)
        self._joiner = LabelJoiner(client._redis, client.keys, replica)
        self._metrics = metrics
        self._configs = configs
        self._settle = settle_seconds
        self._log_caught_up = log_caught_up
        self._clock = clock
        self.leading = False
        self._failing = False
        self._reachable_since: float | None = None

    def tick(self) -> None:
        try:
            self.leading = self._lease.hold()
            now = self._clock()
            if self._reachable_since is None:
                self._reachable_since = now
            settled = now - self._reachable_since >= self._settle and self._log_caught_up()
            if self.leading and settled:
                for model, config in self._configs().items():
                    self._join_model(model, config)
        except (RegistryError, redis.RedisError) as exc:
            self._reachable_since = None
            if not self._failing:
                _log.warning("labels not joined; will retry", extra={"reason": str(exc)})
            self._failing = True
            return
        if self._failing:
            _log.info("labels joined again")
        self._failing = False

    def _join_model(self, model: str, config: QualityConfig) -> None:
        for _ in range(MAX_BATCHES_PER_TICK):
            result = self._joiner.join(model, config, self._lease.key, self._lease.value,
                                       self._clock(), settle_seconds=self._settle)  # fmt: skip
            self._count(model, result)
            if result.lease_lost:
                self.leading = False
                return
            if not result.remaining:
                return

    def _count(self, model: str, result: JoinResult) -> None:
        metrics = self._metrics
        if result.joined:
            metrics.labels_joined.labels(model).inc(result.joined)
        if result.replaced:
            metrics.labels_replaced.labels(model).inc(result.replaced)
        if result.late:
            metrics.labels_late.labels(model).inc(result.late)
        for reason, count in result.unmatched.items():
            metrics.labels_unmatched.labels(model, reason).inc(count)

    def stop(self) -> None:
        """Hand the lease over at once rather than after its TTL."""
        if self.leading:
            try:
                self._lease.release()
            except (RegistryError, redis.RedisError):
                pass  # it expires by itself
        self.leading = False

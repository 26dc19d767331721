"""A gateway that follows a registry: the client, the rule watcher with the artifact cache it
fills, the replica id it claims before anything is served or written under it, the import of
--models into the registry, and its part in driving rollouts (the controller and its
webhook)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.rollout import RolloutMetrics
from gateway.models.store import VersionStore
from gateway.process.shutdown import ShutdownBudget
from gateway.rollout.controller import RolloutController
from gateway.rollout.quality_events import QualityEventLimits, QualityEvents
from gateway.rollout.webhook import WebhookNotifier
from gateway.routing.replica_identity import ReplicaIdInUse, claim_replica_id
from gateway.routing.table import RouteTableHolder
from gateway.routing.watcher import RuleWatcher
from gateway.settings import Settings
from registry_client.client import RegistryClient

__all__ = ["RegistryFollowing"]


class RegistryFollowing:
    """The registry side of a gateway, for the registry at `redis_url`: built with the
    gateway, claimed and started after its server, stopped after its drain."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        replica: str,
        versions: VersionStore,
        routes: RouteTableHolder,
        metrics: GatewayMetrics,
        on_change: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._replica = replica
        self._temporary_cache: tempfile.TemporaryDirectory[str] | None = None
        self.client = RegistryClient.from_url(redis_url, settings.namespace)
        self.watcher = RuleWatcher(
            self.client, versions, routes, metrics,
            replica=replica, poll_seconds=settings.rules_poll_seconds,
            heartbeat_seconds=settings.heartbeat_seconds, on_change=on_change,
            artifact_cache=self._artifact_cache(),
            bootstrap=self._import_models if settings.models else None,
            max_artifact_bytes=settings.max_model_bytes,
        )  # fmt: skip
        conflict, heartbeat = metrics.replica_id_conflict, self.watcher.heartbeat
        metrics.samplers.append(lambda: conflict.set(int(heartbeat.conflicting())))
        self.rollouts: RolloutController | None = None
        self.webhook: WebhookNotifier | None = None

    def drive_rollouts(self, registry: CollectorRegistry, webhook_secret: bytes | None) -> None:
        """Take part in driving rollouts (rollout_controller), with its metrics on `registry`,
        and in judging quality events; with a webhook URL and its secret, notify it of
        promotions, rollbacks, pauses and quality events."""
        settings = self._settings
        metrics = RolloutMetrics(registry)
        if settings.rollout_webhook_url and webhook_secret is not None:
            outcomes = metrics.webhooks
            retries = metrics.webhook_retries
            self.webhook = WebhookNotifier(
                settings.rollout_webhook_url, webhook_secret,
                timeout_seconds=settings.rollout_webhook_timeout_seconds,
                attempts=settings.rollout_webhook_attempts,
                backoff_seconds=settings.rollout_webhook_backoff_seconds,
                max_backoff_seconds=settings.rollout_webhook_max_backoff_seconds,
                on_result=lambda event, outcome: outcomes.labels(event, outcome).inc(),
                on_retry=lambda event: retries.labels(event).inc(),
            )  # fmt: skip
        notify = None if self.webhook is None else self.webhook.notify
        limits = QualityEventLimits.from_settings(settings)
        quality_events = QualityEvents(self.client, self._replica, limits, notify)
        self.rollouts = RolloutController(
            self.client, self._replica, metrics, tick_seconds=settings.rollout_tick_seconds,
            lease_seconds=settings.rollout_lease_seconds, notify=notify,
            instance=self.watcher.heartbeat.instance, quality_events=quality_events,
        )  # fmt: skip

    def claim_replica_id(self) -> None:
        """Refuse to start (ReplicaIdInUse, this closed) under an id another live gateway
        heartbeats with, before anything is served or written under it."""
        try:
            claim_replica_id(self.client, self.watcher.heartbeat)
        except ReplicaIdInUse:
            self.close()
            raise

    def start(self) -> None:
        """The webhook, the rollout controller, then the watcher, which fills the routes."""
        if self.webhook is not None:
            self.webhook.start()
        if self.rollouts is not None:
            self.rollouts.start()
        self.watcher.start()

    def stop(self, budget: ShutdownBudget) -> None:
        """Within `budget`: the controller first (it hands its lease over), then the webhook
        (its last notifications go out), then the watcher."""
        webhook, watcher = self.webhook, self.watcher
        if self.rollouts is not None:
            budget.run("rollouts", self.rollouts.stop)
        if webhook is not None:
            budget.run("webhook", lambda: webhook.stop(budget.left()))
        budget.run("rules", lambda: watcher.stop(budget.left()))

    def close(self) -> None:
        """Close the client and remove a temporary artifact cache; nothing uses them now."""
        self.client.close()
        if self._temporary_cache is not None:
            self._temporary_cache.cleanup()

    def _artifact_cache(self) -> Path:
        """Where uploaded artifacts are kept: the data directory, else a private temporary
        one removed at close."""
        if self._settings.data_dir is not None:
            cache = self._settings.data_dir / "artifacts"
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            return cache
        self._temporary_cache = tempfile.TemporaryDirectory(prefix="onnxgate-artifacts-")
        return Path(self._temporary_cache.name)

    def _import_models(self) -> None:
        """Register --models DIR in the registry and give its models default rules."""
        assert self._settings.models is not None
        self.client.import_repository(self._settings.models, actor=self._replica)
        self.client.ensure_default_rules(actor=self._replica)

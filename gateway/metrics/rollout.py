"""Prometheus metrics of the rollout controller. Only the replica holding the lease decides,
so only it exports a model's rollout gauges (max over replicas reads them). Among worker
processes the leader's values are the most recent: it exports them every tick."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["RolloutMetrics"]


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "onnxgate_rollout_leader",
            "1 while this gateway's rollout controller holds the leader lease.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.step = Gauge(
            "onnxgate_rollout_step",
            "Step of each model's rollout (1 = first; 0 while shadowing; after promotion the"
            " number of steps), exported by the leader.",
            ["model", "candidate"], registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.candidate_weight = Gauge(
            "onnxgate_rollout_candidate_weight",
            "Percent of traffic the rollout gives its candidate (0 shadowing or rolled back).",
            ["model", "candidate"], registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.checks = Counter(
            "onnxgate_rollout_checks",
            "Rollout checks judged, by check and result: pass, fail, insufficient, skipped.",
            ["model", "check", "result"], registry=registry,
        )  # fmt: skip
        self.decisions = Counter(
            "onnxgate_rollout_decisions",
            "Rollout decisions: advance, hold, promote, rollback, pause.",
            ["model", "decision"], registry=registry,
        )  # fmt: skip
        self.last_decision = Gauge(
            "onnxgate_rollout_last_decision_timestamp_seconds",
            "When the leader last took each decision for a model (Unix time).",
            ["model", "decision"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.webhooks = Counter(
            "onnxgate_rollout_webhooks",
            "Webhook notifications by event and outcome: delivered, failed (given up after"
            " the attempts), dropped (queue full, or stopping).",
            ["event", "outcome"], registry=registry,
        )  # fmt: skip
        self.webhook_retries = Counter(
            "onnxgate_rollout_webhook_retries",
            "Webhook tries after an event's first (the receiver was down, slow or answered"
            " 429/5xx).",
            ["event"], registry=registry,
        )  # fmt: skip

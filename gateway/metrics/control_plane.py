"""The metric families of the gateway's background work against Redis: the registry it
follows, the rules it applies, and the windowed state it writes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ControlPlaneMetrics"]


class ControlPlaneMetrics:
    """Registry reachability and losses, the replica id, the rules served and refused, and
    the statistics and sketch writes; each gauge says how workers' values combine."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.redis_connected = Gauge(
            "onnxgate_redis_connected",
            "1 while the registry answers, 0 while the last good rules serve without it.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        # Redis answers, but without what was served (FLUSHALL, deleted or expired keys): the
        # last good rules keep serving and readiness stays; these say so. Workers read the
        # same Redis: any one seeing the loss reports it.
        self.registry_missing = Gauge(
            "onnxgate_registry_missing",
            "1 while the model is served from a rule, or a version, the registry no longer"
            " has (its last good rule keeps serving), else 0.",
            ["model"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.registry_epoch_missing = Gauge(
            "onnxgate_registry_epoch_missing",
            "1 while the registry's epoch, seen before, is gone: the namespace was flushed or"
            " deleted, or Redis restarted without persistence; 0 once it is written again.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.registry_epoch_rewinds = Counter(
            "onnxgate_registry_epoch_rewinds",
            "Reads of the registry's epoch lower than the read before: the namespace was"
            " wiped (then also onnxgate_registry_epoch_missing), or an older copy of it took"
            " its place (restored, or a replica that missed writes took over); its rules are"
            " followed.",
            registry=registry,
        )  # fmt: skip
        self.replica_id_conflict = Gauge(
            "onnxgate_replica_id_conflict",
            "1 while another gateway process heartbeats under this gateway's replica id too.",
            registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip
        self.route_revision = Gauge(
            "onnxgate_route_revision", "Revision of the rule serving each model.", ["model"],
            registry=registry, multiprocess_mode="livemin",  # the worker furthest behind
        )  # fmt: skip
        self.route_weight = Gauge(
            "onnxgate_route_weight", "Weight of each version in the serving rule.",
            ["model", "version"], registry=registry, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.route_applied_timestamp = Gauge(
            "onnxgate_route_applied_timestamp_seconds",
            "When the serving rule of each model became active (Unix time).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",  # when the last worker applied it
        )

        self.rules_rejected = Counter(
            "onnxgate_rules_rejected",
            "Rule documents not applied, each counted once: reason invalid (the document is"
            " malformed) or not_applied (a version it names did not load); the last good rule"
            " keeps serving.",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.windows_given_up = Counter(
            "onnxgate_windows_given_up",
            "Statistics or sketch windows dropped unwritten after Redis was away for an hour"
            " of windows, by what: statistics or sketches.",
            ["what"], registry=registry,
        )  # fmt: skip
        self.flush_failures = Counter(
            "onnxgate_flush_failures",
            "Writes of windowed state to Redis that failed (retried next interval), by what:"
            " statistics, sketches or predictions.",
            ["what"],
            registry=registry,
        )

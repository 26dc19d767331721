"""What one simulated gateway does and how often: the workload (models, request rate, canary
share) and the cadence of every background task, taken from the gateway's own Settings so the
simulation follows its defaults (and any override given with --setting)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.quality.tasks import CONFIG_REFRESH_SECONDS, JOINER_LEASE_SECONDS
from gateway.settings import Settings, env_variable

__all__ = ["FEATURES", "TASKS", "VERSIONS", "Cadence", "Workload", "model_names", "settings_from"]

# Input features of the models, in turn (each also sketches its 2 class scores as outputs).
FEATURES = (4, 8, 16, 24, 32)
VERSIONS = ("1", "2")
TASKS = ("epoch-poll", "heartbeat", "statistics", "sketches", "prediction-log", "label-join",
         "rollout-controller", "quality-configs", "quality-gauges", "drift-monitor")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Workload:
    """Per simulated gateway: `models` served, each with a baseline (version 1) and a canary
    (version 2) taking `canary_share` of its requests; `requests_per_second` over all models,
    every one logged (the prediction log's cap, 100 a second per model, is above it) and
    sketched. With `drift_references`, each version has a reference profile, so the drift
    monitor reads every replica's sketches of the last 15 minutes."""

    models: int = 5
    requests_per_second: float = 50.0
    canary_share: float = 0.1
    drift_references: bool = False


@dataclass(frozen=True, slots=True)
class Cadence:
    """Seconds between runs of each background task, and the TTLs its writes carry."""

    rules_poll: float
    heartbeat: float
    stats_flush: float
    drift_flush: float
    prediction_flush: float
    rollout_tick: float
    rollout_lease: float
    label_join: float
    label_lease: float
    quality_configs: float
    quality_gauges: float
    quality_gauges_window: float
    drift_monitor: float
    drift_monitor_window: float
    stats_retention: int
    drift_minute_ttl: int
    drift_hour_ttl: int
    prediction_ttl: int
    prediction_settle: float

    @classmethod
    def of(cls, settings: Settings) -> Cadence:
        return cls(
            rules_poll=settings.rules_poll_seconds,
            heartbeat=settings.heartbeat_seconds,
            stats_flush=settings.stats_flush_seconds,
            drift_flush=settings.drift_flush_seconds,
            prediction_flush=settings.prediction_flush_seconds,
            rollout_tick=settings.rollout_tick_seconds,
            rollout_lease=settings.rollout_lease_seconds,
            label_join=settings.label_join_seconds,
            label_lease=JOINER_LEASE_SECONDS,
            quality_configs=CONFIG_REFRESH_SECONDS,
            quality_gauges=settings.quality_gauges_seconds,
            quality_gauges_window=settings.quality_gauges_window_seconds,
            drift_monitor=settings.drift_monitor_seconds,
            drift_monitor_window=settings.drift_monitor_window_seconds,
            stats_retention=settings.stats_retention_seconds,
            drift_minute_ttl=settings.drift_minute_ttl_seconds,
            drift_hour_ttl=settings.drift_hour_ttl_seconds,
            prediction_ttl=settings.prediction_ttl_seconds,
            # as gateway/quality/tasks.py gives the label join
            prediction_settle=settings.prediction_hold_seconds
            + settings.prediction_flush_seconds
            + 1.0,
        )

    def periods(self) -> Mapping[str, float]:
        """Each scheduled task's period, by the name the reports use."""
        return {
            "epoch-poll": self.rules_poll,
            "heartbeat": self.heartbeat,
            "statistics": self.stats_flush,
            "sketches": self.drift_flush,
            "prediction-log": self.prediction_flush,
            "label-join": self.label_join,
            "rollout-controller": self.rollout_tick,
            "quality-configs": self.quality_configs,
            "quality-gauges": self.quality_gauges,
            "drift-monitor": self.drift_monitor,
        }


def model_names(count: int) -> list[str]:
    return [f"model{i}" for i in range(count)]


def settings_from(overrides: Sequence[str]) -> Settings:
    """The gateway's default Settings with `NAME=VALUE` overrides (NAME a Settings field, as
    docs/configuration.md lists them), checked as the gateway checks its environment:
    SettingsError names a bad one, ValueError one without `=`."""
    env: dict[str, str] = {}
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--setting: expected NAME=VALUE, got {item!r}")
        env[env_variable(name.strip().replace("-", "_"))] = value.strip()
    return Settings.from_env(env)

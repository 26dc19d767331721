"""The gateway's model-quality work, each part on a thread of its own, off the request path:
the quality configs followed, the prediction log written, labels joined under a lease, the
quality gauges refreshed."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.process.shutdown import ShutdownBudget
from gateway.quality.configs import QualityConfigs
from gateway.quality.gauges import QualityGauges
from gateway.quality.joining import LabelJoining
from gateway.quality.log_writer import PredictionLogWriter
from gateway.quality.recorder import PredictionRecorder
from gateway.settings import Settings
from gateway.telemetry.periodic import Periodic
from registry_client.client import RegistryClient

ServedModels = Callable[[], Iterable[str]]

__all__ = ["CONFIG_REFRESH_SECONDS", "QualityTasks"]

# A model's new quality config is followed within this long (its predictions logged from then).
CONFIG_REFRESH_SECONDS = 5.0
# The joiner lease's TTL: another gateway joins this long after the joining one dies.
JOINER_LEASE_SECONDS = 10.0


class QualityTasks:
    """With a registry: the configs and the gauges of the served models; with a prediction
    buffer as well, the recorder the
    request path appends to and its writer; in a gateway that drives rollouts (the one whose
    Redis user may write more than its own telemetry), the label join."""

    def __init__(
        self, settings: Settings, metrics: GatewayMetrics, client: RegistryClient | None,
        replica: str, served_models: ServedModels,
    ) -> None:  # fmt: skip
        self.recorder: PredictionRecorder | None = None
        self.configs: QualityConfigs | None = None
        self.writer: PredictionLogWriter | None = None
        self.joining: LabelJoining | None = None
        self.gauges: QualityGauges | None = None
        self._tasks: list[tuple[str, Periodic]] = []
        if client is None:
            return
        if settings.prediction_buffer > 0:
            self.recorder = PredictionRecorder(
                metrics.predictions_dropped, metrics.unknown_segments,
                settings.prediction_buffer,
                settings.prediction_log_max_per_second / settings.workers,
                settings.prediction_hold_seconds,
            )  # fmt: skip
            self.writer = PredictionLogWriter(
                self.recorder, client.predictions, metrics, settings.prediction_ttl_seconds,
                settings.prediction_flush_seconds,
            )  # fmt: skip
        self.configs = QualityConfigs(client, self.recorder)
        configs = Periodic("quality-configs", CONFIG_REFRESH_SECONDS, self.configs.refresh)
        self.gauges = QualityGauges(served_models, self.configs.current, client, metrics,
                                    settings.quality_gauges_window_seconds)  # fmt: skip
        gauges = Periodic("quality-gauges", settings.quality_gauges_seconds, self.gauges.refresh)
        self._tasks = [("quality-configs", configs), ("quality-gauges", gauges)]
        if not settings.rollout_controller:
            return
        # A label waits until a prediction made just before it has surely been written.
        settle = settings.prediction_hold_seconds + settings.prediction_flush_seconds + 1.0
        caught_up = self.writer.caught_up if self.writer is not None else lambda: True
        self.joining = LabelJoining(client, replica, metrics, self.configs.current,
                                    JOINER_LEASE_SECONDS, settle, caught_up)  # fmt: skip
        join = Periodic("label-join", settings.label_join_seconds, self.joining.tick)
        self._tasks.append(("label-join", join))

    def start(self) -> None:
        if self.configs is not None:
            self.configs.refresh()  # before the first request of a logged model, if it can
        if self.writer is not None:
            self.writer.start()
        for _, task in self._tasks:
            task.start()

    def stop(self, budget: ShutdownBudget) -> None:
        """After the drain and the shadows: the last predictions are written."""
        for name, task in self._tasks:
            budget.run(name, task.stop)
        if self.joining is not None:
            budget.run("label-join-lease", self.joining.stop)
        if self.writer is not None:
            budget.run("prediction-log", self.writer.stop)

"""The live quality gauges: each served model's quality and fairness figures over a window,
read back from what every joiner joined (so every replica exports the same figures), set on
onnxgate_quality and onnxgate_fairness_gap; series no longer read are retired."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import redis
from prometheus_client import Gauge

from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.metrics.quality import QUALITY_METRICS
from registry_client.client import RegistryClient
from registry_client.errors import Unreachable
from registry_client.quality.metrics import metrics_of
from registry_client.quality.report import QualityRange, minutes_of, read_range
from registry_client.quality.state import new_state
from registry_client.quality.task import TASKS, QualityConfig

__all__ = ["BINARY_GAPS", "QualityGauges"]

_log = logging.getLogger(__name__)

# A binary model's fairness figures exported per segment dimension (the full report's).
BINARY_GAPS = (
    "demographic_parity_difference",
    "equal_opportunity_difference",
    "equalized_odds_difference",
)
# The exported figures each task defines: those its metrics compute, and the label figures.
_TASK_METRICS = {
    task: tuple(name for name in QUALITY_METRICS if name in metrics_of(new_state(task)))
    for task in TASKS
}

Series = tuple[str, ...]  # one series' label values


class QualityGauges:
    """Sets the quality gauges of every served model that has a quality config; refresh() is
    called from one thread at a time (a Periodic).

    When Redis does not answer (or refuses a read), a refresh leaves every series as it was
    and logs once per outage, and once when reads succeed again. The figures cover a window
    of hours to days, so the last ones read still say what that window said a few minutes
    later; retiring them would turn dashboards and alerts on quality into "no data" on every
    Redis blip, and a zero would be a real (and alarming) figure. A stale figure is flagged
    by onnxgate_redis_connected at 0 beside it.
    """

    def __init__(
        self,
        models: Callable[[], Iterable[str]],
        configs: Callable[[], Mapping[str, QualityConfig]],
        client: RegistryClient,
        metrics: GatewayMetrics,
        window_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._models = models  # the names of the models this gateway serves, now
        self._configs = configs  # model -> its quality config, as last read (QualityConfigs)
        self._client = client
        self._metrics = metrics
        self._window = window_seconds
        self._clock = clock
        self._exported: dict[str, dict[str, set[Series]]] = {"quality": {}, "fairness": {}}
        self._failing = False

    def refresh(self) -> None:
        """Read the figures over the window ending now of each served model that has a
        quality config, and export them; retire the series of models, versions and figures
        no longer read."""
        configs = self._configs()
        served = {model for model in self._models() if model in configs}
        for model in {m for e in self._exported.values() for m in e} - served:
            self._retire(model)
        try:
            for model in sorted(served):
                self._refresh_model(model, configs[model])
        except (Unreachable, redis.RedisError) as exc:  # unreachable, or refused (ACL)
            if not self._failing:
                _log.warning(
                    "quality gauges not refreshed; the last figures stay",
                    extra={"reason": str(exc)},
                )
            self._failing = True
            return
        if self._failing:
            _log.info("quality gauges refreshed again")
        self._failing = False

    def _refresh_model(self, model: str, config: QualityConfig) -> None:
        first, last = minutes_of(self._window, self._clock())
        found = read_range(self._client.quality, self._client.predictions, model, first, last)
        self._export("quality", self._metrics.quality, model, _quality(model, config, found))
        self._export("fairness", self._metrics.fairness_gap, model, _gaps(model, config, found))

    def _export(self, family: str, gauge: Gauge, model: str, values: dict[Series, float]) -> None:
        exported = self._exported[family]
        for labels in exported.get(model, set()) - values.keys():
            self._metrics.retire(gauge, labels)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        if values:
            exported[model] = set(values)
        else:
            exported.pop(model, None)

    def _retire(self, model: str) -> None:
        self._export("quality", self._metrics.quality, model, {})
        self._export("fairness", self._metrics.fairness_gap, model, {})


def _quality(model: str, config: QualityConfig, found: QualityRange) -> dict[Series, float]:
    """(model, version, role, metric) -> value for every defined figure of every (version,
    role) with labelled rows or logged predictions in the window."""
    values: dict[Series, float] = {}
    for version, role in found.pairs():
        quality = found.quality(version, role)
        figures = {name: quality.metrics.get(name) for name in _TASK_METRICS[config.task]}
        figures |= {
            "labelled_rows": quality.labelled,
            "label_coverage": quality.coverage,
            "label_delay_p50_seconds": quality.delays.get("p50"),
        }
        for name, value in figures.items():
            if value is not None:  # undefined (an AUC with one class): no series, not a 0
                values[model, version, role, name] = value
    return values


def _gaps(model: str, config: QualityConfig, found: QualityRange) -> dict[Series, float]:
    """(model, version, segment dimension, metric) -> gap for each configured dimension, each
    version read in its fairness role (primary where it has rows, else shadow)."""
    values: dict[Series, float] = {}
    for version in sorted({v for v, _ in found.pairs()}):
        for dimension in config.segments:
            role = found.fairness_role(version, dimension)
            if role is None:
                continue
            if config.task == "binary":
                report = found.fairness(version, role, dimension)
                gaps = {} if report is None else {n: getattr(report, n) for n in BINARY_GAPS}
            else:
                try:
                    gap = found.fairness_gap(version, role, dimension)
                except ValueError:  # states of two tasks: the task changed within the window
                    gap = None
                gaps = {} if gap is None else {gap[0]: gap[1]}
            for name, value in gaps.items():
                if value is not None:
                    values[model, version, dimension, name] = value
    return values

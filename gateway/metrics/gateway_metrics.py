"""Every Prometheus metric of the gateway, defined once on a registry passed in.

Each concern's families are defined in a module of their own (versions, control_plane,
shadow_drift, transport, quality); GatewayMetrics holds them all, so one object is passed around.

Under `--workers N` each worker writes its values to prometheus_client's multiprocess files
(PROMETHEUS_MULTIPROC_DIR, set by the supervisor before this module is imported) and the
supervisor serves their aggregate; each gauge says how workers' values combine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Gauge

from gateway.metrics.control_plane import ControlPlaneMetrics
from gateway.metrics.process import register_process_metrics
from gateway.metrics.quality import QualityMetrics
from gateway.metrics.shadow_drift import DriftMetrics, ShadowMetrics
from gateway.metrics.transport import TransportMetrics
from gateway.metrics.versions import PRIMARY, UNKNOWN_LABEL, VersionFamilies, VersionMetrics
from gateway.telemetry.request_stats import RequestStats

__all__ = ["GatewayMetrics"]


class GatewayMetrics(
    VersionFamilies, ControlPlaneMetrics, ShadowMetrics, DriftMetrics, TransportMetrics,
    QualityMetrics,
):  # fmt: skip
    """Metric families; label values are bounded: served model/version names, role, code."""

    def __init__(
        self,
        registry: CollectorRegistry,
        request_stats: RequestStats | None = None,
        multiprocess: bool = False,
    ) -> None:
        self.registry = registry
        self.request_stats = request_stats
        self.multiprocess = multiprocess
        # Multiprocess mode cannot read values at scrape time: these copy them instead and
        # the composition root runs them periodically.
        self.samplers: list[Callable[[], None]] = []
        self._weighted: dict[str, set[str]] = {}  # model -> versions with a weight series
        # In this order: the exposition lists the families as they were registered.
        VersionFamilies.__init__(self, registry)
        ControlPlaneMetrics.__init__(self, registry)
        ShadowMetrics.__init__(self, registry)
        DriftMetrics.__init__(self, registry)
        TransportMetrics.__init__(self, registry)
        QualityMetrics.__init__(self, registry)
        if not multiprocess:  # a supervisor exports its workers' (process.py)
            register_process_metrics(registry)

    def retire(self, gauge: Gauge, labels: Sequence[str]) -> None:
        """Stop exporting one series. Multiprocess files cannot drop a series, so there it
        becomes NaN: no value, rather than a stale one."""
        if self.multiprocess:
            gauge.labels(*labels).set(math.nan)
        else:
            gauge.remove(*labels)

    def set_route_weights(self, model: str, weights: Mapping[str, float]) -> None:
        """Export the weights of `model`'s serving rule. A version that left the rule loses
        its series: kept at its old weight, it would skew every share computed from them."""
        for version in self._weighted.pop(model, set()) - weights.keys():
            self.retire(self.route_weight, (model, version))
        for version, weight in weights.items():
            self.route_weight.labels(model, version).set(weight)
        self._weighted[model] = set(weights)

    def for_version(self, model: str, version: str, role: str = PRIMARY) -> VersionMetrics:
        """Resolve the label children of one version once, at load time."""
        return VersionMetrics(self, model, version, role, self.request_stats)

    def count_unrouted(self, model: str, code: str) -> None:
        """Count a request that failed before a version was chosen."""
        self.requests.labels(model, UNKNOWN_LABEL, PRIMARY, code).inc()

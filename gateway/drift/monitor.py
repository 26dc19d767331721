"""Keeps each served version's reference bins in the recorder and its drift gauges fresh, from
the merged state of every replica in Redis. Runs in the background, never per request."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from prometheus_client import Gauge

from gateway.drift.recorder import DriftRecorder
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.store import VersionStore
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.statistics import ALERT, OK, WARN, feature_drift
from registry_client.errors import NotFound, RegistryError

__all__ = ["DriftMonitor"]

_log = logging.getLogger(__name__)
_STATE = {OK: 0, WARN: 1, ALERT: 2}  # onnxgate_drift_state's values
# fold() runs several times a second; a version whose registry entry cannot be read is tried
# again this much later, not at every fold.
CONFIGURE_RETRY_SECONDS = 1.0


class DriftMonitor:
    def __init__(
        self,
        client: RegistryClient,
        recorder: DriftRecorder,
        versions: VersionStore,
        metrics: GatewayMetrics,
        window_seconds: float,
        minute_ttl: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._recorder = recorder
        self._versions = versions
        self._metrics = metrics
        self._window = window_seconds
        self._minute_ttl = minute_ttl
        self._exported: set[tuple[Gauge, tuple[str, ...]]] = set()  # series set last time
        self._configured: set[tuple[str, str]] = set()
        # Versions whose registry entry could not be read, warned about once until it can: a
        # registry that lost them (flushed, restarted empty) would else be logged every fold.
        self._unreadable: set[tuple[str, str]] = set()
        self._clock = clock
        self._retry_at: dict[tuple[str, str], float] = {}

    def fold(self) -> None:
        """Configure versions that became READY since the last call, then fold: a new
        version's first rows are named and binned as its registry entry says."""
        for model, by_version in self._versions.ready_versions().items():
            for version in by_version:
                key = (model, version)
                if key not in self._configured and self._retry_at.get(key, 0.0) <= self._clock():
                    try:
                        self._configure(model, version)
                    except RegistryError as exc:  # tried again a little later
                        self._retry_at[key] = self._clock() + CONFIGURE_RETRY_SECONDS
                        self._warn_once("drift not configured", model, version, exc)
        self._recorder.fold()

    def _configure(self, model: str, version: str) -> dict[str, FeatureReference]:
        """Feature names and reference bins of a version, into the recorder."""
        raw = self._client.show_version(model, version).get("feature_names") or "{}"
        self._recorder.set_feature_names(model, version, json.loads(raw))
        try:
            references = self._client.drift.get_reference(model, version)
        except NotFound:
            references = {}
        self._recorder.set_bins(model, version, {n: r.bins for n, r in references.items()})
        self._configured.add((model, version))
        self._unreadable.discard((model, version))
        self._retry_at.pop((model, version), None)
        return references

    def _warn_once(self, message: str, model: str, version: str, exc: RegistryError) -> None:
        if (model, version) not in self._unreadable:
            self._unreadable.add((model, version))
            _log.warning(message, extra={"model": model, "version": version,
                                         "reason": str(exc)})  # fmt: skip

    def refresh(self) -> None:
        """Reload reference bins and recompute every READY version's drift gauges; retire the
        series of versions, features and figures no longer computed."""
        exported: set[tuple[Gauge, tuple[str, ...]]] = set()
        for model, by_version in self._versions.ready_versions().items():
            for version in by_version:
                try:
                    exported |= self._refresh_version(model, version)
                except RegistryError as exc:  # the last figures stay until it can be read
                    self._warn_once("drift not refreshed", model, version, exc)
                    exported |= {s for s in self._exported if s[1][:2] == (model, version)}
        for gauge, labels in self._exported - exported:
            self._metrics.retire(gauge, labels)
        self._exported = exported

    def _refresh_version(self, model: str, version: str) -> set[tuple[Gauge, tuple[str, ...]]]:
        """Set the version's gauges; returns the series set."""
        references = self._configure(model, version)
        if not references:
            return set()
        merged = self._client.drift.read(model, version, self._window,
                                         minute_ttl=self._minute_ttl)  # fmt: skip
        metrics = self._metrics
        values: list[tuple[Gauge, tuple[str, ...], float | None]] = []
        judged = []
        for feature, sketch in merged.features.items():
            reference = references.get(feature)
            if reference is None:
                continue
            drift = feature_drift(feature, sketch, reference)
            labels: tuple[str, ...] = (model, version, feature)
            missing = sketch.missing / sketch.count if sketch.count else None
            state = _STATE.get(drift.verdict)  # None: too few values for a verdict
            values += [(metrics.drift_psi, labels, drift.psi), (metrics.drift_ks, labels, drift.ks),
                       (metrics.drift_state, labels, state),
                       (metrics.drift_missing_rate, labels, missing),
                       (metrics.drift_out_of_range, labels, drift.out_of_range)]  # fmt: skip
            if state is not None:
                judged.append(state)
        share = sum(1 for state in judged if state > 0) / len(judged) if judged else None
        values.append((metrics.drift_dataset_share, (model, version), share))
        exported = set()
        for gauge, labels, value in values:
            if value is not None:
                gauge.labels(*labels).set(value)
                exported.add((gauge, labels))
        return exported

"""Drift per version for the model page: the last 15 minutes against the version's reference
as quantile curves, and PSI per feature over the last hour's 5-minute slices as a heat map."""

from __future__ import annotations

import time
from collections.abc import Sequence

from gateway.status.snapshot import DriftView
from registry_client.charts.heatmap import psi_heatmap
from registry_client.cli.drift import version_drift
from registry_client.cli.drift_picture import drift_picture
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.statistics import Thresholds, feature_drift
from registry_client.errors import NotFound
from registry_client.stats.window import WINDOW_SECONDS

__all__ = ["CURVE_SECONDS", "HEATMAP_SECONDS", "SLICES", "DriftReader"]

CURVE_SECONDS = 900.0  # as gatectl drift and compare default to
HEATMAP_SECONDS = 3600
SLICES = 12
_SLICE_SECONDS = HEATMAP_SECONDS // SLICES
# A slice that ended this long ago has every replica's flush in it (they flush each minute).
_SETTLED_SECONDS = 2 * WINDOW_SECONDS

_Slice = tuple[str, str, int, str]  # model, version, slice start, reference digest


class DriftReader:
    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._settled: dict[_Slice, dict[str, float | None]] = {}  # settled slices' PSI

    def read(self, model: str, versions: Sequence[str]) -> tuple[DriftView, ...]:
        now = time.time()
        views = tuple(self._view(model, version, now) for version in versions)
        # Forget what fell out of the hour (and versions no longer shown).
        oldest = int(now) - HEATMAP_SECONDS - _SLICE_SECONDS
        self._settled = {k: v for k, v in self._settled.items() if k[2] >= oldest}
        return views

    def _view(self, model: str, version: str, now: float) -> DriftView:
        try:
            references = self._client.drift.get_reference(model, version)
        except NotFound:
            return DriftView(version, note="No reference profile: gatectl reference set.")
        sketches = self._client.drift.read(model, version, CURVE_SECONDS, now=now)
        report = version_drift(
            self._client, model, version, CURVE_SECONDS, "reference", (sketches, references)
        )
        curves = drift_picture(report, sketches, references, CURVE_SECONDS)
        return DriftView(version, report, curves, self._heatmap(model, version, references, now))

    def _heatmap(
        self, model: str, version: str, references: dict[str, FeatureReference], now: float
    ) -> str:
        digest = str(hash(tuple(sorted((n, r.to_json()) for n, r in references.items()))))
        last_start = int(now) // _SLICE_SECONDS * _SLICE_SECONDS
        starts = [last_start - i * _SLICE_SECONDS for i in reversed(range(SLICES))]
        features = sorted(references)
        columns = []
        for start in starts:
            key = (model, version, start, digest)
            found = self._settled.get(key)
            if found is None:
                found = self._slice(model, version, references, start)
                if start + _SLICE_SECONDS + _SETTLED_SECONDS <= now:
                    self._settled[key] = found
            columns.append(found)
        psi = [[column.get(feature) for column in columns] for feature in features]
        title = f"PSI of {model} version {version}'s inputs per 5 minutes, last hour"
        return psi_heatmap(title, features, starts, psi, Thresholds().psi)

    def _slice(
        self, model: str, version: str, references: dict[str, FeatureReference], start: int
    ) -> dict[str, float | None]:
        """Each feature's PSI over [start, start + slice), None with too few values."""
        end = start + _SLICE_SECONDS
        merged = self._client.drift.read(model, version, _SLICE_SECONDS, now=end - 1)
        minimum = Thresholds().min_samples
        return {
            name: (found.psi if found.n >= minimum else None)
            for name, sketch in merged.features.items()
            if name in references
            for found in (feature_drift(name, sketch, references[name]),)
        }

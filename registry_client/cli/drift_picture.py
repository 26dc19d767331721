"""The sketches a drift report is computed from, and its picture: each feature's quantile
curve beside its baseline's (`gatectl drift --plot`)."""

from __future__ import annotations

from typing import Any

from registry_client.charts.figures import CurvePanel, quantile_curves
from registry_client.cli.durations import format_duration
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.store import MergedSketches

__all__ = ["drift_picture", "drift_sketches"]

_PLOT_LEVELS = [(i + 1) / 50 for i in range(49)]  # 0.02 ... 0.98: the tails are too noisy


def drift_sketches(
    client: RegistryClient, model: str, version: str, since_seconds: float, against: str
) -> tuple[MergedSketches, dict[str, FeatureReference]]:
    """The version's sketches over the window, and each feature's baseline."""
    client.show_version(model, version)
    merged = client.drift.read(model, version, since_seconds)
    if against == "reference":
        return merged, client.drift.get_reference(model, version)
    client.show_version(model, against)
    other = client.drift.read(model, against, since_seconds)
    return merged, {name: ref for name, sketch in other.features.items()
                    if (ref := FeatureReference.from_sketch(sketch)) is not None}  # fmt: skip


def drift_picture(
    report: dict[str, Any],
    merged: MergedSketches,
    baselines: dict[str, FeatureReference],
    since_seconds: float,
) -> str:
    """The report's features (computed from `merged` and `baselines`) as quantile curves,
    baseline beside live."""
    panels = []
    for feature in report["features"]:
        name = feature["feature"]
        live, baseline = merged.features[name], baselines[name]
        if live.finite == 0 or baseline.finite == 0:
            continue  # nothing but missing values: no curve
        panels.append(CurvePanel(name, feature["verdict"], _PLOT_LEVELS,
                                 baseline.kll.get_quantiles(_PLOT_LEVELS),
                                 live.kll.get_quantiles(_PLOT_LEVELS)))  # fmt: skip
    against = "reference" if report["against"] == "reference" else f"version {report['against']}"
    title = (f"Drift of {report['model']} version {report['version']} against {against},"
             f" last {format_duration(since_seconds)}: dataset {report['dataset']}")  # fmt: skip
    return quantile_curves(title, panels, against)

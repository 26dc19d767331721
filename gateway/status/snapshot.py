"""What the status worker read from the registry: immutable, swapped in whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry_client.records.rule_documents import RouteRule
from registry_client.versions.status import VersionStatus

__all__ = ["DriftView", "ModelDetail", "ModelSummary", "Overview", "QualityView"]


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """A model as the overview shows it; `error` when its records could not be read."""

    name: str
    rule: RouteRule | None = None
    statuses: tuple[VersionStatus, ...] = ()
    replicas: tuple[dict[str, Any], ...] = ()  # RegistryClient.replica_status()'s rows
    rollout: dict[str, Any] | None = None  # gatectl rollout status's view
    error: str = ""


@dataclass(frozen=True, slots=True)
class Overview:
    taken_at: float
    models: tuple[ModelSummary, ...]
    gateways: int  # live replicas with a heartbeat


@dataclass(frozen=True, slots=True)
class DriftView:
    """One version's inputs against its reference: the report, its quantile curves and the
    PSI heat map over time (SVG); `note` instead when there is nothing to draw."""

    version: str
    report: dict[str, Any] | None = None
    curves_svg: str = ""
    heatmap_svg: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class QualityView:
    """Live quality from joined labels: per version and role, and per value of each
    segment the model is reported by (gatectl accuracy's reports)."""

    task: str
    overall: dict[str, Any]
    by_segment: dict[str, dict[str, Any]] = field(default_factory=dict)
    read_at: float = 0.0
    config: str = ""  # the quality config read with it, as JSON


@dataclass(frozen=True, slots=True)
class ModelDetail:
    """What a model's page shows beyond its summary; `error` when it could not be read."""

    name: str
    comparison: dict[str, Any] | None = None  # gatectl compare's report
    latency_svg: str = ""
    drift: tuple[DriftView, ...] = ()
    quality: QualityView | None = None
    rollout_svg: str = ""
    rollout_history: tuple[dict[str, str], ...] = ()
    error: str = ""

"""Reading what a model's page shows beyond the overview: the versions compared, their latency
histograms, drift per version, live quality per segment and the rollout's timeline."""

from __future__ import annotations

import logging
from typing import Any

from gateway.status.drift_views import DriftReader
from gateway.status.quality_reader import QualityReader
from gateway.status.snapshot import ModelDetail
from registry_client.charts.figures import latency_histograms
from registry_client.cli.rollout_timeline import timeline_picture
from registry_client.client import RegistryClient
from registry_client.errors import RegistryError, Unreachable
from registry_client.reports.comparison import compare_versions
from registry_client.rollout.store import RolloutStore

__all__ = ["DetailReader"]

_log = logging.getLogger("gateway.status")

_HISTORY = 200  # rollout audit entries read for the timeline table


class DetailReader:
    """Reads model pages' data; keeps what never changes again between readings (the drift
    heat map's past slices) and what changes slowly for a minute (live quality)."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._drift = DriftReader(client)
        self._quality = QualityReader(client)

    def read(self, model: str) -> ModelDetail:
        """The model's detail; Unreachable when Redis does not answer, a detail with `error`
        when a record is unreadable."""
        client = self._client
        history: tuple[dict[str, str], ...]
        try:
            comparison = compare_versions(client, model)  # since the current rule revision
            drift = self._drift.read(model, _serving(comparison))
            quality = self._quality.read(model)
            state = RolloutStore(client).get(model)
            rollout_svg, history = "", ()
            if state is not None:
                rollout_svg = timeline_picture(client, state)
                history = tuple(dict(e) for e in RolloutStore(client).history(model, _HISTORY))
        except Unreachable:
            raise
        except (RegistryError, ValueError) as exc:
            _log.warning("model page unreadable", extra={"model": model, "reason": str(exc)})
            return ModelDetail(model, error=str(exc))
        buckets = {
            f"{row['version']} ({row['role']})": {
                int(k): v for k, v in row["latency_buckets"].items()
            }
            for row in comparison["versions"]
            if row["latency_buckets"]
        }
        title = f"Latency of {model}'s versions under rule revision {comparison['rule_revision']}"
        latency = latency_histograms(title, buckets)
        return ModelDetail(model, comparison, latency, drift, quality, rollout_svg, history)


def _serving(comparison: dict[str, Any]) -> list[str]:
    """The versions with traffic or a place in the rule, lowest first, each once."""
    return list(dict.fromkeys(row["version"] for row in comparison["versions"]))

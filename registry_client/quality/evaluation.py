"""A version's evaluation before deployment: its metrics on a labelled dataset, overall and per
segment value, with the fairness figures of each segment dimension. Stored on the version
(`gatectl evaluate`) and read by rollouts that require one and by quality events."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from registry_client.errors import Rejected
from registry_client.quality.metrics import Metrics

__all__ = ["FORMAT", "Evaluation"]

FORMAT = 1


def _metrics(doc: object, where: str) -> Metrics:
    if not isinstance(doc, dict):
        raise Rejected(f"{where}: expected an object of metrics")
    out: Metrics = {}
    for name, value in doc.items():
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise Rejected(f"{where}.{name}: expected a finite number or null, got {value!r}")
        out[str(name)] = None if value is None else float(value)
    return out


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What `gatectl evaluate` measured. `gaps` holds, per segment dimension, the one figure a
    rollout gate compares (registry_client.quality.fairness.fairness_gap): metric, gap and
    worst value; `fairness` the full report of a binary model's dimensions."""

    time: float  # Unix seconds
    data_sha256: str
    labels_sha256: str
    segments_sha256: str | None
    rows: int
    task: str
    metrics: Metrics
    segments: Mapping[str, Mapping[str, Metrics]] = field(default_factory=dict)
    fairness: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gaps: Mapping[str, tuple[str, float, str]] = field(default_factory=dict)

    def worst_gap(self) -> tuple[str, str, float, str] | None:
        """(dimension, metric, gap, worst value) of the dimension with the largest gap."""
        found = [(gap, dim, metric, worst) for dim, (metric, gap, worst) in self.gaps.items()]
        if not found:
            return None
        gap, dimension, metric, worst = max(found)
        return dimension, metric, gap, worst

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "time": self.time, "data_sha256": self.data_sha256,
            "labels_sha256": self.labels_sha256, "segments_sha256": self.segments_sha256,
            "rows": self.rows, "task": self.task, "metrics": self.metrics,
            "segments": self.segments, "fairness": self.fairness,
            "gaps": {d: list(g) for d, g in self.gaps.items()},
        }, sort_keys=True)  # fmt: skip

    @classmethod
    def from_json(cls, text: str | bytes) -> Evaluation:
        """Rejected naming the field that cannot be read."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Rejected(f"evaluation: not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise Rejected(f"evaluation.format: expected {FORMAT}")
        try:
            gaps = {
                str(d): (str(g[0]), float(g[1]), str(g[2])) for d, g in dict(doc["gaps"]).items()
            }
            segments = {
                str(d): {
                    str(v): _metrics(m, f"evaluation.segments.{d}.{v}") for v, m in values.items()
                }
                for d, values in dict(doc["segments"]).items()
            }
            return cls(
                time=float(doc["time"]),
                data_sha256=str(doc["data_sha256"]),
                labels_sha256=str(doc["labels_sha256"]),
                segments_sha256=None
                if doc["segments_sha256"] is None
                else str(doc["segments_sha256"]),
                rows=int(doc["rows"]),
                task=str(doc["task"]),
                metrics=_metrics(doc["metrics"], "evaluation.metrics"),
                segments=segments,
                fairness={str(d): dict(r) for d, r in dict(doc["fairness"]).items()},
                gaps=gaps,
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            if isinstance(exc, Rejected):
                raise
            raise Rejected(f"evaluation: a field is missing or malformed: {exc!r}") from exc

"""Quality read back for people and gates: the merged states of a time range sliced by version,
role and segment, turned into metrics, fairness figures and label coverage.

Every surface (gatectl accuracy, fairness and compare, the gateway's quality gauges, rollout
gates and quality events) reads through here, so they agree on what a figure means.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from registry_client.quality.fairness import FairnessReport, fairness_gap, fairness_report
from registry_client.quality.metrics import Metrics, delay_quantiles, merged, metrics_of
from registry_client.quality.prediction_store import PredictionStore
from registry_client.quality.predictions import PRIMARY, SHADOW
from registry_client.quality.state import BinaryState, QualityState, StateKey
from registry_client.quality.store import QualityStore

__all__ = [
    "OVERALL",
    "QualityRange",
    "VersionQuality",
    "minutes_of",
    "read_range",
]

OVERALL = ("", "")  # the (dimension, value) of a version's state over every segment


def minutes_of(since_seconds: float, now: float) -> tuple[int, int]:
    """The minutes (since the epoch) from `since_seconds` before `now` to now, inclusive."""
    last = int(now // 60)
    return int((now - since_seconds) // 60), last


@dataclass(frozen=True, slots=True)
class VersionQuality:
    """One (version, role)'s joined rows over a range: metrics over all of them, label delay,
    and the coverage (labelled rows / predictions logged; None when none were logged)."""

    version: str
    role: str
    metrics: Metrics
    delays: Metrics
    labelled: float
    logged: int
    coverage: float | None


@dataclass(frozen=True, slots=True)
class QualityRange:
    """The merged quality states of a model over a range of minutes, and the predictions
    logged per (version, role) over the same minutes."""

    states: Mapping[StateKey, QualityState]
    logged: Mapping[tuple[str, str], int]
    writers: frozenset[str]

    def pairs(self) -> list[tuple[str, str]]:
        """Every (version, role) with labelled rows or logged predictions, sorted."""
        found = {(v, r) for v, r, _, _ in self.states} | set(self.logged)
        return sorted(found)

    def state(self, version: str, role: str, dimension: str = "", value: str = "") -> (
        QualityState | None
    ):  # fmt: skip
        return self.states.get((version, role, dimension, value))

    def segments(self, version: str, role: str, dimension: str) -> dict[str, QualityState]:
        """The state of each value of one segment dimension."""
        return {
            value: state
            for (v, r, d, value), state in self.states.items()
            if v == version and r == role and d == dimension
        }

    def quality(self, version: str, role: str) -> VersionQuality:
        state = self.state(version, role)
        logged = self.logged.get((version, role), 0)
        labelled = 0.0 if state is None else state.n
        return VersionQuality(
            version=version,
            role=role,
            metrics={} if state is None else metrics_of(state),
            delays={} if state is None else delay_quantiles(state),
            labelled=labelled,
            logged=logged,
            coverage=min(labelled / logged, 1.0) if logged else None,
        )

    def segment_metrics(self, version: str, role: str, dimension: str) -> dict[str, Metrics]:
        """The metrics of each value of one segment dimension."""
        return {
            v: metrics_of(s) for v, s in sorted(self.segments(version, role, dimension).items())
        }

    def fairness_role(self, version: str, dimension: str) -> str | None:
        """The role a version's fairness over `dimension` is read in when no role is asked
        for: primary where it has rows there, else shadow (a candidate while it shadows);
        None when it has neither."""
        for role in (PRIMARY, SHADOW):
            if self.segments(version, role, dimension):
                return role
        return None

    def fairness(
        self, version: str, role: str, dimension: str, min_rows: float = 1
    ) -> FairnessReport | None:
        """The full fairness report of a binary model's dimension (None for other tasks)."""
        found = self.segments(version, role, dimension)
        binary = {v: s for v, s in found.items() if isinstance(s, BinaryState)}
        if not binary or len(binary) != len(found):
            return None
        return fairness_report(binary, min_rows)

    def fairness_gap(
        self, version: str, role: str, dimension: str, min_rows: float = 1
    ) -> tuple[str, float, str] | None:
        """(metric, gap, worst value) of one dimension, the figure gates compare."""
        return fairness_gap(self.segments(version, role, dimension), min_rows)

    def combined(self, version: str, roles: tuple[str, ...]) -> QualityState | None:
        """One version's overall state over several roles (a version that was a shadow and
        then served)."""
        return merged(s for r in roles if (s := self.state(version, r)) is not None)


def read_range(
    quality: QualityStore, predictions: PredictionStore, model: str, first_minute: int,
    last_minute: int,
) -> QualityRange:  # fmt: skip
    """Read a model's quality states and logged counts for minutes first..last (inclusive).
    Unreachable when Redis does not answer."""
    found = quality.read_merged(model, first_minute, last_minute)
    logged = predictions.logged(model, first_minute, last_minute)
    return QualityRange(found.states, logged, found.writers)

"""Quality events for retraining pipelines (accuracy.drop, fairness.gap, drift.alert and their
resolved events), judged by the rollout leader once a window, sent through its webhook.

Per window and served version: its headline metric against its evaluation's and the floor, its
fairness gap per segment dimension, its inputs against its reference. Each verdict moves the
subject's episode (registry_client.quality.episodes); episodes and audit entries are written in
one transaction under the leader's lease (episode_store.py), and only then are the events
handed to notify(), which only queues. On the controller's thread; never raises into it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.drift.statistics import ALERT, INSUFFICIENT, OK, dataset_drift, feature_drift
from registry_client.errors import Conflict, NotFound, RegistryError, Rejected
from registry_client.quality import episodes
from registry_client.quality.episode_store import EpisodeStore, Judgement
from registry_client.quality.episodes import Observation, Subject
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.headline import WATCHED
from registry_client.quality.report import QualityRange, read_range
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import RouteRule
from registry_client.rollout.store import LeaseLost
from registry_client.schema import SchemaError

__all__ = ["QualityEventLimits", "QualityEvents"]

_log = logging.getLogger(__name__)
Notify = Callable[[str, Mapping[str, object]], None]
_TOP_FEATURES = 5  # drifting features an event names, largest PSI first


@dataclass(frozen=True, slots=True)
class QualityEventLimits:
    """When a window's figure is bad, good or in between, and how windows are cut."""

    window_seconds: float = 3600.0
    windows: int = 3  # bad windows in a row open an episode, good ones close it
    min_labels: float = 100.0  # labelled rows a figure needs (each segment value, for fairness)
    label_wait_seconds: float = 0.0  # accuracy and fairness: the window that ended this long ago
    accuracy_drop: float = 0.05  # below the evaluation's metric by more: bad
    accuracy_floor: float | None = None  # below it: bad, with or without an evaluation
    fairness_gap: float = 0.1  # a larger gap: bad
    margin: float = 0.01  # good: this far inside the limit
    drift_minute_ttl: int = 3600  # how long the gateways keep minute sketches

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityEventLimits:
        return cls(
            window_seconds=settings.quality_events_window_seconds,
            windows=settings.quality_events_windows,
            min_labels=settings.quality_events_min_labels,
            label_wait_seconds=settings.quality_events_label_wait_seconds,
            accuracy_drop=settings.accuracy_drop_threshold,
            accuracy_floor=settings.accuracy_floor,
            fairness_gap=settings.fairness_gap_threshold,
            margin=settings.quality_events_margin,
            drift_minute_ttl=settings.drift_minute_ttl_seconds,
        )


def _watched(rule: RouteRule) -> frozenset[tuple[str, str]]:
    """The (version, role) pairs a rule serves: split versions with a weight, and shadows."""
    served = {(s.version, "primary") for s in rule.split if s.weight > 0}
    return frozenset(served | {(s.version, "shadow") for s in rule.shadows if s.percent > 0})


def _verdict(bad: bool, good: bool) -> str:
    return episodes.BAD if bad else episodes.GOOD if good else episodes.NEUTRAL


def _number(value: float | None) -> float | None:
    """A figure as JSON can carry it."""
    return None if value is None or not math.isfinite(value) else round(value, 6)


class QualityEvents:
    """Judges every served version once a window and sends the events its episodes cause.
    Not thread-safe: the rollout controller's thread calls tick()."""

    def __init__(
        self, client: RegistryClient, replica: str, limits: QualityEventLimits,
        notify: Notify | None = None,
    ) -> None:  # fmt: skip
        self._client = client
        self._store = EpisodeStore(client)
        self._limits = limits
        self._notify = notify
        self._replica = replica
        self._actor = f"quality-events@{replica}"
        self._judged_until = 0.0  # every model judged up to here
        self._judged: dict[str, float] = {}  # per model, within a window not yet done
        self._failing = False
        self._refused: set[str] = set()  # models whose documents cannot be read, said once

    def tick(self, now: float, leader: str) -> None:
        """Judge the window that ended last, once, while the lease holds `leader` (the
        controller's lease value). Registry errors are logged and retried next tick."""
        window = self._limits.window_seconds
        end = math.floor(now / window) * window
        if end <= self._judged_until:
            return
        try:
            rules, _ = self._client.rules()
        except (RegistryError, redis.RedisError) as exc:
            self._failed(exc)
            return
        done = True
        for model, rule in sorted(rules.items()):
            if self._judged.get(model, 0.0) >= end:
                continue
            try:
                events = self._store.commit(self._judge(model, rule, end), leader=leader,
                                            actor=self._actor)  # fmt: skip
            except LeaseLost:
                return  # the controller finds out on its next tick
            except Conflict:
                done = False  # judged again next tick, from what was written meanwhile
                continue
            except (Rejected, SchemaError, ValueError, redis.ResponseError) as exc:
                # A document of this model is unreadable, or Redis refuses this user (an ACL
                # without the controller's rights): said once, not tried again this window.
                # A Redis refusing writes for its own state (full, no replicas) is
                # Unreachable, retried below like an outage.
                if model not in self._refused:
                    _log.error("quality events skipped a model: a document is unreadable, or"
                               " Redis refuses this gateway's user the controller's rights"
                               " (docs/security.md)", extra={"model": model,
                               "reason": str(exc)})  # fmt: skip
                self._refused.add(model)
                self._judged[model] = end
                continue
            except (RegistryError, redis.RedisError) as exc:
                self._failed(exc)
                return
            self._refused.discard(model)
            self._judged[model] = end
            for event in events:
                log = _log.info if event.name.endswith(".resolved") else _log.warning
                log(f"quality event {event.name}", extra={"model": model, "reason": event.reason})
                if self._notify is not None:
                    self._notify(event.name, event.payload)
        if self._failing:
            _log.info("quality events reach the registry again")
        self._failing = False
        if done:
            self._judged_until = end
            self._judged.clear()

    def _failed(self, exc: Exception) -> None:
        if not self._failing:  # once per outage, not every tick
            _log.warning("quality events cannot read or write the registry; will retry",
                         extra={"reason": str(exc)})  # fmt: skip
        self._failing = True

    def _judge(self, model: str, rule: RouteRule, end: float) -> Judgement:
        """Every watched subject's verdict on the window ending at `end` (for accuracy and
        fairness, the one ending label_wait_seconds before)."""
        limits, watched = self._limits, _watched(rule)
        versions = sorted({version for version, _ in watched})
        found: list[Observation] = []
        config = self._client.model_quality(model)
        if config is not None and versions:
            last = end - limits.label_wait_seconds
            first = last - limits.window_seconds
            quality = read_range(
                self._client.quality, self._client.predictions, model,
                math.floor(first / 60), math.ceil(last / 60) - 1,
            )  # fmt: skip
            window = _window(first, last)
            for version in versions:
                evaluation = self._client.evaluation(model, version)
                for role in sorted(r for v, r in watched if v == version):
                    judged = _Judged(config, quality, version, role, evaluation, window)
                    found += self._accuracy(judged)
                    found += self._fairness(judged)
        for version in versions:
            found += self._drift(model, version, end)
        return Judgement(model, end, found, watched, needed=limits.windows, replica=self._replica)

    def _accuracy(self, judged: _Judged) -> list[Observation]:
        """The headline metric against max(evaluation's - accuracy_drop, floor); nothing when
        there is neither."""
        limits, metric = self._limits, WATCHED[judged.config.task]
        evaluation = judged.evaluation
        expected = None if evaluation is None else evaluation.metrics.get(metric)
        bounds = [] if expected is None else [expected - limits.accuracy_drop]
        bounds += [] if limits.accuracy_floor is None else [limits.accuracy_floor]
        if not bounds:
            return []
        limit = max(bounds)
        found = judged.quality.quality(judged.version, judged.role)
        value = found.metrics.get(metric)
        if value is None or found.labelled < limits.min_labels:
            verdict = episodes.INSUFFICIENT
        else:
            verdict = _verdict(value < limit, value >= limit + limits.margin)
        from_evaluation = expected is not None and limit == expected - limits.accuracy_drop
        source = f"evaluation {expected:.4g} - {limits.accuracy_drop:g}" if from_evaluation else (
            "floor")  # fmt: skip
        shown = "-" if value is None else f"{value:.4g}"
        summary = f"{metric} {shown} against {limit:.4g} ({source}), {found.labelled:g} labels"
        figures = {
            "metric": metric, "value": _number(value), "limit": _number(limit),
            "evaluation": _number(expected), "floor": limits.accuracy_floor,
            "labelled": _number(found.labelled), "coverage": _number(found.coverage),
            **judged.window,
        }  # fmt: skip
        subject = Subject("accuracy", judged.version, judged.role)
        return [Observation(subject, verdict, figures, summary)]

    def _fairness(self, judged: _Judged) -> list[Observation]:
        """The gap on each segment dimension against fairness_gap, naming the worst value."""
        limits, found = self._limits, []
        for dimension in judged.config.segments:
            subject = Subject("fairness", judged.version, judged.role, dimension)
            gap = judged.quality.fairness_gap(judged.version, judged.role, dimension,
                                              limits.min_labels)  # fmt: skip
            if gap is None:
                found.append(Observation(subject, episodes.INSUFFICIENT, {}, ""))
                continue
            metric, value, worst = gap
            threshold = limits.fairness_gap
            verdict = _verdict(value > threshold, value <= threshold - limits.margin)
            evaluated = None if judged.evaluation is None else (
                judged.evaluation.gaps.get(dimension))  # fmt: skip
            figures = {
                "metric": metric, "gap": _number(value), "worst": worst, "threshold": threshold,
                "evaluation_gap": None if evaluated is None else _number(evaluated[1]),
                **judged.window,
            }  # fmt: skip
            summary = f"{dimension}: {metric} {value:.4g} against {threshold:g}, worst {worst!r}"
            found.append(Observation(subject, verdict, figures, summary))
        return found

    def _drift(self, model: str, version: str, end: float) -> list[Observation]:
        """The version's inputs (and outputs) over the window against its reference: bad when
        the dataset drifts (gatectl drift's `alert`), good when it does not and no feature
        alerts; nothing without a reference."""
        try:
            references = self._client.drift.get_reference(model, version)
        except NotFound:
            return []
        window = self._limits.window_seconds
        merged = self._client.drift.read(model, version, window, now=end - 1,
                                         minute_ttl=self._limits.drift_minute_ttl)  # fmt: skip
        features = [
            feature_drift(name, sketch, references[name])
            for name, sketch in sorted(merged.features.items())
            if name in references
        ]
        dataset = dataset_drift(features)
        alerting = any(f.verdict == ALERT for f in features)
        verdict = episodes.INSUFFICIENT if dataset == INSUFFICIENT else (
            _verdict(dataset == ALERT, dataset == OK and not alerting))  # fmt: skip
        drifting = sorted((f for f in features if f.verdict not in (OK, INSUFFICIENT)),
                          key=lambda f: -(f.psi or 0.0))  # fmt: skip
        named = [{"feature": f.feature, "verdict": f.verdict, "psi": _number(f.psi),
                  "ks": _number(f.ks)} for f in drifting[:_TOP_FEATURES]]  # fmt: skip
        figures = {"dataset": dataset, "rows": merged.rows, "features": named,
                   **_window(end - window, end)}  # fmt: skip
        worst = f", worst {drifting[0].feature}" if drifting else ""
        summary = f"inputs {dataset}: {len(drifting)} of {len(features)} features drift{worst}"
        return [Observation(Subject("drift", version), verdict, figures, summary)]


@dataclass(frozen=True, slots=True)
class _Judged:
    """What one (version, role)'s accuracy and fairness are judged on."""

    config: QualityConfig
    quality: QualityRange
    version: str
    role: str
    evaluation: Evaluation | None
    window: Mapping[str, object]


def _window(first: float, last: float) -> dict[str, object]:
    """The window judged, as events carry it (UTC)."""
    iso = [datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") for t in (first, last)]
    return {"window_start": iso[0], "window_end": iso[1]}

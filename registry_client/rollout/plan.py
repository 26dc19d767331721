"""A rollout: the plan an operator starts (candidate, steps, interval, thresholds) and the state
the controller moves it through, stored as one JSON document per model and validated like a
rule; the rules each phase serves.

Phases: `shadowing` (dark launch: the candidate gets a mirrored copy, the baseline answers)
-> `progressing` through the steps (the candidate's weight in percent) -> `promoted` (the
candidate alone). Any failed judgement, repeated `failures_to_rollback` times, ends it
`rolled_back` (the baseline alone); an operator can pause, resume or abort it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeGuard

from registry_client.records.rule_documents import MAX_RULE_DOCUMENT_BYTES, Shadow, Split
from registry_client.schema import SchemaError
from registry_client.schema import validate_name as _validate_name

__all__ = [
    "ABORTED",
    "ACTIVE",
    "FINISHED",
    "PAUSED",
    "PROGRESSING",
    "PROMOTED",
    "ROLLED_BACK",
    "SHADOWING",
    "RolloutPlan",
    "RolloutState",
    "served_split",
]

SHADOWING, PROGRESSING, PAUSED = "shadowing", "progressing", "paused"
PROMOTED, ROLLED_BACK, ABORTED = "promoted", "rolled_back", "aborted"
ACTIVE = (SHADOWING, PROGRESSING, PAUSED)
FINISHED = (PROMOTED, ROLLED_BACK, ABORTED)
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 7 * 86400.0
MAX_STEPS = 20
MAX_LABEL_WAIT_SECONDS = 90 * 86400.0  # the longest a model's labels may come (--label-deadline)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """What `gatectl rollout start` asked for. Rates and shares are fractions except where the
    name says percent or points."""

    model: str
    candidate: str
    baseline: str
    steps: tuple[int, ...]  # the candidate's weight in percent at each step
    interval_seconds: float
    shadow_first_seconds: float = 0.0  # 0: straight to the first step
    shadow_percent: float = 100.0  # of requests mirrored to the candidate while shadowing
    min_agreement: float = 0.98
    max_error_rate_delta: float = 0.5  # percentage points above the baseline's, per status
    max_p99_ratio: float = 1.2
    # A p99 this much slower or less is never a failure: a 0.2 ms model at 0.3 ms is 1.5x, and
    # irrelevant to anyone calling it over a network.
    min_p99_increase_ms: float = 1.0
    max_psi: float = 0.25
    min_requests: int = 500
    failures_to_rollback: int = 2
    # Gates on real labels (docs/rollouts.md, "Gates on labels"); all off by default, so a
    # model without labels rolls out as before, and plans stored before them still load.
    require_evaluation: bool = False  # at start: the candidate's stored evaluation
    max_auc_drop: float | None = None  # auc_roc, multiclass accuracy; regression: MAE rise
    max_fairness_gap: float | None = None  # the candidate's largest gap of any segment
    min_label_coverage: float | None = None  # share of the candidate's predictions labelled
    min_labels: int = 500  # labelled predictions each side needs before quality is judged
    label_wait_seconds: float = 3600.0  # a judgement waits this long for labels, then fails

    @property
    def label_gated(self) -> bool:
        """Whether judgements read the versions' quality on labels."""
        gates = (self.max_auc_drop, self.max_fairness_gap, self.min_label_coverage)
        return any(gate is not None for gate in gates)

    def validate(self) -> RolloutPlan:
        """Return self, or raise SchemaError naming the first field that is wrong."""
        _validate_name(self.model, "model")
        _validate_name(self.candidate, "candidate")
        _validate_name(self.baseline, "baseline")
        if self.candidate == self.baseline:
            raise SchemaError(f"candidate: expected a version other than the baseline"
                              f" {self.baseline!r}")  # fmt: skip
        if not self.steps or len(self.steps) > MAX_STEPS:
            raise SchemaError(f"steps: expected 1 to {MAX_STEPS} weights, got {len(self.steps)}")
        previous = 0
        for i, step in enumerate(self.steps):
            if isinstance(step, bool) or not isinstance(step, int) or not 0 < step <= 100:
                raise SchemaError(f"steps[{i}]: expected an integer from 1 to 100, got {step!r}")
            if step <= previous:
                raise SchemaError(f"steps[{i}]: expected more than the step before ({previous}),"
                                  f" got {step}")  # fmt: skip
            previous = step
        _number(self.interval_seconds, "interval_seconds", MIN_INTERVAL_SECONDS,
                MAX_INTERVAL_SECONDS)  # fmt: skip
        _number(self.shadow_first_seconds, "shadow_first_seconds", 0.0, MAX_INTERVAL_SECONDS)
        _number(self.shadow_percent, "shadow_percent", 0.0, 100.0, low_open=True)
        _number(self.min_agreement, "min_agreement", 0.0, 1.0)
        _number(self.max_error_rate_delta, "max_error_rate_delta", 0.0, 100.0)
        _number(self.max_p99_ratio, "max_p99_ratio", 1.0, 1000.0)
        _number(self.min_p99_increase_ms, "min_p99_increase_ms", 0.0, 3_600_000.0)
        _number(self.max_psi, "max_psi", 0.0, 100.0, low_open=True)
        for name in ("min_requests", "failures_to_rollback"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
                raise SchemaError(f"{name}: expected an integer from 1 to 10^9, got {value!r}")
        self._validate_label_gates()
        return self

    def _validate_label_gates(self) -> None:
        # Named with their flags: these messages reach operators through gatectl only.
        if not isinstance(self.require_evaluation, bool):
            raise SchemaError(f"require_evaluation (--require-evaluation): expected true or"
                              f" false, got {self.require_evaluation!r}")  # fmt: skip
        for name, low_open in (("max_auc_drop", False), ("min_label_coverage", True)):
            value = getattr(self, name)
            if value is not None:
                _number(value, f"{name} ({_flag(name)})", 0.0, 1.0, low_open=low_open)
        gap = self.max_fairness_gap
        if gap is not None and (not _is_number(gap) or not 0 <= gap < math.inf):
            raise SchemaError(f"max_fairness_gap (--max-fairness-gap): expected a number >= 0"
                              f" (a difference of rates, 0 to 1; of MAE for regression), got"
                              f" {gap!r}")  # fmt: skip
        value = self.min_labels
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
            raise SchemaError(f"min_labels (--min-labels): expected an integer from 1 to 10^9,"
                              f" got {value!r}")  # fmt: skip
        wait = self.label_wait_seconds
        if not _is_number(wait) or not MIN_INTERVAL_SECONDS <= wait <= MAX_LABEL_WAIT_SECONDS:
            raise SchemaError(f"label_wait_seconds (--label-wait): expected 1s to 90d, got"
                              f" {wait!r}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RolloutPlan:
        known = {name: doc[name] for name in cls.__dataclass_fields__ if name in doc}
        try:
            known["steps"] = tuple(known["steps"])
            return cls(**known).validate()
        except (KeyError, TypeError) as exc:
            raise SchemaError(f"rollout plan: missing or malformed field {exc}") from exc


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object, name: str, low: float, high: float, *, low_open: bool = False) -> None:
    number = value if _is_number(value) else None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise SchemaError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
    if low_open and number == low:
        raise SchemaError(f"{name}: expected more than {low:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class RolloutState:
    """A rollout as stored: its plan, where it is, and what the last judgement found.

    `revision` counts writes of the document (compare-and-set); `route_revision` is the rule
    revision this rollout last wrote, so a rule written by anyone else is noticed."""

    plan: RolloutPlan
    status: str
    step: int  # index into plan.steps; -1 while shadowing
    started_at: float  # Unix seconds
    started_by: str
    phase_started_at: float  # when shadowing or the current step began
    route_revision: int
    revision: int = 1
    paused_status: str = ""  # the status to resume to
    failures: int = 0  # consecutive failed judgements
    interval_started_at: float = 0.0  # the judged interval began; 0: not yet measured
    next_check_at: float = 0.0  # when the interval is judged
    snapshot: Mapping[str, Any] = field(default_factory=dict)  # counters at interval start
    last_decision: Mapping[str, Any] = field(default_factory=dict)  # at, decision, reason
    last_checks: tuple[Mapping[str, Any], ...] = ()
    updated_at: float = 0.0
    labels_waiting_since: float = 0.0  # the first judgement short of labels; 0: not waiting

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def candidate_weight(self) -> int:
        """The candidate's weight the current phase serves, in percent."""
        if self.status == PROMOTED:
            return 100
        if self.status in (ROLLED_BACK, ABORTED) or self.step < 0:
            return 0
        return self.plan.steps[self.step]

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)

    def to_json(self) -> str:
        doc = {
            "plan": self.plan.to_dict(), "status": self.status, "step": self.step,
            "started_at": self.started_at, "started_by": self.started_by,
            "phase_started_at": self.phase_started_at, "route_revision": self.route_revision,
            "revision": self.revision, "paused_status": self.paused_status,
            "failures": self.failures, "interval_started_at": self.interval_started_at,
            "next_check_at": self.next_check_at,
            "snapshot": dict(self.snapshot), "last_decision": dict(self.last_decision),
            "last_checks": [dict(c) for c in self.last_checks], "updated_at": self.updated_at,
            "labels_waiting_since": self.labels_waiting_since,
        }  # fmt: skip
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RolloutState:
        """Parse and validate a stored document; SchemaError names what is wrong."""
        if len(text) > 4 * MAX_RULE_DOCUMENT_BYTES:
            raise SchemaError(f"rollout document: {len(text)} bytes, expected a few kB")
        try:
            doc = json.loads(text)
            state = cls(
                plan=RolloutPlan.from_dict(doc["plan"]),
                status=str(doc["status"]),
                step=int(doc["step"]),
                started_at=float(doc["started_at"]),
                started_by=str(doc["started_by"]),
                phase_started_at=float(doc["phase_started_at"]),
                route_revision=int(doc["route_revision"]),
                revision=int(doc["revision"]),
                paused_status=str(doc.get("paused_status", "")),
                failures=int(doc.get("failures", 0)),
                interval_started_at=float(doc.get("interval_started_at", 0.0)),
                next_check_at=float(doc.get("next_check_at", 0.0)),
                snapshot=dict(doc.get("snapshot", {})),
                last_decision=dict(doc.get("last_decision", {})),
                last_checks=tuple(dict(c) for c in doc.get("last_checks", [])),
                updated_at=float(doc.get("updated_at", 0.0)),
                labels_waiting_since=float(doc.get("labels_waiting_since", 0.0)),
            )
        except SchemaError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError,
                UnicodeDecodeError) as exc:  # fmt: skip
            raise SchemaError(f"rollout document: missing or malformed field {exc}") from exc
        if state.status not in ACTIVE + FINISHED:
            raise SchemaError(f"status: expected one of {', '.join(ACTIVE + FINISHED)},"
                              f" got {state.status!r}")  # fmt: skip
        if not -1 <= state.step < len(state.plan.steps):
            raise SchemaError(f"step: expected -1 to {len(state.plan.steps) - 1}, got {state.step}")
        return state


def served_split(
    state: RolloutState, split: tuple[Split, ...], shadows: tuple[Shadow, ...]
) -> tuple[tuple[Split, ...], tuple[Shadow, ...]]:
    """The split and shadows the rollout's phase serves, given the rule's. The rollout owns
    the traffic: its baseline and candidate get the phase's weights, other versions in the
    split stay at weight 0 (still loaded, say for the next rollout), other shadows as they are."""
    plan = state.plan
    ours = (plan.candidate, plan.baseline)
    idle = tuple(Split(s.version, 0) for s in split if s.version not in ours)
    others = tuple(s for s in shadows if s.version not in ours)
    status = state.paused_status if state.status == PAUSED else state.status
    if status == PROMOTED:
        return (Split(plan.candidate, 100), *idle), others
    if status in (ROLLED_BACK, ABORTED):
        return (Split(plan.baseline, 100), *idle), others
    if state.step < 0:
        mirrored = Shadow(plan.candidate, plan.shadow_percent)
        return (Split(plan.baseline, 100), *idle), (*others, mirrored)
    weight = plan.steps[state.step]
    return (Split(plan.baseline, 100 - weight), Split(plan.candidate, weight), *idle), others

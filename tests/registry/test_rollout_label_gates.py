"""The rollout controller's gates on labels, ticked by hand against a real redis-server: the
predictions are logged, labelled and joined as production does (prediction log, label stream,
joiner), the clock moved by the test. A less accurate or unfair candidate is rolled back naming
why; too few labels hold the rollout visibly (stored state, history, `gatectl rollout status`)
until the labels come or the wait's bound passes, which then counts as a failed judgement."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics.rollout import RolloutMetrics
from gateway.rollout.controller import RolloutController
from registry_client.client import RegistryClient
from registry_client.quality.join import LabelJoiner
from registry_client.quality.labels import Label
from registry_client.quality.predictions import PRIMARY, PredictionRecord
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split
from registry_client.rollout.plan import RolloutState
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",))
ROWS = 200  # predictions per version
Scorer = Callable[[int, int], float]  # (label, row) -> score


class Clock:
    """Time that moves when told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Rig:
    def __init__(self, registry: RegistryClient, url: str, clock: Clock) -> None:
        self.registry, self.url, self.clock = registry, url, clock
        self.store = RolloutStore(registry, clock)
        self.events: list[tuple[str, Mapping[str, object]]] = []
        self.controller = RolloutController(
            registry, "gw-a", RolloutMetrics(CollectorRegistry()), tick_seconds=0.05,
            lease_seconds=10.0, notify=lambda e, p: self.events.append((e, p)), clock=clock,
        )  # fmt: skip
        truth = np.random.default_rng(4).integers(0, 2, ROWS)
        self.labels = [int(y) for y in truth]

    def start(self, **plan: Any) -> None:
        fields: dict[str, Any] = {
            "model": "credit", "candidate": "2", "steps": (50, 100), "interval_seconds": 60.0,
            "min_requests": 10, "max_auc_drop": 0.05, "max_fairness_gap": 0.3,
            "min_label_coverage": 0.5, "min_labels": 40, "label_wait_seconds": 180.0,
        }  # fmt: skip
        self.store.start(None, actor="alice", baseline_from_rule=True, **(fields | plan))
        self.controller.tick()  # leads, and snapshots the first interval

    def predict(self, version: str, scorer: Scorer) -> None:
        """ROWS predictions of `version` (as primary), made now, ids <version>-<row>."""
        made = int(self.clock.now)
        entries = [
            (f"{version}-{row}", [PredictionRecord(version, PRIMARY, made,
                                                   ("F" if row % 2 else "M",),
                                                   scorer(self.labels[row], row))])
            for row in range(ROWS)
        ]  # fmt: skip
        self.registry.predictions.write("credit", entries, 2 * 86400)

    def label(self, version: str, rows: range) -> None:
        """Labels for some of a version's predictions, joined as the gateway's joiner does."""
        given = [Label(f"{version}-{row}", self.labels[row]) for row in rows]
        self.registry.put_labels("credit", given, self.clock.now)
        joiner = LabelJoiner(self.registry._redis, self.registry.keys, "gw-a")
        while joiner.join("credit", CONFIG, None, None, self.clock.now).remaining:
            pass

    def judge(self) -> RolloutState:
        """The interval ends: one judgement."""
        self.clock.now += 61
        self.controller.tick()
        state = self.store.get("credit")
        assert state is not None
        return state


def good(label: int, row: int) -> float:
    return 0.8 if label else 0.2  # separates the classes, the same for everyone


def coin(label: int, row: int) -> float:
    return 0.3 + 0.4 * ((row * 7919) % 10) / 10  # unrelated to the label: AUC about 0.5


def biased(label: int, row: int) -> float:
    # Every positive above every negative (AUC 1), but the men's negatives selected too.
    return 0.9 if label else (0.6 if row % 2 == 0 else 0.1)


@pytest.fixture
def rig(redis_server: RedisServer, tmp_path: Path) -> Iterator[Rig]:
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops", quality=CONFIG)
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        registry.register_version("credit", version, path, actor="ops")
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    yield Rig(registry, redis_server.url, Clock())
    registry.close()


def _checks(state: RolloutState) -> dict[str, Mapping[str, object]]:
    return {str(c["name"]): c for c in state.last_checks}


def test_a_candidate_less_accurate_on_its_labels_is_rolled_back_naming_both_aucs(rig) -> None:
    rig.start()
    rig.predict("1", good)
    rig.predict("2", coin)
    rig.label("1", range(ROWS))
    rig.label("2", range(ROWS))
    held = rig.judge()
    assert held.status == "progressing" and held.failures == 1
    auc = _checks(held)["auc_drop"]
    assert auc["result"] == "fail" and str(auc["detail"]).startswith("auc_roc: candidate 0.5")
    assert "baseline 1 (200 and 200 labelled)" in str(auc["detail"])
    rolled = rig.judge()
    assert rolled.status == "rolled_back" and rolled.candidate_weight == 0
    assert "failed 2 time(s) in a row: auc_drop" in str(rolled.last_decision["reason"])
    rule = rig.registry.get_route("credit")
    assert rule is not None and rule.split == (Split("1", 100),)
    assert [event for event, _ in rig.events] == ["rolled_back"]
    assert "auc_drop" in str(rig.events[0][1]["reason"])


def test_an_unfair_candidate_is_rolled_back_naming_the_worst_segment_value(rig) -> None:
    rig.start(failures_to_rollback=1)
    rig.predict("1", good)
    rig.predict("2", biased)
    rig.label("1", range(ROWS))
    rig.label("2", range(ROWS))
    rolled = rig.judge()
    assert rolled.status == "rolled_back"
    fairness = _checks(rolled)["fairness_gap"]
    women = [y for row, y in enumerate(rig.labels) if row % 2]
    assert fairness["result"] == "fail"
    assert fairness["value"] == pytest.approx(1.0 - sum(women) / len(women))
    assert str(fairness["detail"]).startswith("gender: demographic_parity_difference 0.")
    assert str(fairness["detail"]).endswith(", worst F")
    assert _checks(rolled)["auc_drop"]["result"] == "pass"  # accurate, yet unfair


def test_too_few_labels_hold_the_rollout_visibly_until_the_bound_then_fail(rig) -> None:
    rig.start()
    rig.predict("1", good)
    rig.predict("2", good)
    rig.label("1", range(ROWS))
    rig.label("2", range(40))  # 20% of the candidate's predictions
    waiting = rig.judge()
    assert waiting.status == "progressing" and waiting.failures == 0
    assert waiting.labels_waiting_since == rig.clock.now
    reason = str(waiting.last_decision["reason"])
    assert "waiting for labels: label_coverage 0.2 (want >= 0.5 and 40 labels; " in reason
    assert (
        "candidate 40 of 200 predictions labelled, baseline 200 of 200; waited 0s of 3m" in reason
    )
    code, out, _ = run_gatectl(rig.url, "rollout", "status", "credit")
    assert code == 0
    assert "waiting for labels since " in out
    assert " of 3m): label_coverage 0.2 (want >= 0.5 and 40 labels)" in out
    entry = rig.store.history("credit", limit=1)[0]
    assert entry["action"] == "rollout.hold" and "waiting for labels" in entry["reason"]
    assert rig.judge().labels_waiting_since == waiting.labels_waiting_since  # 61 s of 180
    assert rig.judge().failures == 0  # 122 s
    failed = rig.judge()  # 183 s: past the bound
    assert failed.failures == 1 and _checks(failed)["label_coverage"]["result"] == "fail"
    assert "waited 3m of 3m" in str(failed.last_decision["reason"])
    rolled = rig.judge()  # every judgement after the bound fails too
    assert rolled.status == "rolled_back"
    assert "label_coverage 0.2" in str(rolled.last_decision["reason"])


def test_labels_arriving_end_the_wait_and_the_gates_pass(rig) -> None:
    rig.start()
    rig.predict("1", good)
    rig.predict("2", good)
    rig.label("1", range(ROWS))
    rig.label("2", range(40))
    assert rig.judge().labels_waiting_since > 0
    rig.label("2", range(40, ROWS))
    passed = rig.judge()
    assert passed.labels_waiting_since == 0.0 and passed.failures == 0
    checks = _checks(passed)
    assert {n: checks[n]["result"] for n in ("label_coverage", "auc_drop", "fairness_gap")} == {
        "label_coverage": "pass", "auc_drop": "pass", "fairness_gap": "pass"}  # fmt: skip
    assert checks["label_coverage"]["value"] == 1.0
    # Nothing but the traffic (none here) is left to wait for.
    reason = str(passed.last_decision["reason"])
    assert reason.startswith("waiting for data: requests 0") and "labels" not in reason


def test_resuming_a_paused_rollout_starts_its_wait_for_labels_afresh(rig) -> None:
    rig.start()
    rig.predict("2", good)
    assert rig.judge().labels_waiting_since > 0
    rig.store.pause("credit", actor="bob")
    resumed = rig.store.resume("credit", actor="bob")
    assert resumed.labels_waiting_since == 0.0 and resumed.status == "progressing"

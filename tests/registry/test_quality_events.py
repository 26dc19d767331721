"""Quality events end to end in a real Redis: labels joined as production joins them, a real
rollout controller judging them once a window, the signed webhook posting to a real HTTP
receiver; one event per episode, resolved after recovery, audited and listed by gatectl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.rollout.quality_events import QualityEventLimits
from registry_client.records.rule_documents import Split
from tests.support.gatectl import run_gatectl
from tests.support.quality_events import (
    LIMITS,
    MODEL,
    PRIMARY,
    SHADOW,
    World,
    bad,
    good,
    unfair,
    window_end,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def world(redis_server: RedisServer, tmp_path: Path) -> Iterator[World]:
    made = World(redis_server.url, tmp_path)
    yield made
    made.close()


def _accuracy_episode(world: World) -> None:
    """Version 1 (evaluated at AUC 0.95) good for 2 windows, bad for 5, good for 3; the
    controller ticks three times in every window."""
    world.evaluate("1", 0.95)
    gateway = world.controller("gw-a")
    for k, scores in enumerate([good] * 2 + [bad] * 5 + [good] * 3):
        world.predict(k, {PRIMARY: scores, SHADOW: good})
        world.judge(k, gateway)


def test_an_accuracy_drop_is_one_event_per_episode_and_resolves_after_recovery(world):
    _accuracy_episode(world)
    events = world.received()
    assert [(e["event"], e["version"], e["role"]) for e in events] == [
        ("accuracy.drop", "1", "primary"),
        ("accuracy.resolved", "1", "primary"),
    ]
    drop, resolved = events
    # Opened by the second bad window in a row (window 3), closed by the second good one.
    assert drop["window_end"] == resolved["started_at"] == drop["started_at"]
    assert drop["episode"] == resolved["episode"]
    assert (drop["metric"], drop["value"], drop["evaluation"]) == ("auc_roc", 0.5, 0.95)
    assert drop["limit"] == pytest.approx(0.90)
    assert drop["labelled"] == 80 and drop["windows"] == 2 and drop["replica"] == "gw-a"
    assert (resolved["value"], resolved["resolution"]) == (1.0, "recovered")


def test_every_event_is_audited_with_its_payload(world):
    _accuracy_episode(world)
    sent = world.received()
    audited = [e for e in reversed(world.client.history(MODEL)) if e["action"].startswith("event.")]
    assert [e["action"] for e in audited] == ["event.accuracy.drop", "event.accuracy.resolved"]
    assert {e["who"] for e in audited} == {"quality-events@gw-a"}
    assert [json.loads(e["after"]) for e in audited] == [
        {k: v for k, v in event.items() if k not in ("event", "sent_at", "delivery")}
        for event in sent
    ]
    assert "auc_roc 0.5 against 0.9 (evaluation 0.95 - 0.05)" in audited[0]["reason"]


def test_gatectl_events_lists_the_events_as_a_table_and_as_json(world):
    _accuracy_episode(world)
    code, out, err = run_gatectl(world.url, "events", MODEL, "--since", "1h")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"model {MODEL}  events in the last 1h: 2  open episodes: 0"
    assert lines[1].split()[:5] == ["when", "event", "version", "role", "about"]
    assert lines[2].split()[1:5] == ["accuracy.resolved", "1", "primary", "auc_roc"]
    assert lines[3].split()[1:5] == ["accuracy.drop", "1", "primary", "auc_roc"]
    code, out, _ = run_gatectl(world.url, "--json", "events", MODEL)
    listed = json.loads(out)
    assert [e["event"] for e in listed["events"]] == ["accuracy.resolved", "accuracy.drop"]
    assert listed["events"][1]["payload"]["value"] == 0.5
    assert listed["open"] == []


def test_gatectl_events_shows_an_open_episode(world):
    world.evaluate("1", 0.95)
    gateway = world.controller("gw-a")
    for k in range(2):
        world.predict(k, {PRIMARY: bad, SHADOW: good})
        world.judge(k, gateway)
    code, out, _ = run_gatectl(world.url, "events", MODEL)
    assert code == 0 and "open episodes: 1" in out.splitlines()[0]
    assert out.splitlines()[-1].split()[:3] == ["accuracy", "1", "primary"]


def test_an_accuracy_drop_below_the_floor_needs_no_evaluation(world):
    limits = world_limits(accuracy_floor=0.8)
    gateway = world.controller("gw-a", limits)
    for k in range(3):
        world.predict(k, {PRIMARY: bad, SHADOW: good})
        world.judge(k, gateway)
    (drop,) = world.received()
    assert (drop["event"], drop["version"], drop["limit"], drop["evaluation"]) == (
        "accuracy.drop", "1", 0.8, None)  # fmt: skip
    assert drop["floor"] == 0.8


def test_a_figure_inside_the_limit_but_not_by_the_margin_keeps_the_episode_open(world):
    world.evaluate("1", 0.95)
    gateway = world.controller("gw-a", world_limits(margin=0.2))  # good needs AUC >= 1.1
    for k, scores in enumerate([bad] * 2 + [good] * 4):
        world.predict(k, {PRIMARY: scores, SHADOW: good})
        world.judge(k, gateway)
    assert [e["event"] for e in world.received()] == ["accuracy.drop"]


def test_a_fairness_gap_names_the_worst_segment_value(world):
    gateway = world.controller("gw-a")
    for k, scores in enumerate([unfair] * 2 + [good] * 2):
        world.predict(k, {PRIMARY: good, SHADOW: scores})
        world.judge(k, gateway)
    gap, resolved = world.received()
    assert (gap["event"], gap["version"], gap["role"], gap["dimension"]) == (
        "fairness.gap", "2", "shadow", "gender")  # fmt: skip
    assert (gap["metric"], gap["gap"], gap["worst"], gap["threshold"]) == (
        "demographic_parity_difference", 1.0, "F", 0.2)  # fmt: skip
    assert (resolved["event"], resolved["gap"], resolved["episode"]) == (
        "fairness.resolved", 0.0, gap["episode"])  # fmt: skip


def test_an_episode_of_a_version_no_longer_served_ends_with_it(world):
    gateway = world.controller("gw-a")
    for k in range(2):
        world.predict(k, {PRIMARY: good, SHADOW: unfair})
        world.judge(k, gateway)
    world.client.set_route(MODEL, [Split("1", 100)], actor="ops")  # the shadow is gone
    world.predict(2, {PRIMARY: good})
    world.judge(2, gateway)
    gap, resolved = world.received()
    assert (resolved["event"], resolved["version"], resolved["resolution"]) == (
        "fairness.resolved", "2", "unserved")  # fmt: skip
    assert resolved["episode"] == gap["episode"]


def test_drift_alerts_when_the_inputs_move_and_resolves_when_they_come_back(world):
    world.reference("1")
    gateway = world.controller("gw-a")
    for k, shift in enumerate([0.0, 1.0, 1.0, 1.0, 0.0, 0.0]):
        world.sketch(k, "1", shift)
        world.judge(k, gateway)
    alert, resolved = world.received()
    assert (alert["event"], alert["version"], alert["dataset"]) == ("drift.alert", "1", "alert")
    assert alert["features"][0]["feature"] == "input[0]"
    assert alert["features"][0]["psi"] > 0.25
    assert alert["window_end"] == alert["started_at"]
    assert "role" not in alert
    assert (resolved["event"], resolved["dataset"], resolved["episode"]) == (
        "drift.resolved", "ok", alert["episode"])  # fmt: skip
    assert resolved["window_end"] == world_iso(window_end(5))


def test_a_receiver_that_does_not_answer_holds_no_judgement_back(world):
    world.receiver.hold = True  # answers nothing until released
    gateway = world.controller("gw-a", world_limits(accuracy_floor=0.8, windows=1))
    world.predict(0, {PRIMARY: bad, SHADOW: good})
    world.judge(0, gateway)
    world.receiver.wait_for(1)  # the drop's POST hangs...
    world.predict(1, {PRIMARY: good, SHADOW: good})
    world.judge(1, gateway)  # ...and the next window is judged and audited all the same
    audited = [e["action"] for e in world.client.history(MODEL) if e["action"].startswith("event.")]
    assert audited == ["event.accuracy.resolved", "event.accuracy.drop"]
    world.receiver.release.set()
    assert [e["event"] for e in world.received()] == ["accuracy.drop", "accuracy.resolved"]


def world_limits(**changes: object) -> QualityEventLimits:
    return replace(LIMITS, **changes)  # type: ignore[arg-type]  # fields of the dataclass


def world_iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="seconds")

"""The hysteresis of quality events: an episode opens after N bad windows in a row and closes
after N good ones; windows without enough data neither count nor break a run; a window in the
margin keeps an open episode open and a closed one closed."""

from __future__ import annotations

import pytest

from registry_client.quality.episode_store import Judgement
from registry_client.quality.episodes import (
    BAD,
    GOOD,
    INSUFFICIENT,
    NEUTRAL,
    Episode,
    Observation,
    Subject,
    advance,
)


def run(verdicts: list[str], needed: int = 3) -> list[str]:
    """The transitions ("open", "close") a run of window verdicts causes, in order."""
    episode, changes = Episode(), []
    for window, verdict in enumerate(verdicts):
        episode, changed = advance(episode, verdict, needed, float(window), f"e{window}")
        if changed:
            changes.append("open" if episode.open else "close")
    return changes


def test_n_bad_windows_in_a_row_open_one_episode_however_long_it_lasts():
    assert run([BAD] * 3) == ["open"]
    assert run([BAD] * 50) == ["open"]


def test_fewer_bad_windows_in_a_row_open_nothing():
    assert run([BAD, BAD, GOOD, BAD, BAD, NEUTRAL, BAD, BAD]) == []


def test_windows_without_enough_data_neither_count_nor_break_a_run():
    assert run([BAD, INSUFFICIENT, BAD, INSUFFICIENT, BAD]) == ["open"]
    assert run([BAD, BAD, INSUFFICIENT, INSUFFICIENT]) == []


def test_an_episode_closes_after_n_good_windows_in_a_row():
    assert run([BAD] * 3 + [GOOD] * 3) == ["open", "close"]
    assert run([BAD] * 3 + [GOOD] * 2) == ["open"]


def test_a_window_in_the_margin_keeps_an_open_episode_open():
    assert run([BAD] * 3 + [GOOD, GOOD, NEUTRAL, GOOD, GOOD]) == ["open"]
    assert run([BAD] * 3 + [NEUTRAL] * 10) == ["open"]


def test_an_episode_remembers_when_it_opened_and_its_id():
    episode = Episode()
    for window in range(2):
        episode, _ = advance(episode, BAD, 2, 100.0 * window, f"e{window}")
    assert episode == Episode(open=True, streak=0, since=100.0, id="e1")


def test_one_window_needed_opens_and_closes_at_once():
    assert run([BAD, BAD, GOOD, NEUTRAL, BAD], needed=1) == ["open", "close", "open"]


def test_needed_below_one_is_refused():
    with pytest.raises(ValueError, match="needed"):
        advance(Episode(), BAD, 0, 0.0, "e")


def test_an_unreadable_stored_episode_reads_as_a_closed_one():
    assert Episode.from_json("{not json") == Episode()
    assert Episode.from_json('{"open": true}') == Episode()
    stored = Episode(True, 1, 5.0, "x")
    assert Episode.from_json(stored.to_json()) == stored


def test_a_subject_round_trips_through_its_field():
    subject = Subject("fairness", "2", "shadow", "gender")
    assert Subject.from_field(subject.field) == subject
    assert Subject.from_field("nonsense") is None
    assert Subject.from_field("latency|2||") is None


def test_an_open_episode_of_a_version_no_longer_served_closes_as_unserved():
    stored = {Subject("drift", "2").field: Episode(True, 0, 60.0, "m/drift/2/-/-/60")}
    judgement = Judgement("m", 120.0, [], [("1", "primary")], needed=2, replica="gw")
    after, events = judgement.apply(stored)
    assert after == {Subject("drift", "2").field: Episode()}
    (event,) = events
    assert (event.name, event.payload["resolution"], event.payload["episode"]) == (
        "drift.resolved", "unserved", "m/drift/2/-/-/60")  # fmt: skip


def test_a_closed_episode_with_a_streak_of_a_version_no_longer_served_is_dropped_silently():
    stored = {Subject("accuracy", "2", "shadow").field: Episode(streak=1)}
    judgement = Judgement("m", 120.0, [], [("2", "primary")], needed=2, replica="gw")
    after, events = judgement.apply(stored)
    assert (after, events) == ({Subject("accuracy", "2", "shadow").field: Episode()}, [])


def test_observed_subjects_advance_and_unobserved_served_ones_stay():
    kept = Subject("fairness", "1", "primary", "gender")
    stored = {kept.field: Episode(streak=1)}
    seen = Observation(Subject("accuracy", "1", "primary"), BAD, {"value": 0.5}, "auc_roc 0.5")
    judgement = Judgement("m", 120.0, [seen], [("1", "primary")], needed=1, replica="gw")
    after, events = judgement.apply(stored)
    assert kept.field not in after
    (event,) = events
    assert (event.name, event.payload["value"], event.reason) == (
        "accuracy.drop", 0.5, "auc_roc 0.5; 1 window(s) in a row")  # fmt: skip

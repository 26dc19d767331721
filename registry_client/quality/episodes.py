"""Quality events' hysteresis: a subject (a version's accuracy, its fairness on one segment
dimension, its input drift) is judged once a window as bad, good, in between or without
enough data, and an episode opens after `needed` bad windows in a row and closes after
`needed` good ones in a row. One event when an episode opens, one when it closes; in between,
nothing, however many windows are judged. Pure: episode_store.py keeps the state in Redis."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = [
    "BAD",
    "EVENTS",
    "GOOD",
    "INSUFFICIENT",
    "NEUTRAL",
    "Episode",
    "Observation",
    "QualityEvent",
    "Subject",
    "advance",
]

# A window's verdict on a subject. NEUTRAL: past the threshold's good side but not by the
# margin, so an episode neither closes nor (while closed) gets nearer to opening.
BAD, GOOD, NEUTRAL, INSUFFICIENT = "bad", "good", "neutral", "insufficient"
# Per kind of subject: the event an episode opens with, and the one it closes with.
EVENTS = {
    "accuracy": ("accuracy.drop", "accuracy.resolved"),
    "fairness": ("fairness.gap", "fairness.resolved"),
    "drift": ("drift.alert", "drift.resolved"),
}
_SEPARATOR = "|"  # not allowed in model, version or segment names


@dataclass(frozen=True, slots=True, order=True)
class Subject:
    """What an episode is about: a kind of figure of one version, in one role (primary or
    shadow; "" for drift, sketched per version) and segment dimension (fairness only)."""

    kind: str
    version: str
    role: str = ""
    dimension: str = ""

    @property
    def field(self) -> str:
        """Its field in the model's episodes hash."""
        return _SEPARATOR.join((self.kind, self.version, self.role, self.dimension))

    @classmethod
    def from_field(cls, field: str) -> Subject | None:
        """The subject a field names; None for a field this version does not know."""
        parts = field.split(_SEPARATOR)
        if len(parts) != 4 or parts[0] not in EVENTS or not parts[1]:
            return None
        return cls(*parts)

    def is_watched(self, watched: frozenset[tuple[str, str]]) -> bool:
        """Whether the rule still serves it: its (version, role) is among `watched` (drift:
        the version in any role)."""
        if self.kind == "drift":
            return any(version == self.version for version, _ in watched)
        return (self.version, self.role) in watched


@dataclass(frozen=True, slots=True)
class Observation:
    """One window's verdict on a subject; `figures` (JSON values) go into its events, and
    `summary` (one line) into the audit's reason."""

    subject: Subject
    verdict: str  # BAD, GOOD, NEUTRAL or INSUFFICIENT
    figures: Mapping[str, object]
    summary: str


@dataclass(frozen=True, slots=True)
class Episode:
    """A subject's state between windows. `streak` counts the windows in a row whose verdict
    points to the other state (bad while closed, good while open)."""

    open: bool = False
    streak: int = 0
    since: float = 0.0  # while open: the end of the window that opened it (Unix seconds)
    id: str = ""  # while open: the episode's id, the same in both of its events

    def to_json(self) -> str:
        return json.dumps({"open": self.open, "streak": self.streak, "since": self.since,
                           "id": self.id}, sort_keys=True)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Episode:
        """The stored episode; a closed one without a streak when unreadable (its worst
        outcome is an episode opened a few windows late)."""
        try:
            doc = json.loads(text)
            return cls(bool(doc["open"]), int(doc["streak"]), float(doc["since"]), str(doc["id"]))
        except (ValueError, TypeError, KeyError):
            return cls()


@dataclass(frozen=True, slots=True)
class QualityEvent:
    """An event to audit and send: its name, its JSON payload, the audit's reason and the
    episode as it was before."""

    name: str
    payload: Mapping[str, object]
    reason: str
    before: Episode


def advance(episode: Episode, verdict: str, needed: int, opened_at: float, episode_id: str) -> (
    tuple[Episode, bool]
):  # fmt: skip
    """The episode after one window's `verdict`, and whether it opened or closed. `needed`
    windows in a row: bad ones open it (as `episode_id` at `opened_at`), good ones close it;
    a window without enough data neither counts nor breaks the run."""
    if needed < 1:
        raise ValueError(f"needed must be at least 1, got {needed}")
    if verdict == INSUFFICIENT:
        return episode, False
    towards = GOOD if episode.open else BAD
    if verdict != towards:
        return replace(episode, streak=0), False
    if episode.streak + 1 < needed:
        return replace(episode, streak=episode.streak + 1), False
    if episode.open:
        return Episode(), True
    return Episode(open=True, since=opened_at, id=episode_id), True

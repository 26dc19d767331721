"""Quality events' episodes in Redis (`{ns}:quality-events:<model>`), and the events read back
from the audit.

A window's verdicts are applied to the stored episodes in one WATCH/MULTI transaction that
watches the episodes and the rollout leader's lease: it writes the new episodes, the end of the
window judged and an audit entry per event, and only while the writer holds the lease. So a
window is judged once across leaders: a leader that lost its lease writes nothing, and one that
takes over finds the window already judged, the streaks where they were and the open episodes
open, and sends no event twice. No Lua (a gateway's Redis user may not EVAL).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from registry_client.client import RegistryClient
from registry_client.connection import Pipeline
from registry_client.quality.episodes import (
    EVENTS,
    Episode,
    Observation,
    QualityEvent,
    Subject,
    advance,
)
from registry_client.records.base import hset
from registry_client.records.leases import lease_holder
from registry_client.records.values import as_text, checked_name
from registry_client.rollout.store import LeaseLost

__all__ = ["AUDIT_PREFIX", "EpisodeStore", "Judgement"]

# Audit actions of quality events: event.accuracy.drop, event.drift.resolved, ...
AUDIT_PREFIX = "event."
_JUDGED = "_judged_until"  # the end of the last window judged (Unix seconds)


def _iso(unix_seconds: float) -> str:
    return datetime.fromtimestamp(unix_seconds, UTC).isoformat(timespec="seconds")


def _seconds(text: str) -> float:
    """The stored end of the last window judged; 0 (none) when missing or unreadable."""
    try:
        return float(text)
    except ValueError:
        return 0.0


class Judgement:
    """One window's verdicts on a model's subjects, as the leader judged them: the window's
    end (what makes it judged once), the (version, role) pairs the rule serves, how many
    windows in a row open or close an episode, and who judged."""

    def __init__(
        self, model: str, judged_until: float, observations: Iterable[Observation],
        watched: Iterable[tuple[str, str]], *, needed: int, replica: str,
    ) -> None:  # fmt: skip
        self.model = checked_name(model, "model")
        self.judged_until = judged_until
        self.observations = sorted(observations, key=lambda o: o.subject)
        self.watched = frozenset(watched)
        self.needed = needed
        self.replica = replica

    def apply(self, stored: Mapping[str, Episode]) -> tuple[dict[str, Episode], list[QualityEvent]]:
        """The episodes after this window (a default Episode: the field is removed) and the
        events it causes. A stored subject the rule no longer serves ends its episode."""
        after: dict[str, Episode] = {}
        events: list[QualityEvent] = []
        for observation in self.observations:
            subject = observation.subject
            before = stored.get(subject.field, Episode())
            parts = (subject.kind, subject.version, subject.role or "-", subject.dimension or "-")
            episode_id = "/".join((self.model, *parts, f"{self.judged_until:.0f}"))
            new, changed = advance(before, observation.verdict, self.needed, self.judged_until,
                                   episode_id)  # fmt: skip
            after[subject.field] = new
            if changed:
                events.append(self._event(subject, before, new, observation, "recovered"))
        for field, before in stored.items():
            kept = Subject.from_field(field)
            if field in after or (kept is not None and kept.is_watched(self.watched)):
                continue
            after[field] = Episode()
            if kept is not None and before.open:
                role = f" ({kept.role})" if kept.role else ""
                gone = f"version {kept.version}{role} is no longer served"
                unserved = Observation(kept, "", {}, gone)
                events.append(self._event(kept, before, Episode(), unserved, "unserved"))
        return after, events

    def _event(
        self, subject: Subject, before: Episode, after: Episode, observation: Observation,
        resolution: str,
    ) -> QualityEvent:  # fmt: skip
        opened = after.open
        episode = after if opened else before
        name = EVENTS[subject.kind][0 if opened else 1]
        payload: dict[str, object] = {
            "model": self.model, "kind": subject.kind, "version": subject.version,
            "episode": episode.id, "started_at": _iso(episode.since),
            "windows": self.needed, "replica": self.replica,
        }  # fmt: skip
        if subject.role:
            payload["role"] = subject.role
        if subject.dimension:
            payload["dimension"] = subject.dimension
        if not opened:
            payload["resolution"] = resolution
        payload.update(observation.figures)
        if opened:
            reason = f"{observation.summary}; {self.needed} window(s) in a row"
        elif resolution == "recovered":
            reason = f"{observation.summary}; within the margin {self.needed} window(s) in a row"
        else:
            reason = observation.summary
        return QualityEvent(name, payload, reason, before)


class EpisodeStore:
    """The episodes of every model's quality events, through a RegistryClient's pool."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client
        self._keys = client.keys

    def commit(self, judgement: Judgement, *, leader: str, actor: str) -> list[QualityEvent]:
        """Apply `judgement` to the stored episodes and audit its events, in one transaction,
        while the rollout leader's lease holds `leader`; the events written (none when the
        window was judged already). LeaseLost when the lease is not `leader`'s, Conflict when
        the episodes changed meanwhile (judge again), Unreachable without Redis."""
        key = self._keys.quality_events(judgement.model)
        lease = self._keys.rollout_leader

        def write(pipe: Pipeline) -> list[QualityEvent]:
            if as_text(pipe.get(lease)) != leader:
                raise LeaseLost(f"{lease_holder(leader)} no longer holds the rollout"
                                " controller's lease")  # fmt: skip
            fields = {as_text(k): as_text(v) for k, v in pipe.hgetall(key).items()}
            if _seconds(fields.pop(_JUDGED, "")) >= judgement.judged_until:
                return []
            stored = {field: Episode.from_json(text) for field, text in fields.items()}
            after, events = judgement.apply(stored)
            # Written whole (a few fields): subjects back to a default episode go, with no
            # HDEL, which a gateway's Redis user need not have.
            kept = {f: e.to_json() for f, e in {**stored, **after}.items() if e != Episode()}
            if not events and kept == {f: e.to_json() for f, e in stored.items() if e != Episode()}:
                return []  # a window that changes nothing may be judged again: no write
            pipe.multi()
            pipe.delete(key)
            hset(pipe, key, {**kept, _JUDGED: repr(judgement.judged_until)})
            for event in events:
                self._client.audit(pipe, actor, AUDIT_PREFIX + event.name, judgement.model,
                                   json.loads(event.before.to_json()), dict(event.payload),
                                   event.reason)  # fmt: skip
            return events

        return self._client.transaction([lease, key], write, retry=False)

    def episodes(self, model: str) -> dict[Subject, Episode]:
        """The model's stored episodes (open ones and those with a streak), by subject."""
        key = self._keys.quality_events(checked_name(model, "model"))

        def read(pipe: Pipeline) -> dict[str, str]:
            return {as_text(k): as_text(v) for k, v in pipe.hgetall(key).items()}

        found = self._client.transaction([key], read, retry=True)
        return {subject: Episode.from_json(text) for field, text in found.items()
                if (subject := Subject.from_field(field)) is not None}  # fmt: skip

    def events(self, model: str, since_seconds: float, now: float) -> list[dict[str, object]]:
        """The model's quality events audited in the last `since_seconds`, newest first:
        when, who, event, payload."""
        found: list[dict[str, object]] = []
        for entry in self._client.audit_entries(checked_name(model, "model")):
            millis = entry.get("id", "0-0").partition("-")[0]
            if int(millis or 0) / 1000 < now - since_seconds:
                break
            action = entry.get("action", "")
            if not action.startswith(AUDIT_PREFIX):
                continue
            try:
                payload = json.loads(entry.get("after") or "{}")
            except ValueError:
                payload = {}
            found.append({"when": entry.get("when", ""), "who": entry.get("who", ""),
                          "event": action.removeprefix(AUDIT_PREFIX),
                          "reason": entry.get("reason", ""),
                          "payload": payload if isinstance(payload, dict) else {}})  # fmt: skip
        return found

"""Each version's deployment status, derived and never typed: what the model's rule gives it,
what its rollout makes of it, what live replicas report about it, and since when (from the
model's audit).

    primary 90%    the heaviest version of the rule (the rollout's baseline while one runs)
    canary 10%     another version with traffic (the rollout's candidate while one runs)
    shadow 30%     mirrored that share of the rule's requests; answers nobody
    idle           in the rule at weight 0, loaded on every live replica (reachable by pin)
    loading        in the rule at weight 0, still loading on some replica
    registered     in no rule
    retired        taken out of service by an operator (gatectl version retire)

A version some live replica failed to load adds `failed on N replicas`; at weight 0 that is
its whole status. "Since" is when the version's place in the rule (its kind and weight, not
primary against canary, which only the rollout tells) last changed, or when it was
registered, retired or unretired.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registry_client.client import RegistryClient
from registry_client.errors import Rejected
from registry_client.records.rule_documents import RouteRule
from registry_client.rollout.store import RolloutStore
from registry_client.schema import SchemaError, version_sort_key

__all__ = [
    "VersionStatus", "concerns_version", "derive_statuses", "place_in", "read_statuses",
    "read_versions",
]  # fmt: skip

# A version's place in a rule: ("split", weight), ("shadow", percent), ("absent", 0), and
# ("retired", 0) for one an operator retired.
_Place = tuple[str, float]
_ABSENT: _Place = ("absent", 0)
_RETIRED: _Place = ("retired", 0)
# The place each of a version's own audit entries leaves it in.
_LIFECYCLE = {"version.register": _ABSENT, "version.unretire": _ABSENT,
              "version.retire": _RETIRED}  # fmt: skip


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: str
    state: str  # primary, canary, shadow, idle, loading, registered, retired
    percent: float | None  # the share of requests for primary, canary and shadow
    since: str  # the audit's timestamp of the change that gave it this status; "" unknown
    failed_on: int  # live replicas that failed to load it
    replicas: int  # live replicas that report the model
    applied: int  # of those, how many apply the rule's current revision

    @property
    def text(self) -> str:
        """As operators read it: `canary 10%`, `idle`, `failed on 2 replicas`."""
        failed = f"failed on {self.failed_on} replica{'s' if self.failed_on != 1 else ''}"
        if self.failed_on and self.state in ("idle", "loading"):
            return failed
        base = self.state if self.percent is None else f"{self.state} {self.percent:g}%"
        return f"{base}, {failed}" if self.failed_on else base

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.text, "state": self.state,
                "percent": self.percent, "since": self.since, "failed_on": self.failed_on,
                "replicas": self.replicas, "applied": self.applied}  # fmt: skip


def read_versions(client: RegistryClient, model: str) -> dict[str, dict[str, str]]:
    """Every version's stored fields, lowest version first."""
    return {v: client.show_version(model, v) for v in client.list_versions(model)}


def read_statuses(
    client: RegistryClient, model: str, versions: Mapping[str, Mapping[str, str]] | None = None
) -> list[VersionStatus]:
    """Every version's status as the registry and the live replicas tell it now; `versions`
    are their stored fields when the caller read them already (read_versions)."""
    versions = read_versions(client, model) if versions is None else versions
    try:
        state = RolloutStore(client).get(model)
    except Rejected:  # an unreadable rollout document: gatectl rollout status says why
        state = None
    rollout = None
    if state is not None and state.active:
        rollout = (state.plan.baseline, state.plan.candidate)
    replicas = client.replica_status(model)["replicas"]
    return derive_statuses(versions, client.get_route(model), rollout, replicas,
                           client.audit_entries(model))  # fmt: skip


def derive_statuses(
    versions: Mapping[str, Mapping[str, str]],
    rule: RouteRule | None,
    rollout: tuple[str, str] | None,
    replicas: Sequence[Mapping[str, Any]],
    audit: Iterable[Mapping[str, str]],
) -> list[VersionStatus]:
    """Every version's status, lowest version first.

    `versions`: the stored fields by version; `rollout`: (baseline, candidate) of the
    model's active rollout; `replicas`: RegistryClient.replica_status(model)["replicas"];
    `audit`: the model's audit entries, newest first (read only as far as needed)."""
    places = {v: place_in(v, rule) if fields.get("status") != "retired" else _RETIRED
              for v, fields in versions.items()}  # fmt: skip
    since = _since(places, audit)
    revision = None if rule is None else rule.revision
    applied = sum(1 for r in replicas if r.get("applied_revision") == revision)
    heaviest = _heaviest(rule)
    statuses = []
    for version in sorted(versions, key=version_sort_key):
        kind, weight = places[version]
        states = [s.get("state") for r in replicas for s in r.get("version_states", [])
                  if s.get("version") == version]  # fmt: skip
        percent: float | None = weight
        if kind == "split" and weight > 0:
            primary = rollout[0] if rollout is not None else heaviest
            state = "primary" if version == primary else "canary"
        elif kind == "shadow":
            state = "shadow"
        elif kind == "split":
            state, percent = ("loading" if "LOADING" in states or not states else "idle"), None
        else:
            state, percent = ("retired" if kind == "retired" else "registered"), None
        statuses.append(VersionStatus(version, state, percent, since.get(version, ""),
                                      states.count("FAILED"), len(replicas), applied))  # fmt: skip
    return statuses


def place_in(version: str, rule: RouteRule | None) -> _Place:
    """("split", weight), ("shadow", percent) or ("absent", 0)."""
    if rule is None:
        return _ABSENT
    for split in rule.split:
        if split.version == version:
            return ("split", split.weight)
    for shadow in rule.shadows:
        if shadow.version == version:
            return ("shadow", shadow.percent)
    return _ABSENT


def _heaviest(rule: RouteRule | None) -> str | None:
    """The rule's primary without a rollout: the heaviest, the lower version on a tie (the
    newer one is the likelier canary)."""
    if rule is None or not rule.split:
        return None
    ordered = sorted(rule.split, key=lambda s: (-s.weight, version_sort_key(s.version)))
    return ordered[0].version


def _since(places: Mapping[str, _Place], audit: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """When each version took its place: walking the audit back, the oldest entry of the
    newest run that leaves it there. Stops once every version is settled."""
    since: dict[str, str] = {}
    unsettled = set(places)
    for entry in audit:
        if not unsettled:
            break
        action, when = entry.get("action", ""), entry.get("when", "")
        for version in list(unsettled):
            place = places[version]
            if action.startswith("route."):
                if place == _RETIRED:
                    continue  # a retired version is in no rule: only its retirement counts
                try:
                    after = place_in(version, RouteRule.from_json(entry.get("after", "")))
                except SchemaError:
                    continue
                if after == place:
                    since[version] = when
                else:
                    unsettled.discard(version)
            elif action in _LIFECYCLE and concerns_version(entry, version):
                # Registration, retirement and its end each start a place of their own: the
                # version was in no rule before the first, retired before the last.
                if _LIFECYCLE[action] == place:
                    since[version] = when
                unsettled.discard(version)
    return since


def concerns_version(entry: Mapping[str, str], version: str) -> bool:
    """Whether an audit entry of the version's own (register, retire, metrics) is about it."""
    try:
        after = json.loads(entry.get("after") or "{}")
    except ValueError:
        return False
    return isinstance(after, dict) and after.get("version") == version

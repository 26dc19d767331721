"""The revisions of a model's rule a comparison needs: when the current one took effect, and
what the earlier ones, whose traffic a longer window also holds, sent where."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime

from registry_client.client import RegistryClient
from registry_client.records.rule_documents import RouteRule
from registry_client.schema import SchemaError

__all__ = ["Revision", "revisions_of", "took_effect_at"]

# Audit entries read at most to find earlier revisions: a model's rule changes a few times a
# day, and a comparison covers at most a week; a busier audit shows "-" for the rest.
_AUDIT_ENTRIES_READ = 2000


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of the rule: what it served, and when it was written (Unix seconds;
    None when neither the rule nor its audit entry says)."""

    rule: RouteRule
    written_at: float | None


def _parsed(text: str) -> float | None:
    """An ISO 8601 time as records store it, in Unix seconds; None when absent or malformed."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.timestamp()


def _rule_entries(client: RegistryClient, model: str) -> Iterator[tuple[RouteRule, str]]:
    """Each rule the audit kept (newest first) with the time of its entry."""
    for read, entry in enumerate(client.audit_entries(model)):
        if read >= _AUDIT_ENTRIES_READ:
            return
        if not entry.get("action", "").startswith("route.") or not entry.get("after"):
            continue
        try:
            yield RouteRule.from_json(entry["after"]), entry.get("when", "")
        except SchemaError:
            continue  # an entry written by something else: the other revisions still count


def took_effect_at(client: RegistryClient, rule: RouteRule) -> float | None:
    """When the rule's current revision was written: its document's `updated_at`, else the
    time of the audit entry that wrote it; None when neither is known."""
    written = _parsed(rule.updated_at)
    if written is not None:
        return written
    for old, when in _rule_entries(client, rule.model):
        if old.revision == rule.revision:
            return _parsed(when)
    return None


def revisions_of(
    client: RegistryClient, model: str, current: RouteRule | None, wanted: Collection[int]
) -> dict[int, Revision]:
    """The current rule and the `wanted` earlier revisions the audit still has."""
    found: dict[int, Revision] = {}
    if current is not None:
        found[current.revision] = Revision(current, _parsed(current.updated_at))
    missing = set(wanted) - set(found)
    if not missing:
        return found
    for old, when in _rule_entries(client, model):
        if old.revision in missing:
            found[old.revision] = Revision(old, _parsed(old.updated_at) or _parsed(when))
            missing.discard(old.revision)
            if not missing:
                break
    return found

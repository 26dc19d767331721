"""What a restore writes of one model, decided from the export and what Redis holds now.

- A version the export holds that Redis has with another sha256: the model is refused, with
  or without force (versions are immutable).
- Redis's rule older than the export's (a lower revision; none is revision 0): the model is
  made as exported. Each key that differs is replaced whole; a rule, rollout, reference or
  quality-event hash the export does not have is removed. Versions the export does not know
  stay (they are never removed).
- Redis's rule at the export's revision with the same routing (or neither has one): only
  what is missing is written; what Redis has is kept, as it may be newer (a rollout's and
  the quality events' state move on without a rule change). A second restore of the same
  export therefore writes nothing.
- Redis's rule newer than the export's, at the same revision with other routing, or
  unreadable: refused, naming both revisions, unless `force`, which makes it as exported.
- The audit: the exported entries are written with their ids when the model has no audit
  stream; when it has one, its entries are kept and the exported ones skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry_client.backup.document import ModelRecord, VersionRecord
from registry_client.records.rule_documents import RouteRule
from registry_client.schema import SchemaError

__all__ = ["REFUSED", "RESTORED", "UNCHANGED", "ModelPlan", "plan_model"]

RESTORED, UNCHANGED, REFUSED = "restored", "unchanged", "refused"
_EMPTY = VersionRecord(None, {}, [], {})


@dataclass(frozen=True, slots=True)
class ModelPlan:
    """The keys of one model a restore writes (none when refused, and why)."""

    model: str
    refused: str = ""  # why nothing of the model is written
    forced: bool = False  # replaces a rule --force was needed for
    revision_before: int | None = 0  # the rule's revision in Redis (None: unreadable)
    revision_after: int = 0  # the export's
    listed: bool = False  # added to {ns}:models
    fields: bool = False
    version_fields: tuple[str, ...] = ()
    version_scores: tuple[str, ...] = ()
    measurements: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    rule: bool = False  # set, or removed when the export has none
    rollout: bool = False  # the document and the membership of {ns}:rollouts
    quality_events: bool = False
    audit_written: int = 0
    audit_skipped: int = 0

    @property
    def result(self) -> str:
        """RESTORED, UNCHANGED (nothing to write) or REFUSED."""
        return REFUSED if self.refused else RESTORED if self.written() else UNCHANGED

    def written(self) -> list[str]:
        """What is written, in the words the summary and the audit use."""
        versions = sorted({*self.version_fields, *self.version_scores})
        parts = [
            ("model", self.listed or self.fields),
            ("versions " + ",".join(versions), bool(versions)),
            ("measurements " + ",".join(self.measurements), bool(self.measurements)),
            ("references " + ",".join(self.references), bool(self.references)),
            (f"rule revision {self.revision_after}" if self.revision_after else "rule removed",
             self.rule),
            ("rollout", self.rollout),
            ("quality events", self.quality_events),
            (f"audit {self.audit_written} entries", self.audit_written > 0),
        ]  # fmt: skip
        return [text for text, written in parts if written]


def plan_model(model: str, exported: ModelRecord, current: ModelRecord, *,
               force: bool) -> ModelPlan:  # fmt: skip
    """What restoring `exported` over `current` (read with the exported versions) writes."""
    for version, record in exported.versions.items():
        stored = current.versions.get(version, _EMPTY).fields.get("sha256")
        if stored and stored != record.fields["sha256"]:
            return ModelPlan(model, refused=(
                f"model {model!r}: version {version!r} is registered in Redis with sha256"
                f" {stored[:12]}..., the export's with {record.fields['sha256'][:12]}...;"
                " versions are immutable, not even --force replaces one"))  # fmt: skip
    replace, conflict, before, after = _rule_mode(model, exported.rule, current.rule)
    if conflict and not force:
        return ModelPlan(model, refused=f"{conflict}; gatectl restore --force replaces it",
                         revision_before=before, revision_after=after)  # fmt: skip

    def differs(now: object, then: object, empty: object) -> bool:
        return now != then if replace else (now == empty and then != empty)

    versions = {v: (current.versions.get(v, _EMPTY), r) for v, r in exported.versions.items()}
    stream = current.audit_stream
    return ModelPlan(
        model, forced=bool(conflict), revision_before=before, revision_after=after,
        listed=not current.listed, fields=differs(current.fields, exported.fields, {}),
        version_fields=tuple(v for v, (now, then) in versions.items()
                             if differs(now.fields, then.fields, {})),
        version_scores=tuple(v for v, (now, then) in versions.items()
                             if differs(now.score, then.score, None)),
        measurements=tuple(v for v, (now, then) in versions.items()
                           if differs(now.measurements, then.measurements, [])),
        references=tuple(v for v, (now, then) in versions.items()
                         if differs(now.reference, then.reference, {})),
        rule=replace and current.rule != exported.rule,
        rollout=differs(current.rollout, exported.rollout, None) or (
            replace and current.in_rollouts != exported.in_rollouts),
        quality_events=differs(current.quality_events, exported.quality_events, {}),
        audit_written=0 if stream else len(exported.audit),
        audit_skipped=len(exported.audit) if stream else 0,
    )  # fmt: skip


def _rule_mode(
    model: str, exported: str | None, current: str | None
) -> tuple[bool, str, int | None, int]:
    """(replace, conflict, revision in Redis, exported revision): `replace` when the model
    is made as exported, `conflict` says why that needs force ('' when it does not)."""
    ours = None if exported is None else RouteRule.from_json(exported)  # checked on reading
    after = 0 if ours is None else ours.revision
    named = f"the export's revision {after}" + ("" if after else " (no rule)")
    try:
        theirs = None if current is None else RouteRule.from_json(current)
    except SchemaError as exc:
        why = f"model {model!r}: its rule in Redis is unreadable ({exc}); {named}"
        return True, why, None, after
    before = 0 if theirs is None else theirs.revision
    if before < after:
        return True, "", before, after
    if before == after and _routing(theirs) == _routing(ours):
        return False, "", before, after
    relation = "newer than" if before > after else "with other routing than"
    why = f"model {model!r}: its rule in Redis is at revision {before}, {relation} {named}"
    return True, why, before, after


def _routing(rule: RouteRule | None) -> object:
    """What gateways serve of a rule: the same split, shadows and stickiness are the same rule
    whoever wrote it when."""
    return None if rule is None else (rule.split, rule.shadows, rule.sticky)

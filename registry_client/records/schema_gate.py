"""The schema gate: a version joining a rule (route set, rollback) or rolled out over a baseline
must take the same inputs and give the same outputs as the version its callers were built
against (registry_client.records.compatibility), or the write is refused naming each
mismatch. An operator who knows the callers changed too overrides it with a reason, and the
override is audited beside the write."""

from __future__ import annotations

from collections.abc import Sequence

from registry_client.connection import Pipeline
from registry_client.errors import Rejected
from registry_client.records.base import RegistryBase
from registry_client.records.compatibility import VersionSchema, schema_mismatches
from registry_client.records.rule_documents import RouteRule
from registry_client.records.values import as_text
from registry_client.schema import version_sort_key

__all__ = ["SCHEMA_OVERRIDE_ACTION", "SchemaGate", "primary_of"]

SCHEMA_OVERRIDE_ACTION = "schema.override"


def primary_of(rule: RouteRule) -> str | None:
    """The version a rule's callers are built against: its heaviest, the lower on a tie."""
    if not rule.split:
        return None
    return min(rule.split, key=lambda s: (-s.weight, version_sort_key(s.version))).version


class SchemaGate(RegistryBase):
    """Checks made inside a rule-writing transaction, before MULTI."""

    def gate_rule(
        self, pipe: Pipeline, current: RouteRule | None, new: RouteRule,
        allow: bool, reason: str,
    ) -> list[str]:  # fmt: skip
        """The versions `new` adds to `current` (every version but the primary when there is
        no rule yet) checked against the primary callers were built against: the current
        rule's, else the new one's. Returns the mismatches `allow` overrides."""
        reference = primary_of(current if current is not None and current.split else new)
        if reference is None:
            return []
        before = set() if current is None else set(current.versions)
        joining = [v for v in new.versions if v not in before and v != reference]
        return self.gate_versions(pipe, new.model, reference, joining, allow, reason)

    def gate_versions(
        self, pipe: Pipeline, model: str, reference: str,
        versions: Sequence[str], allow: bool, reason: str,
    ) -> list[str]:  # fmt: skip
        """Each of `versions` checked against `reference`; Rejected naming every mismatch
        unless `allow` (which needs a reason), else the mismatches overridden."""
        if not versions:
            return []
        schemas = {v: self._schema(pipe, model, v) for v in {reference, *versions}}
        found = [
            f"version {version} against {reference}: {mismatch}"
            for version in versions
            for mismatch in schema_mismatches(schemas[reference], schemas[version])
        ]
        if found and not allow:
            raise Rejected(
                f"the schema of {model!r} would change for callers built against version"
                f" {reference!r}: {'; '.join(found)}. Route it anyway with"
                " --allow-schema-change and a --reason saying why callers are ready"
            )
        if found and not reason.strip():
            raise Rejected("reason: an override of the schema gate needs one (--reason)")
        return found

    def queue_schema_override(
        self, pipe: Pipeline, actor: str, model: str, overridden: list[str],
        reason: str,
    ) -> None:  # fmt: skip
        """After MULTI: audit the mismatches an operator let through."""
        if overridden:
            self._audit(pipe, actor, SCHEMA_OVERRIDE_ACTION, model, None,
                        {"mismatches": overridden}, reason)  # fmt: skip

    def _schema(self, pipe: Pipeline, model: str, version: str) -> VersionSchema:
        fields = pipe.hgetall(self.keys.version(model, version))
        stored = {as_text(k): as_text(v) for k, v in fields.items()}
        try:
            return VersionSchema.from_record(stored)
        except Rejected as exc:
            raise Rejected(f"version {version!r} of model {model!r}: {exc}") from exc

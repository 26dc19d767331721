"""The routing rule a model's traffic follows, as stored at `{ns}:route:{model}`: a weighted
split over its versions plus shadows, validated with messages naming the field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NamedTuple

from registry_client.schema import (
    MAX_REASON_CHARS,
    SchemaError,
    brief_repr,
    validate_actor,
    validate_name,
    validate_reason,
)

__all__ = [
    "MAX_ROUTE_VERSIONS",
    "MAX_RULE_DOCUMENT_BYTES",
    "MAX_WEIGHT",
    "InvalidRule",
    "RouteRule",
    "Shadow",
    "Split",
]

MAX_ROUTE_VERSIONS = 16  # versions named by one rule (split and shadows together)
# Weights are relative. Sticky routing resolves shares to 1/10,000 (the gateway's 10,000
# buckets), so a finer weight changes nothing; a huge one only loses precision in the float
# an unkeyed request's draw is multiplied by (or overflows it).
MAX_WEIGHT = 10_000
# A rule is a few hundred bytes; anything far larger is not one, and is refused unparsed.
MAX_RULE_DOCUMENT_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Split:
    """One version of the weighted split."""

    version: str
    weight: int


@dataclass(frozen=True, slots=True)
class Shadow:
    """A version mirrored for `percent` of requests; never returned to the caller."""

    version: str
    percent: float


class InvalidRule(NamedTuple):
    """A stored rule document that was refused: why, and the sha256 of its bytes (so the same
    document is reported once however often it is read)."""

    reason: str
    digest: str


@dataclass(frozen=True, slots=True)
class RouteRule:
    """A model's routing rule; `revision` counts committed changes."""

    model: str
    split: tuple[Split, ...]
    shadows: tuple[Shadow, ...] = ()
    sticky: bool = True
    revision: int = 0
    updated_by: str = ""
    updated_at: str = ""
    reason: str = ""

    def validate(self, *, text: bool = True) -> RouteRule:
        """Return self, or raise SchemaError naming the first field that is wrong.

        `text` also checks the characters of `reason` and `updated_by`, as every write does.
        A stored document is read without: a rule is not refused for its comment (gateways
        would keep an older rule), and gatectl escapes such text wherever it prints it."""
        validate_name(self.model, "model")
        if not self.split:
            raise SchemaError("split: expected at least one version")
        seen: set[str] = set()
        for i, entry in enumerate(self.split):
            validate_name(entry.version, f"split[{i}].version")
            weight = entry.weight  # a stored document may hold any JSON value here
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise SchemaError(
                    f"split[{i}].weight: expected an integer, got {brief_repr(weight)}"
                )
            if not 0 <= weight <= MAX_WEIGHT:
                raise SchemaError(
                    f"split[{i}].weight: expected >= 0 and <= {MAX_WEIGHT},"
                    f" got {brief_repr(weight)} for version {entry.version!r}"
                )
            if entry.version in seen:
                raise SchemaError(f"split[{i}].version: {entry.version!r} appears twice")
            seen.add(entry.version)
        if sum(e.weight for e in self.split) <= 0:
            raise SchemaError("split: weights must have a positive sum")
        for i, shadow in enumerate(self.shadows):
            validate_name(shadow.version, f"shadows[{i}].version")
            if shadow.version in seen:
                raise SchemaError(
                    f"shadows[{i}].version: {shadow.version!r} is already in the split or"
                    " shadowed; a version is either served or shadowed, once"
                )
            seen.add(shadow.version)
            percent = shadow.percent  # a stored document may hold any JSON value here
            is_number = isinstance(percent, int | float) and not isinstance(percent, bool)
            if not (is_number and 0 <= percent <= 100):
                raise SchemaError(
                    f"shadows[{i}].percent: expected a number from 0 to 100, got {percent!r}"
                )
        if len(seen) > MAX_ROUTE_VERSIONS:
            raise SchemaError(
                f"a rule names at most {MAX_ROUTE_VERSIONS} versions, got {len(seen)}"
            )
        if text:
            validate_reason(self.reason)
            if self.updated_by:
                validate_actor(self.updated_by, "updated_by")
        elif len(self.reason) > MAX_REASON_CHARS:
            raise SchemaError(f"reason: expected at most {MAX_REASON_CHARS} characters")
        return self

    @property
    def versions(self) -> list[str]:
        """Every version the rule names, split first."""
        return [e.version for e in self.split] + [s.version for s in self.shadows]

    def to_json(self) -> str:
        """The stored document."""
        return json.dumps(
            {
                "model": self.model,
                "revision": self.revision,
                "split": [{"version": e.version, "weight": e.weight} for e in self.split],
                "shadows": [{"version": s.version, "percent": s.percent} for s in self.shadows],
                "sticky": self.sticky,
                "updated_by": self.updated_by,
                "updated_at": self.updated_at,
                "reason": self.reason,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RouteRule:
        """Parse and validate a stored document; SchemaError names what is wrong."""
        if len(text) > MAX_RULE_DOCUMENT_BYTES:
            raise SchemaError(
                f"route document: {len(text)} bytes, expected at most {MAX_RULE_DOCUMENT_BYTES}"
            )
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise SchemaError(f"route document is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise SchemaError("route document: expected a JSON object")
        try:
            rule = cls(
                model=str(doc["model"]),
                split=tuple(Split(str(e["version"]), e["weight"]) for e in doc["split"]),
                shadows=tuple(
                    Shadow(str(s["version"]), s["percent"]) for s in doc.get("shadows", [])
                ),
                sticky=bool(doc.get("sticky", True)),
                revision=int(doc.get("revision", 0)),
                updated_by=str(doc.get("updated_by", "")),
                updated_at=str(doc.get("updated_at", "")),
                reason=str(doc.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SchemaError(f"route document: missing or malformed field {exc}") from exc
        return rule.validate(text=False)

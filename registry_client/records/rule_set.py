"""Every model's rule as one document, so rules can live in git and be reviewed: what `gatectl
get rules -o yaml` writes and `gatectl apply -f` reads.

    format: onnxgate-rules/1
    rules:
      credit:
        revision: 3          # compare-and-set: written only while the rule is at revision 3
        split: {"1": 90, "2": 10}
        shadows: {"3": 5.0}  # optional
        sticky: true         # optional, true

A rule without `revision` is written whatever the stored revision (rule files kept in git leave
it out; `get rules` writes it for an edit-and-apply that must not overwrite a change made
meanwhile). Version names may be written
unquoted where YAML reads them as integers (`1: 90`); anything else that is not a string is
refused, naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry_client.records.rule_documents import RouteRule, Shadow, Split
from registry_client.schema import SchemaError, validate_name

__all__ = ["RULE_SET_FORMAT", "DeclaredRule", "parse_rule_set", "render_rule_set"]

RULE_SET_FORMAT = "onnxgate-rules/1"
_FIELDS = {"revision", "split", "shadows", "sticky"}


@dataclass(frozen=True, slots=True)
class DeclaredRule:
    """One model's rule as a rule set declares it."""

    rule: RouteRule  # model, split, shadows and sticky (revision 0: not the stored one)
    revision: int | None  # the revision it was read at; None: write it whatever is stored

    def routes_like(self, stored: RouteRule | None) -> bool:
        """Whether `stored` routes as this declares (revisions and comments aside)."""
        return stored is not None and (stored.split, stored.shadows, stored.sticky) == (
            self.rule.split, self.rule.shadows, self.rule.sticky)  # fmt: skip


def render_rule_set(rules: Mapping[str, RouteRule]) -> dict[str, Any]:
    """The document of `rules`, models in name order, versions in rule order."""
    document: dict[str, Any] = {}
    for model in sorted(rules):
        rule = rules[model]
        entry: dict[str, Any] = {"revision": rule.revision,
                                 "split": {s.version: s.weight for s in rule.split}}  # fmt: skip
        if rule.shadows:
            entry["shadows"] = {s.version: s.percent for s in rule.shadows}
        entry["sticky"] = rule.sticky
        document[model] = entry
    return {"format": RULE_SET_FORMAT, "rules": document}


def parse_rule_set(document: object) -> dict[str, DeclaredRule]:
    """Model -> its declared rule, each validated as a stored rule is; SchemaError names the
    first field that is wrong (`rules.credit.split.2: ...`)."""
    if not isinstance(document, dict):
        raise SchemaError(f"a rule set is a mapping with format and rules, got {_kind(document)}")
    if document.get("format") != RULE_SET_FORMAT:
        raise SchemaError(f"format: expected {RULE_SET_FORMAT!r}, got {document.get('format')!r}")
    unknown = sorted(map(str, set(document) - {"format", "rules"}))
    if unknown:
        raise SchemaError(f"unknown field(s) {unknown}; a rule set has format and rules")
    rules = document.get("rules")
    if not isinstance(rules, dict):
        raise SchemaError(f"rules: expected a mapping of model to rule, got {_kind(rules)}")
    declared = {}
    for model, entry in rules.items():
        where = f"rules.{model}"
        name = _name(model, "rules", "a model name")
        declared[name] = _declared(name, entry, where)
    return declared


def _declared(model: str, entry: object, where: str) -> DeclaredRule:
    if not isinstance(entry, dict):
        raise SchemaError(f"{where}: expected a mapping with split, got {_kind(entry)}")
    unknown = set(map(str, entry)) - _FIELDS
    if unknown:
        raise SchemaError(
            f"{where}: unknown field(s) {sorted(unknown)}; expected {sorted(_FIELDS)}"
        )
    revision = entry.get("revision")
    if revision is not None and (type(revision) is not int or revision < 0):
        raise SchemaError(f"{where}.revision: expected a revision number, got {revision!r}")
    sticky = entry.get("sticky", True)
    if not isinstance(sticky, bool):
        raise SchemaError(f"{where}.sticky: expected true or false, got {sticky!r}")
    split = [Split(version, int(_number(weight, f"{where}.split.{version}", int)))
             for version, weight in _versions(entry.get("split"), f"{where}.split")]  # fmt: skip
    shadows = [
        Shadow(version, float(_number(percent, f"{where}.shadows.{version}", float)))
        for version, percent in _versions(entry.get("shadows", {}), f"{where}.shadows")
    ]
    rule = RouteRule(model, tuple(split), tuple(shadows), sticky)
    try:
        rule.validate()
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc}") from None
    return DeclaredRule(rule, revision)


def _versions(mapping: object, where: str) -> list[tuple[str, object]]:
    if not isinstance(mapping, dict):
        raise SchemaError(f"{where}: expected a mapping of version to value, got {_kind(mapping)}")
    return [(_name(version, where, "a version name"), value) for version, value in mapping.items()]


def _name(key: object, where: str, what: str) -> str:
    """A model or version name; YAML reads `1:` as an integer, which names version "1"."""
    if type(key) is int and key >= 0:
        key = str(key)
    if not isinstance(key, str):
        raise SchemaError(f"{where}: {key!r} is not {what} (quote it)")
    try:
        validate_name(key, what)
    except SchemaError as exc:
        raise SchemaError(f"{where}.{key}: {exc}") from None
    return key


def _number(value: object, where: str, kind: type[int] | type[float]) -> int | float:
    allowed = (int,) if kind is int else (int, float)
    if type(value) not in allowed:
        expected = "a whole number" if kind is int else "a number"
        raise SchemaError(f"{where}: expected {expected}, got {value!r}")
    return value  # type: ignore[return-value]  # an int or float, checked above


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__

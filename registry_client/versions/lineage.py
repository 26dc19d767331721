"""Where a version came from: the lineage it was registered with (its parent version, the
training data and its hash, the code revision, the experiment run), checked, and walked back
through its parents."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from registry_client.errors import NotFound, Rejected
from registry_client.schema import is_valid_name, text_problem

__all__ = ["LINEAGE_FIELDS", "MAX_CHAIN", "lineage_chain", "parent_of", "validate_lineage"]

LINEAGE_FIELDS = {
    "parent": "the version it was trained from: VERSION of this model, or MODEL:VERSION",
    "data": "the training data's location (URI)",
    "data_sha256": "the sha256 of the training data",
    "code": "the code revision that trained it (a git commit, a tag)",
    "run": "the experiment run that produced it (an MLflow run id, a pipeline run)",
}
MAX_CHAIN = 100  # parents followed back at most
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_CHARS = 500


def validate_lineage(lineage: Mapping[str, str]) -> dict[str, str]:
    """The lineage as stored, or Rejected naming the field: known fields only, text without
    control characters, a sha256 of 64 lowercase hex digits, a parent that is a name."""
    for field, value in lineage.items():
        if field not in LINEAGE_FIELDS:
            raise Rejected(f"lineage.{field}: unknown field; expected one of"
                           f" {', '.join(LINEAGE_FIELDS)}")  # fmt: skip
        problem = text_problem(value, _MAX_CHARS)
        if problem is None and not value:
            problem = "expected at least 1 character"
        if problem is not None:
            raise Rejected(f"lineage.{field}: {problem}")
    if "data_sha256" in lineage and not _SHA256.fullmatch(lineage["data_sha256"]):
        raise Rejected(f"lineage.data_sha256: expected 64 lowercase hex digits, got"
                       f" {lineage['data_sha256']!r}")  # fmt: skip
    if "parent" in lineage:
        parent_model, parent_version = parent_of("", lineage["parent"])
        if not all(is_valid_name(n) for n in (parent_model or "x", parent_version)):
            raise Rejected(f"lineage.parent: expected VERSION or MODEL:VERSION, got"
                           f" {lineage['parent']!r}")  # fmt: skip
    return dict(sorted(lineage.items()))


def parent_of(model: str, parent: str) -> tuple[str, str]:
    """(model, version) a lineage's parent names; a bare version is of `model`."""
    head, sep, tail = parent.partition(":")
    return (head, tail) if sep else (model, parent)


def lineage_chain(
    show_version: Callable[[str, str], Mapping[str, str]], model: str, version: str
) -> list[dict[str, str]]:
    """The version and its ancestors, newest first: model, version, sha256, created_at and
    the lineage fields. `show_version(model, version)` reads a version's stored fields
    (RegistryClient.show_version). A parent no longer registered ends the chain with an
    entry saying so."""
    chain: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    current: tuple[str, str] | None = (model, version)
    while current is not None and current not in seen and len(chain) < MAX_CHAIN:
        seen.add(current)
        try:
            fields = show_version(*current)
        except NotFound:
            chain.append({"model": current[0], "version": current[1], "missing": "not registered"})
            break
        lineage = json.loads(fields.get("lineage") or "{}")
        chain.append({"model": current[0], "version": current[1],
                      "sha256": fields.get("sha256", ""),
                      "created_at": fields.get("created_at", ""), **lineage})  # fmt: skip
        parent = lineage.get("parent")
        current = parent_of(current[0], parent) if parent else None
    return chain

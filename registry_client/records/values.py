"""Helpers for the values stored records hold: Redis replies as text, checked names, the time
every record is stamped with, the versioned JSON envelope of windowed documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from registry_client.errors import Rejected
from registry_client.schema import SchemaError, validate_name

__all__ = ["as_text", "checked_name", "read_versioned", "timestamp"]


def as_text(value: bytes | str | None) -> str:
    """A Redis reply as text: bytes decoded as UTF-8, None (no such key or field) as ''."""
    return value.decode() if isinstance(value, bytes) else (value or "")


def checked_name(name: str, what: str) -> str:
    """Return name when it follows the naming rule, else raise Rejected saying what was
    expected (`what` names the field: "model", "version", ...)."""
    try:
        return validate_name(name, what)
    except SchemaError as exc:
        raise Rejected(str(exc)) from exc


def timestamp() -> str:
    """Now, as records store it: ISO 8601 in UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def read_versioned(
    payload: str | bytes, version: int, what: str, error: type[ValueError]
) -> dict[str, Any]:
    """The JSON object in `payload` written in format `version` (statistics, sketch and
    quality windows carry one); else `error` naming `what`."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise error(f"{what} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != version:
        raise error(f"{what}: field 'format' is not {version}")
    return doc

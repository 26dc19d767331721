"""Helpers for the values stored records hold: Redis replies as text, checked names, the time
every record is stamped with."""

from __future__ import annotations

from datetime import UTC, datetime

from registry_client.errors import Rejected
from registry_client.schema import SchemaError, validate_name

__all__ = ["as_text", "checked_name", "timestamp"]


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

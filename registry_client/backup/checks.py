"""Checks of the values of an export document read back: each failure is Rejected naming the
value's path in the document (a JSON pointer such as `/models/credit/rule`)."""

from __future__ import annotations

import math

from registry_client.errors import Rejected
from registry_client.schema import SchemaError, brief_repr, validate_name

__all__ = ["at", "expected", "finite", "json_object", "name", "only_fields", "text", "texts"]


def at(path: str, key: str) -> str:
    """The JSON pointer of `key` in the object at `path`."""
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def expected(path: str, what: str, value: object) -> Rejected:
    """The error for the value at `path`, which is not `what`."""
    return Rejected(f"export document {path or '/'}: expected {what}, got {brief_repr(value)}")


def finite(value: object) -> float | None:
    """The number as a float; None when it is not a finite number (JSON allows NaN and
    integers no float holds, and Redis refuses such a score mid-transaction)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def json_object(value: object, path: str) -> dict[str, object]:
    """The value as an object with text keys, or Rejected."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise expected(path, "an object", value)
    return value


def only_fields(doc: dict[str, object], known: tuple[str, ...], path: str, *,
                required: bool = False) -> None:  # fmt: skip
    """Refuse a field the format does not have (a typo in an edited document would otherwise
    be dropped unnoticed) and, when `required`, one it lacks."""
    for key in doc:
        if key not in known:
            raise Rejected(f"export document {at(path, key)}: not a field of this format")
    for key in known if required else ():
        if key not in doc:
            raise Rejected(f"export document {at(path, key)}: missing")


def text(value: object, path: str) -> str:
    """The value as text, or Rejected."""
    if not isinstance(value, str):
        raise expected(path, "text", value)
    return value


def texts(value: object, path: str) -> dict[str, str]:
    """The value as an object of texts (a hash as stored), or Rejected naming the first
    field that is not text."""
    doc = json_object(value, path)
    found = {key: item for key, item in doc.items() if isinstance(item, str)}
    if len(found) < len(doc):  # the path of the one that is not text, only then
        key = next(key for key in doc if key not in found)
        raise expected(at(path, key), "text", doc[key])
    return found


def name(value: str, path: str) -> str:
    """The value when it follows the naming rule (schema.NAME_RULE), or Rejected."""
    try:
        return validate_name(value, "name")
    except SchemaError as exc:
        raise Rejected(f"export document {path}: {exc}") from exc

"""Names and documents shared by the registry client and the gateway."""

from __future__ import annotations

import re

__all__ = ["NAME_PATTERN", "is_valid_name", "version_sort_key"]

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_NAME = re.compile(NAME_PATTERN)


def is_valid_name(name: str) -> bool:
    """Tell whether a model or version name is allowed (also keeps names path-safe)."""
    return _NAME.fullmatch(name) is not None and ".." not in name


def version_sort_key(version: str) -> tuple[int, int, str]:
    """Order versions: numeric ones by value, then the others by name; the last is highest."""
    if version.isdigit():
        return (0, int(version), "")
    return (1, 0, version)

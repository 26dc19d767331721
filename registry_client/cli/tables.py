"""Aligned plain-text tables, as every gatectl command prints them, and the escaping of what
gatectl prints but did not write itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from registry_client.schema import is_unsafe_character

__all__ = ["print_table", "printable"]


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(value: object) -> str:
    """str(value) safe for a terminal: each control or format character (ESC, BEL, CR, U+202E
    and the others schema.is_unsafe_character names) written as a `\\x1b`-style or `\\u202e`
    escape. Anything read from Redis is shown through this: any writer may have put it there."""
    text = str(value)
    if text.isprintable():  # nothing unsafe in it: the common case, without a scan
        return text
    return "".join(_escape(c) if is_unsafe_character(c) else c for c in text)


def print_table(rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Print `rows` (the header first) in columns two spaces apart, left-aligned; every cell
    through printable()."""
    cells = [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)

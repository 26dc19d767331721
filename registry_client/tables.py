"""Aligned plain-text tables, as every gatectl command prints them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

__all__ = ["print_table"]


def print_table(rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Print `rows` (the header first) in columns two spaces apart, left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)

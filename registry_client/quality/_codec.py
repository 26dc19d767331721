"""The checks and helpers shared by the stored quality formats: every reader names the field it
found malformed, and every sparse cell whose weight becomes exactly 0 is dropped, so an
emptied state serialises as a fresh one."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Hashable, Mapping
from typing import ClassVar, TypeVar

from registry_client.records.values import read_versioned

__all__ = [
    "QualityFormatError",
    "Sums",
    "bump",
    "class_index",
    "compact",
    "finite",
    "merge_cells",
    "read_bins",
    "read_cells",
    "read_kind",
    "read_number",
    "read_rows",
]

K = TypeVar("K", bound=Hashable)


class QualityFormatError(ValueError):
    """A stored quality state or window that this version of the format cannot read; the
    message names the malformed field."""


def finite(name: str, value: float) -> float:
    """`value` as a float; ValueError naming `name` when it is NaN or infinite."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not a finite number: {value!r}")
    return number


def bump(cells: dict[K, float], key: K, weight: float) -> None:
    """Add `weight` to a sparse cell, dropping the cell when it becomes exactly 0."""
    total = cells.get(key, 0.0) + weight
    if total == 0.0:
        cells.pop(key, None)
    else:
        cells[key] = total


def merge_cells(cells: dict[K, float], other: Mapping[K, float]) -> None:
    """Add every cell of `other` into `cells`, dropping those that become exactly 0."""
    for key, weight in other.items():
        bump(cells, key, weight)


def compact(value: float) -> float | int:
    """A weight as JSON writes it shortest: integral floats as integers (exact below 2**53)."""
    return int(value) if value.is_integer() and abs(value) < 2.0**53 else value


def read_number(doc: Mapping[str, object], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QualityFormatError(f"field {name!r} is not a number: {str(value)[:40]!r}")
    if not math.isfinite(value):
        raise QualityFormatError(f"field {name!r} is not finite: {value!r}")
    return float(value)


def read_bins(doc: Mapping[str, object], name: str, size: int) -> dict[int, float]:
    """A sparse histogram stored as {"bin": weight} with bins in [0, size)."""
    stored = doc.get(name)
    if not isinstance(stored, Mapping):
        raise QualityFormatError(f"field {name!r} is not an object of bin -> weight")
    bins: dict[int, float] = {}
    for key, weight in stored.items():
        index = _integer(key)
        if index is None or not 0 <= index < size:
            raise QualityFormatError(f"field {name!r} has bin {key!r}, not in [0, {size})")
        bump(bins, index, read_number({name: weight}, name))
    return bins


def _integer(key: object) -> int | None:
    if not isinstance(key, str) or not re.fullmatch(r"-?[0-9]+", key):
        return None
    return int(key)


def read_kind(doc: object, kind: str) -> Mapping[str, object]:
    """`doc` as a mapping whose field "k" is `kind`."""
    if not isinstance(doc, Mapping):
        raise QualityFormatError(f"quality state is not an object: {type(doc).__name__}")
    if doc.get("k") != kind:
        raise QualityFormatError(f"field 'k' is {str(doc.get('k'))[:40]!r}, not {kind!r}")
    return doc


def class_index(name: str, value: int, limit: int) -> int:
    """`value` as a class index in [0, limit); ValueError naming `name` otherwise."""
    index = operator.index(value)  # numpy integers pass, floats do not
    if not 0 <= index < limit:
        raise ValueError(f"{name} {index} is not a class index in [0, {limit})")
    return index


def read_cells(doc: Mapping[str, object], name: str, limit: int) -> dict[tuple[int, int], float]:
    """A sparse matrix stored as [[row, column, weight], ...] with indices in [0, limit)."""
    stored = doc.get(name)
    if not isinstance(stored, list):
        raise QualityFormatError(f"field {name!r} is not a list of [row, column, weight]")
    cells: dict[tuple[int, int], float] = {}
    for cell in stored:
        if not isinstance(cell, list) or len(cell) != 3:
            raise QualityFormatError(f"field {name!r} holds {str(cell)[:40]!r}, not [r, c, w]")
        row, column, weight = cell
        for index in (row, column):
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < limit:
                raise QualityFormatError(f"field {name!r} has index {index!r}, not in [0, {limit})")
        bump(cells, (row, column), read_number({name: weight}, name))
    return cells


class Sums:
    """The scalar weighted sums of a state kind: merged by addition, stored under short keys."""

    __slots__ = ()
    SUMS: ClassVar[tuple[tuple[str, str], ...]]  # (attribute, JSON key)

    def _merge_sums(self, other: Sums) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for attr, _ in self.SUMS:
            setattr(self, attr, getattr(self, attr) + getattr(other, attr))

    def _zero_sums(self) -> None:
        for attr, _ in self.SUMS:
            setattr(self, attr, 0.0)

    def _sums_json(self) -> dict[str, object]:
        return {key: compact(getattr(self, attr)) for attr, key in self.SUMS}

    @classmethod
    def _read_sums(cls, doc: Mapping[str, object]) -> dict[str, float]:
        return {attr: read_number(doc, key) for attr, key in cls.SUMS}


def read_rows(
    payload: str | bytes, version: int, width: int
) -> list[tuple[tuple[str, ...], object]]:
    """The rows of a stored window {"format": version, "states": [[*key, state], ...]}: each
    key is `width` strings; the states are returned unread."""
    doc = read_versioned(payload, version, "quality window", QualityFormatError)
    stored = doc.get("states")
    if not isinstance(stored, list):
        raise QualityFormatError("field 'states' is not a list")
    rows: list[tuple[tuple[str, ...], object]] = []
    for row in stored:
        key = row[:width] if isinstance(row, list) and len(row) == width + 1 else None
        if key is None or not all(isinstance(part, str) for part in key):
            raise QualityFormatError(f"field 'states' holds {str(row)[:60]!r}, not [*key, state]")
        rows.append((tuple(key), row[width]))
    return rows

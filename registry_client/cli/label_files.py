"""Label files for `gatectl labels import`, read a row at a time, each row checked as
RegistryClient.put_labels checks it and placed (line and column, or row and array) when bad.

CSV: `request_id,label[,weight]`, UTF-8. The first row is a header when it names a column
(`request_id`, `label`, `weight`); its columns are then matched by name, in any order. Without
one, the columns are request_id, label and optionally weight, in that order. An empty weight
is 1; blank lines are skipped.

.npz: one-dimensional arrays `request_id` (strings, or integers), `label` and optionally
`weight` (numbers), of one length; arrays saved as objects are refused (they need pickle).

Either is read a block at a time, never whole: a file of any size is checked and imported in
bounded memory.
"""

from __future__ import annotations

import abc
import csv
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from registry_client.errors import Rejected
from registry_client.quality.labels import Label, label_problem
from registry_client.schema import brief_repr

__all__ = ["COLUMNS", "LabelFile", "Row", "open_label_file"]

COLUMNS = ("request_id", "label", "weight")
_FIELD_COLUMNS = {"request_id": "request_id", "value": "label", "weight": "weight"}
_ID_KINDS, _NUMBER_KINDS = "USiu", "biuf"
_BLOCK_BYTES = 1 << 20  # of each .npz array read at a time


@dataclass(frozen=True, slots=True)
class Row:
    """One row: its label, or where it is and what is wrong with it."""

    label: Label | None
    where: str = ""  # "line 7, column 2 (label)" or "row 6, array label"
    problem: str = ""


class LabelFile(abc.ABC):
    """A file's rows; each `rows()` reads it again from the start. `done` is the share of
    the file the current reading has passed, of `size` bytes (for progress)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.done = 0.0

    @abc.abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every row, in the file's order; Rejected when the file cannot be read on."""


def open_label_file(path: Path) -> LabelFile:
    """The reader for `path` by its suffix: .csv or .npz. Rejected for a file that is not
    there, not readable as such, or whose layout is wrong (header, arrays)."""
    if not path.is_file():
        raise Rejected(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _CsvFile(path)
    if suffix == ".npz":
        return _NpzFile(path)
    raise Rejected(f"{path}: expected a .csv or .npz file")


def _row(
    request_id: str, value: str | float, weight: str | float, where: Callable[[str], str]
) -> Row:
    """The row for raw cells; `where(column)` places a column ("line 3, column 2 (label)"),
    asked only of a bad row (placing every row costs a large file seconds)."""
    numbers = []
    for column, cell in (("label", value), ("weight", weight)):
        try:
            numbers.append(float(cell))
        except ValueError:
            return Row(None, where(column), f"expected a number, got {brief_repr(cell)}")
    label = Label(request_id, numbers[0], numbers[1])
    problem = label_problem(label)
    if problem is None:
        return Row(label)
    field, expected = problem
    column = _FIELD_COLUMNS[field]
    given = {"request_id": request_id, "label": value, "weight": weight}[column]
    return Row(None, where(column), f"{expected}, got {brief_repr(given)}")


class _CsvFile(LabelFile):
    def rows(self) -> Iterator[Row]:
        self.done = 0.0
        size = max(self.path.stat().st_size, 1)
        read = 0
        with self.path.open("rb") as handle:

            def lines() -> Iterator[str]:
                nonlocal read
                for number, raw in enumerate(handle, start=1):
                    read += len(raw)
                    try:
                        yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                    except UnicodeDecodeError as exc:
                        raise Rejected(f"{self.path}: line {number}: not UTF-8 text"
                                       f" ({exc.reason} at byte {exc.start})") from exc  # fmt: skip

            reader = csv.reader(lines())
            columns: dict[str, int] | None = None
            try:
                for cells in reader:
                    self.done = read / size
                    if not cells:
                        continue
                    if columns is None:
                        columns, header = self._columns(cells, reader.line_num)
                        if header:
                            continue
                    yield self._row(cells, columns, reader.line_num)
            except csv.Error as exc:
                raise Rejected(f"{self.path}: line {reader.line_num}: {exc}") from exc
        self.done = 1.0

    def _columns(self, first: list[str], line: int) -> tuple[dict[str, int], bool]:
        """Column name -> index, and whether `first` is a header row (it names a column)."""
        names = [c.strip() for c in first]
        if not set(names) & set(COLUMNS):
            if len(first) not in (2, 3):
                raise Rejected(f"{self.path}: line {line}: {len(first)} columns; expected"
                               " request_id,label[,weight] (2 or 3)")  # fmt: skip
            return {name: index for index, name in enumerate(COLUMNS[: len(first)])}, False
        unknown = [n for n in names if n not in COLUMNS]
        missing = [n for n in COLUMNS[:2] if n not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise Rejected(
                f"{self.path}: line {line}: header {brief_repr(','.join(names), 80)}; expected"
                " the columns request_id and label, optionally weight, each once"
            )
        return {name: index for index, name in enumerate(names)}, True

    def _row(self, cells: list[str], columns: dict[str, int], line: int) -> Row:
        if len(cells) != len(columns):
            expected = ",".join(sorted(columns, key=columns.__getitem__))
            return Row(None, f"line {line}", f"{len(cells)} columns; expected {expected}")

        def where(name: str) -> str:
            return f"line {line}, column {columns[name] + 1} ({name})"

        weight = cells[columns["weight"]] if "weight" in columns else ""
        return _row(cells[columns["request_id"]], cells[columns["label"]],
                    weight if weight.strip() else 1.0, where)  # fmt: skip


class _NpzFile(LabelFile):
    """The archive's arrays read side by side, a block of rows at a time (np.load would read
    each whole)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._arrays = self._layout()

    def _refused(self, exc: Exception | str) -> Rejected:
        return Rejected(f"{self.path}: not a readable .npz of plain arrays: {exc}")

    def _layout(self) -> dict[str, tuple[str, np.dtype[np.generic], int]]:
        """Array name -> (member in the zip, dtype, length), checked as np.load would be."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                members = {n.removesuffix(".npy"): n for n in archive.namelist()}
                names = set(members)
                unknown, missing = names - set(COLUMNS), set(COLUMNS[:2]) - names
                if unknown or missing:
                    raise Rejected(f"{self.path}: arrays {sorted(names)}; expected request_id"
                                   " and label, optionally weight")  # fmt: skip
                arrays = {}
                for name in sorted(names):
                    with archive.open(members[name]) as member:
                        shape, dtype = self._header(member)
                    arrays[name] = (members[name], dtype, shape)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise self._refused(exc) from exc
        for name, (_, dtype, shape) in arrays.items():
            kinds = _ID_KINDS if name == "request_id" else _NUMBER_KINDS
            if len(shape) != 1 or dtype.kind not in kinds:
                what = "strings" if name == "request_id" else "numbers"
                raise Rejected(f"{self.path}: array {name}: expected one dimension of {what},"
                               f" got shape {shape} of {dtype}")  # fmt: skip
        lengths = {name: shape[0] for name, (_, _, shape) in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise Rejected(f"{self.path}: arrays of different lengths {lengths}")
        return {name: (member, dtype, lengths[name]) for name, (member, dtype, _) in arrays.items()}

    def _header(self, member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[np.generic]]:
        """The .npy header's shape and dtype; the member is left at the array's first byte."""
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise self._refused(f".npy format version {version[0]}.{version[1]}")
        if dtype.hasobject:  # np.load's own words for what it refuses
            raise self._refused("Object arrays cannot be loaded when allow_pickle=False")
        return shape, dtype

    def _blocks(
        self, archive: zipfile.ZipFile, name: str, rows_per_block: int
    ) -> Iterator[np.ndarray]:
        member, dtype, length = self._arrays[name]
        with archive.open(member) as stream:
            self._header(stream)
            for start in range(0, length, rows_per_block):
                count = min(rows_per_block, length - start)
                raw = stream.read(count * dtype.itemsize)
                if len(raw) != count * dtype.itemsize:
                    raise self._refused(f"array {name} ends after {start} rows of {length}")
                yield np.frombuffer(raw, dtype=dtype)

    def rows(self) -> Iterator[Row]:
        self.done = 0.0
        count = next(iter(self._arrays.values()))[2]
        # The same rows from every array at once: as many as the widest array's block holds.
        widest = max(dtype.itemsize for _, dtype, _ in self._arrays.values())
        rows_per_block = max(1, _BLOCK_BYTES // max(widest, 1))
        names = [name for name in COLUMNS if name in self._arrays]
        try:
            with zipfile.ZipFile(self.path) as archive:
                streams = [self._blocks(archive, name, rows_per_block) for name in names]
                index = 0
                for block in zip(*streams, strict=True):
                    yield from self._block_rows(index, block, count)
                    index += len(block[0])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise self._refused(exc) from exc
        self.done = 1.0

    def _block_rows(self, first: int, block: tuple[np.ndarray, ...], count: int) -> Iterator[Row]:
        ids, labels = block[0], block[1]
        weights = block[2] if len(block) > 2 else None
        for offset in range(len(ids)):
            index = first + offset
            self.done = index / max(count, 1)

            def where(name: str, index: int = index) -> str:
                return f"row {index}, array {name}"

            raw = ids[offset].item()  # numpy scalars as Python's: messages quote them plainly
            try:
                request_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                yield Row(None, where("request_id"), f"expected UTF-8, got {brief_repr(raw)}")
                continue
            weight = 1.0 if weights is None else weights[offset].item()
            yield _row(request_id, labels[offset].item(), weight, where)

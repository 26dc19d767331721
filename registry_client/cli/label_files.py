"""Label files for `gatectl labels import`, read a row at a time, each row checked as
RegistryClient.put_labels checks it and placed (line and column, or row and array) when bad.

CSV: `request_id,label[,weight]`, UTF-8. The first row is a header when it names a column
(`request_id`, `label`, `weight`); its columns are then matched by name, in any order. Without
one, the columns are request_id, label and optionally weight, in that order. An empty weight
is 1; blank lines are skipped.

.npz: one-dimensional arrays `request_id` (strings, or integers), `label` and optionally
`weight` (numbers), of one length; arrays saved as objects are refused (they need pickle).
"""

from __future__ import annotations

import abc
import csv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from registry_client.errors import Rejected
from registry_client.quality.labels import Label, label_problem
from registry_client.schema import brief_repr

__all__ = ["COLUMNS", "LabelFile", "Row", "open_label_file"]

COLUMNS = ("request_id", "label", "weight")
_FIELD_COLUMNS = {"request_id": "request_id", "value": "label", "weight": "weight"}
_ID_KINDS, _NUMBER_KINDS = "USiu", "biuf"


@dataclass(frozen=True, slots=True)
class Row:
    """One row: its label, or where it is and what is wrong with it."""

    label: Label | None
    where: str = ""  # "line 7, column 2 (label)" or "row 6, array label"
    problem: str = ""


class LabelFile(abc.ABC):
    """A file's rows; each `rows()` reads it again from the start. `done` is the share of
    the file the current reading has passed (for progress)."""

    def __init__(self, path: Path) -> None:
        self.path = path
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


def _row(request_id: str, value: str | float, weight: str | float, where: dict[str, str]) -> Row:
    """The row for raw cells; `where` places each column ("line 3, column 2 (label)")."""
    numbers = []
    for column, cell in (("label", value), ("weight", weight)):
        try:
            numbers.append(float(cell))
        except ValueError:
            return Row(None, where[column], f"expected a number, got {brief_repr(cell)}")
    label = Label(request_id, numbers[0], numbers[1])
    problem = label_problem(label)
    if problem is None:
        return Row(label)
    field, expected = problem
    column = _FIELD_COLUMNS[field]
    given = {"request_id": request_id, "label": value, "weight": weight}[column]
    return Row(None, where[column], f"{expected}, got {brief_repr(given)}")


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
        where = {name: f"line {line}, column {index + 1} ({name})"
                 for name, index in columns.items()}  # fmt: skip
        weight = cells[columns["weight"]] if "weight" in columns else ""
        return _row(cells[columns["request_id"]], cells[columns["label"]],
                    weight if weight.strip() else 1.0, where)  # fmt: skip


class _NpzFile(LabelFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._arrays = self._load()

    def _load(self) -> dict[str, np.ndarray]:
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                names = set(archive.files)
                unknown, missing = names - set(COLUMNS), set(COLUMNS[:2]) - names
                if unknown or missing:
                    raise Rejected(f"{self.path}: arrays {sorted(names)}; expected request_id"
                                   " and label, optionally weight")  # fmt: skip
                arrays = {name: archive[name] for name in sorted(names)}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            # numpy says "Object arrays cannot be loaded when allow_pickle=False" for objects.
            raise Rejected(f"{self.path}: not a readable .npz of plain arrays: {exc}") from exc
        for name, array in arrays.items():
            kinds = _ID_KINDS if name == "request_id" else _NUMBER_KINDS
            if array.ndim != 1 or array.dtype.kind not in kinds:
                what = "strings" if name == "request_id" else "numbers"
                raise Rejected(f"{self.path}: array {name}: expected one dimension of {what},"
                               f" got shape {array.shape} of {array.dtype}")  # fmt: skip
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise Rejected(f"{self.path}: arrays of different lengths {lengths}")
        return arrays

    def rows(self) -> Iterator[Row]:
        ids, labels = self._arrays["request_id"], self._arrays["label"]
        weights = self._arrays.get("weight")
        count = max(len(ids), 1)
        for index in range(len(ids)):
            self.done = index / count
            where = {name: f"row {index}, array {name}" for name in COLUMNS}
            raw = ids[index].item()  # numpy scalars as Python's: messages quote them plainly
            try:
                request_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                yield Row(None, where["request_id"], f"expected UTF-8, got {brief_repr(raw)}")
                continue
            weight = 1.0 if weights is None else weights[index].item()
            yield _row(request_id, labels[index].item(), weight, where)
        self.done = 1.0

"""A version's model card: the data it was trained and evaluated on, how it was built, what it
is for and where it falls short; read from JSON or YAML, validated into a plain JSON-able dict
whose error messages name the field (card.training_data.rows)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from registry_client.errors import Rejected
from registry_client.schema import NAME_RULE, brief_repr, is_valid_name, text_problem

__all__ = [
    "CARD_FIELDS",
    "CARD_SUFFIXES",
    "DATASET_FIELDS",
    "MAX_CARD_BYTES",
    "MAX_CONTACT_CHARS",
    "MAX_EVALUATED_SEGMENTS",
    "MAX_PROSE_CHARS",
    "MAX_ROWS",
    "MAX_URI_CHARS",
    "TIME_RANGE_FIELDS",
    "load_card",
    "validate_card",
]

CARD_SUFFIXES = (".json", ".yaml", ".yml")
MAX_CARD_BYTES = 256 * 1024  # a card is a page of prose, not a dataset
MAX_PROSE_CHARS = 4_000  # a few paragraphs; the card is kept in the version's record
MAX_URI_CHARS = 2_048
MAX_CONTACT_CHARS = 500
MAX_EVALUATED_SEGMENTS = 64
MAX_ROWS = 2**63 - 1  # what an int64 holds, wherever the card is read again

CARD_FIELDS: dict[str, str] = {
    "training_data": "the data the version was trained on (fields: DATASET_FIELDS)",
    "evaluation_data": "the held-out data it was evaluated on (fields: DATASET_FIELDS)",
    "feature_engineering": "how its inputs are derived from the raw data",
    "algorithm": "the learning algorithm, its library and main hyperparameters",
    "intended_use": "what it is for, and for whom",
    "limitations": "where it is known to do poorly, or must not be used",
    "evaluated_segments": "segments its evaluation was broken down by (e.g. gender, age_band)",
    "contact": "who answers questions about it",
}
DATASET_FIELDS: dict[str, str] = {
    "uri": "where the dataset is (a URI or a path)",
    "sha256": "the SHA-256 of its content, 64 lowercase hexadecimal digits",
    "rows": "how many rows (examples) it holds",
    "time_range": "the period its rows come from (fields: TIME_RANGE_FIELDS)",
    "description": "what it is, and how it was sampled and labelled",
}
TIME_RANGE_FIELDS: dict[str, str] = {
    "start": "the first day or instant, ISO-8601 (2024-01-01 or 2024-01-01T00:00:00Z)",
    "end": "the last day or instant, ISO-8601; not before start",
}

_SHA256 = re.compile(r"[0-9a-f]{64}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_Check = Callable[[object, str], Any]


def _brief(value: object) -> str:
    """A bad value, for a message. Mappings and lists are not repr()'d: YAML aliases make a
    small file whose nested lists repr() would take forever to write out."""
    if isinstance(value, dict):
        return f"a mapping ({len(value)} fields)"
    if isinstance(value, list):
        return f"a list ({len(value)} items)"
    return brief_repr(value)


def _field_path(where: str, key: object) -> str:
    # repr() escapes what a terminal would interpret in an unexpected key.
    plain = isinstance(key, str) and _PLAIN_KEY.fullmatch(key) is not None
    return f"{where}.{key}" if plain else f"{where}.{brief_repr(key)}"


def _mapping(
    fields: Mapping[str, _Check], required: tuple[str, ...] = ()
) -> Callable[[object, str], dict[str, Any]]:
    """A check of a mapping holding some of `fields` (all of `required`), and nothing else."""

    def check(value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Rejected(f"{where}: expected a mapping, got {_brief(value)}")
        expected = ", ".join(sorted(fields))
        for key in value:
            if key not in fields:
                raise Rejected(
                    f"{_field_path(where, key)}: unknown field; expected one of {expected}"
                )
        if not value:
            raise Rejected(f"{where}: empty; expected at least one of {expected}")
        for name in required:
            if name not in value:
                raise Rejected(f"{where}.{name}: missing")
        return {name: field_check(value[name], f"{where}.{name}")
                for name, field_check in fields.items() if name in value}  # fmt: skip

    return check


def _text(max_chars: int, *, multiline: bool = False) -> _Check:
    """A check of text: at most `max_chars`, no control or format character (line breaks too,
    unless `multiline`: prose written as a YAML block keeps them); returned stripped."""

    def check(value: object, where: str) -> str:
        if not isinstance(value, str):
            raise Rejected(f"{where}: expected text, got {_brief(value)}")
        # A line feed becomes a space of the same length: positions in the message stay true.
        problem = text_problem(value.replace("\n", " ") if multiline else value, max_chars)
        if problem is not None:
            raise Rejected(f"{where}: {problem}")
        if not value.strip():
            raise Rejected(f"{where}: expected text, got {'nothing' if not value else 'blanks'}")
        return value.strip()

    return check


def _sha256(value: object, where: str) -> str:
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise Rejected(f"{where}: expected 64 lowercase hexadecimal digits, got {_brief(value)}")
    return value


def _rows(value: object, where: str) -> int:
    # bool is an int to Python, but `rows: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROWS:
        raise Rejected(f"{where}: expected an integer from 0 to {MAX_ROWS}, got {_brief(value)}")
    return value


def _instant(value: object, where: str) -> date:
    """A date, or a datetime (a subclass of date): from text, or as YAML reads 2024-01-01."""
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        for parse in (date.fromisoformat, datetime.fromisoformat):
            try:
                return parse(value)
            except ValueError:
                pass
    raise Rejected(
        f"{where}: expected an ISO-8601 date or date-time (2024-01-01, 2024-01-01T00:00:00Z),"
        f" got {_brief(value)}"
    )


def _is_ordered(start: date, end: date, where: str) -> bool:
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        # A day against an instant: compare the days, the instant's in its own offset.
        day_of = [t.date() if isinstance(t, datetime) else t for t in (start, end)]
        return day_of[0] <= day_of[1]
    if (start.utcoffset() is None) != (end.utcoffset() is None):
        raise Rejected(f"{where}: expected start and end both with a UTC offset, or neither")
    return start <= end


_time_range_fields = _mapping({"start": _instant, "end": _instant}, required=("start", "end"))


def _time_range(value: object, where: str) -> dict[str, str]:
    bounds = _time_range_fields(value, where)
    start, end = bounds["start"], bounds["end"]
    if not _is_ordered(start, end, where):
        raise Rejected(f"{where}: start {start.isoformat()} is after end {end.isoformat()}")
    return {"start": start.isoformat(), "end": end.isoformat()}


def _segments(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise Rejected(f"{where}: expected a list of segment names, got {_brief(value)}")
    if len(value) > MAX_EVALUATED_SEGMENTS:
        raise Rejected(f"{where}: expected at most {MAX_EVALUATED_SEGMENTS}, got {len(value)}")
    for index, name in enumerate(value):
        if not isinstance(name, str) or not is_valid_name(name):
            raise Rejected(f"{where}[{index}]: expected a segment name ({NAME_RULE}),"
                           f" got {_brief(name)}")  # fmt: skip
        if name in value[:index]:
            raise Rejected(f"{where}[{index}]: {name!r} is listed twice")
    return list(value)


_dataset = _mapping(
    {
        "uri": _text(MAX_URI_CHARS),
        "sha256": _sha256,
        "rows": _rows,
        "time_range": _time_range,
        "description": _text(MAX_PROSE_CHARS, multiline=True),
    }
)
_card = _mapping(
    {
        "training_data": _dataset,
        "evaluation_data": _dataset,
        "feature_engineering": _text(MAX_PROSE_CHARS, multiline=True),
        "algorithm": _text(MAX_PROSE_CHARS, multiline=True),
        "intended_use": _text(MAX_PROSE_CHARS, multiline=True),
        "limitations": _text(MAX_PROSE_CHARS, multiline=True),
        "evaluated_segments": _segments,
        "contact": _text(MAX_CONTACT_CHARS),
    }
)


def validate_card(card: object) -> dict[str, Any]:
    """The card normalized: text stripped, dates and date-times as ISO-8601 text, nothing but
    JSON types. Rejected, naming the field (card.training_data.rows), when it breaks the
    schema of CARD_FIELDS, DATASET_FIELDS and TIME_RANGE_FIELDS or is empty."""
    return _card(card, "card")


def load_card(path: Path) -> dict[str, Any]:
    """The card in a .json, .yaml or .yml file, validated (validate_card); Rejected, naming
    the file, when it cannot be read or parsed, or breaks the schema."""
    suffix = path.suffix.lower()
    if suffix not in CARD_SUFFIXES:
        raise Rejected(f"{path}: a model card is a .json, .yaml or .yml file, not"
                       f" {suffix or 'a file without a suffix'!r}")  # fmt: skip
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise Rejected(f"{path}: cannot read the model card ({exc.strerror})") from exc
    if len(data) > MAX_CARD_BYTES:
        raise Rejected(f"{path}: a model card is at most {MAX_CARD_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")  # editors on Windows may start the file with a BOM
    except UnicodeDecodeError as exc:
        raise Rejected(f"{path}: not UTF-8 text (byte {exc.start + 1})") from exc
    document = _parsed_json(text, path) if suffix == ".json" else _parsed_yaml(text, path)
    if not isinstance(document, dict):
        raise Rejected(f"{path}: expected a mapping of card fields at the top level,"
                       f" got {_brief(document)}")  # fmt: skip
    try:
        return validate_card(document)
    except Rejected as exc:
        raise Rejected(f"{path}: {exc}") from exc


def _parsed_json(text: str, path: Path) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Rejected(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}:"
                       f" {exc.msg}") from exc  # fmt: skip
    except RecursionError as exc:
        raise Rejected(f"{path}: not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise Rejected(f"{path}: not valid JSON: {exc}") from exc


def _parsed_yaml(text: str, path: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise Rejected(f"{path}: not valid YAML{at}: {exc.problem or exc.context}") from exc
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow in a file
        raise Rejected(f"{path}: not valid YAML at character {exc.position + 1}: {exc.reason}"
                       f" ({exc.character!r})") from exc  # fmt: skip
    except yaml.YAMLError as exc:
        raise Rejected(f"{path}: not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise Rejected(f"{path}: not valid YAML: nested too deeply") from exc
    except ValueError as exc:  # what YAML reads as a date is not one: 2024-13-45
        raise Rejected(f"{path}: not valid YAML: {exc} (quote the value if it is text)") from exc

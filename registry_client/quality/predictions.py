"""What the prediction log keeps of each prediction, and where: the record a later label is
joined with (version, role, time, segment values, score), packed small.

Predictions are kept in Redis hashes of about a hundred entries each, because a small hash is
stored as one compact listpack: a few bytes of overhead per entry, against some 70 for a key of
its own (key object, expiry entry, allocator rounding). A prediction's hash is found from its id
alone: `{ns:model}:pred:<day>:<bucket>`, where the day is the day (UTC) it was made and the
bucket a hash of the id modulo the day's bucket count. A label, which knows only the id, looks
in each day the log keeps. The day's bucket count is chosen by its first writer from the day
before's volume (`bucket_count`), so hashes stay small as traffic grows; each day expires as a
whole.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "DAY_SECONDS",
    "ENTRIES_PER_BUCKET",
    "MAX_BUCKETS",
    "MIN_BUCKETS",
    "MISSING",
    "OTHER",
    "PRIMARY",
    "SHADOW",
    "PredictionFormatError",
    "PredictionRecord",
    "bucket_count",
    "bucket_of",
    "day_of",
    "decode_records",
    "encode_records",
]

DAY_SECONDS = 86_400
ENTRIES_PER_BUCKET = 100  # under Redis' default hash-max-listpack-entries (128)
MIN_BUCKETS = 16
MAX_BUCKETS = 1 << 20
PRIMARY, SHADOW = "primary", "shadow"
# Segment values with a meaning of their own: the request did not say (or said something
# unusable), and a value past its dimension's cap (the join keeps a bounded set apart).
MISSING, OTHER = "__missing__", "__other__"
_ROLE_CODES = {PRIMARY: "p", SHADOW: "s"}
_ROLES = {code: role for role, code in _ROLE_CODES.items()}
# Separators no version name, segment value or number contains (names are validated; segment
# values are printable): unit, record, group.
_FIELD, _SEGMENT, _RECORD = "\x1f", "\x1e", "\x1d"


class PredictionFormatError(ValueError):
    """A stored prediction this version of the format cannot read."""


class PredictionRecord(NamedTuple):
    """One prediction, as a label needs it: the version and role that made it, when (Unix
    seconds), the request's segment values (in the model's segment order) and the score: the
    positive class's probability (binary), the predicted class (multiclass) or the value
    (regression). A NamedTuple: a gateway makes one per prediction, and a tuple is made in a
    fraction of a frozen dataclass's time."""

    version: str
    role: str
    time: int
    segments: tuple[str, ...]
    score: float

    def encode(self) -> str:
        """`<version>US<role code><seconds into its day>US<segments, RS-separated>US<score>`.
        One f-string: a gateway encodes one per logged prediction."""
        score = self.score
        text = repr(int(score)) if score.is_integer() else f"{score:.7g}"
        return (f"{self.version}{_FIELD}{_ROLE_CODES[self.role]}{self.time % DAY_SECONDS}"
                f"{_FIELD}{_SEGMENT.join(self.segments)}{_FIELD}{text}")  # fmt: skip


def day_of(unix_seconds: float) -> int:
    """The day (UTC, days since the Unix epoch) a moment falls in."""
    return int(unix_seconds // DAY_SECONDS)


def bucket_of(request_id: str, buckets: int) -> int:
    """The bucket of an id: CRC-32 of its UTF-8 bytes modulo the day's bucket count."""
    return zlib.crc32(request_id.encode()) % buckets


def bucket_count(previous_day_predictions: int) -> int:
    """Buckets for a day expected to log as many predictions as the day before (with a
    quarter to grow): about ENTRIES_PER_BUCKET each; within MIN_BUCKETS..MAX_BUCKETS."""
    wanted = math.ceil(previous_day_predictions * 1.25 / ENTRIES_PER_BUCKET)
    return min(max(wanted, MIN_BUCKETS), MAX_BUCKETS)


def encode_records(records: Sequence[PredictionRecord]) -> str:
    """The value of an id's field: its primary's and its shadows' records, GS-separated."""
    if len(records) == 1:  # no shadow: the common case
        return records[0].encode()
    return _RECORD.join([record.encode() for record in records])


def decode_records(value: str, day: int) -> list[PredictionRecord]:
    """The records of an id's field written on `day`; PredictionFormatError when malformed."""
    records = []
    for text in value.split(_RECORD):
        parts = text.split(_FIELD)
        if len(parts) != 4 or not parts[0] or parts[1][:1] not in _ROLES:
            raise PredictionFormatError(f"prediction record {text[:80]!r}: expected 4 fields")
        version, timing, segments, score = parts
        try:
            seconds, value_of_score = int(timing[1:]), float(score)
        except ValueError as exc:
            raise PredictionFormatError(f"prediction record {text[:80]!r}: {exc}") from None
        if not 0 <= seconds < DAY_SECONDS or not math.isfinite(value_of_score):
            raise PredictionFormatError(f"prediction record {text[:80]!r}: time or score")
        records.append(
            PredictionRecord(
                version,
                _ROLES[timing[0]],
                day * DAY_SECONDS + seconds,
                tuple(segments.split(_SEGMENT)) if segments else (),
                value_of_score,
            )
        )
    return records

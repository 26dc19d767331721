"""A request's user segments: the values of the dimensions a model is judged on for fairness
(gender, age band, ...), from the request parameters `segment.<name>` or the metadata
`x-segment-<name>`.

Read by the background recorder from references the request path kept, never on the request
path itself: a request pays nothing for segments it is not asked about.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gateway._proto import grpc_service_pb2 as pb
from registry_client.quality.predictions import MISSING

__all__ = [
    "MAX_VALUE_CHARS",
    "SEGMENT_METADATA_PREFIX",
    "SEGMENT_PARAMETER_PREFIX",
    "segment_values",
]

SEGMENT_PARAMETER_PREFIX = "segment."
SEGMENT_METADATA_PREFIX = "x-segment-"
MAX_VALUE_CHARS = 64  # a segment value is a category, not a payload


def _text(parameter: pb.InferParameter) -> str | None:
    """The parameter's value as text, whichever of its typed fields is set."""
    kind = parameter.WhichOneof("parameter_choice")
    if kind is None:
        return None
    value = getattr(parameter, kind)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _usable(value: str | None) -> str | None:
    if value and len(value) <= MAX_VALUE_CHARS and value.isprintable():
        return value
    return None


def segment_values(
    names: Sequence[str],
    parameters: Mapping[str, pb.InferParameter],
    metadata: Iterable[tuple[str, str | bytes]],
) -> tuple[tuple[str, ...], int]:
    """The value of each of `names` (MISSING where the request gives none, or one that is
    empty, not printable or over MAX_VALUE_CHARS), parameters first, then metadata; and how
    many segment names the request gave that are not in `names` (ignored, and counted)."""
    if not len(parameters) and not any(
        key.startswith(SEGMENT_METADATA_PREFIX) for key, _ in metadata
    ):
        return (MISSING,) * len(names), 0  # the request names no segment: the common case
    found: dict[str, str | None] = {}
    unknown: set[str] = set()
    wanted = frozenset(names)
    for key in parameters:
        if key.startswith(SEGMENT_PARAMETER_PREFIX):
            name = key[len(SEGMENT_PARAMETER_PREFIX) :]
            if name in wanted:
                found[name] = _usable(_text(parameters[key]))
            else:
                unknown.add(name)
    for key, value in metadata:
        if key.startswith(SEGMENT_METADATA_PREFIX):
            name = key[len(SEGMENT_METADATA_PREFIX) :]
            if name not in wanted:
                unknown.add(name)
            elif name not in found:  # a parameter says it first
                found[name] = _usable(value) if isinstance(value, str) else None
    values = tuple(found.get(name) or MISSING for name in names)
    return values, len(unknown)

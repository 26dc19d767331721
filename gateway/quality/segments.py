"""A request's user segments: the values of the dimensions a model is judged on for fairness
(gender, age band, ...), from the request parameters `segment.<name>` or the metadata
`x-segment-<name>`.

The request path keeps only the text of the request's `segment.*` parameters
(segment_parameters, nothing at all for a request without parameters): a reference to the
parameters map would keep the whole request message, inputs and all, alive until the
background recorder reads it. The recorder reads the values it is asked about in the
background (segment_values).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gateway._proto import grpc_service_pb2 as pb
from registry_client.quality.predictions import MISSING

__all__ = [
    "MAX_VALUE_CHARS",
    "SEGMENT_METADATA_PREFIX",
    "SEGMENT_PARAMETER_PREFIX",
    "SegmentParameters",
    "segment_parameters",
    "segment_values",
]

SEGMENT_PARAMETER_PREFIX = "segment."
SEGMENT_METADATA_PREFIX = "x-segment-"
MAX_VALUE_CHARS = 64  # a segment value is a category, not a payload
# A request's `segment.*` parameters: segment name -> its value as text (None: not usable).
SegmentParameters = Mapping[str, str | None]
_NONE: SegmentParameters = {}  # shared: never written to


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


def segment_parameters(parameters: Mapping[str, pb.InferParameter]) -> SegmentParameters:
    """The request's `segment.<name>` parameters, as text, by name: on the request path, so
    a dict lookup's worth for a request without parameters."""
    if not len(parameters):
        return _NONE
    return {
        key[len(SEGMENT_PARAMETER_PREFIX) :]: _usable(_text(value))
        for key, value in parameters.items()
        if key.startswith(SEGMENT_PARAMETER_PREFIX)
    }


def segment_values(
    names: Sequence[str],
    parameters: SegmentParameters,
    metadata: Iterable[tuple[str, str | bytes]],
) -> tuple[tuple[str, ...], int]:
    """The value of each of `names` (MISSING where the request gives none, or one that is
    empty, not printable or over MAX_VALUE_CHARS), parameters first, then metadata; and how
    many segment names the request gave that are not in `names` (ignored, and counted)."""
    if not parameters:
        for key, _ in metadata:  # a loop, not any(): this is run once per logged prediction
            if key.startswith(SEGMENT_METADATA_PREFIX):
                break
        else:
            return (MISSING,) * len(names), 0  # the request names no segment: the common case
    found: dict[str, str | None] = {}
    unknown: set[str] = set()
    wanted = frozenset(names)
    for name, value in parameters.items():
        if name in wanted:
            found[name] = value
        else:
            unknown.add(name)
    for key, text in metadata:
        if key.startswith(SEGMENT_METADATA_PREFIX):
            name = key[len(SEGMENT_METADATA_PREFIX) :]
            if name not in wanted:
                unknown.add(name)
            elif name not in found:  # a parameter says it first
                found[name] = _usable(text) if isinstance(text, str) else None
    values = tuple(found.get(name) or MISSING for name in names)
    return values, len(unknown)

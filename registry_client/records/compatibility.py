"""Whether a version can take another's place for the same callers: inputs, outputs and
feature names compared, one message per difference."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeGuard

from registry_client.errors import Rejected
from registry_client.schema import brief_repr

__all__ = ["VersionSchema", "schema_mismatches"]

# How many feature names a message quotes from a longer list, from just before where the two
# lists first differ: a list of hundreds of columns would bury the difference.
_SHOWN_NAMES = 6


@dataclass(frozen=True, slots=True)
class VersionSchema:
    """What callers of a version rely on: its signature as artifacts.signature() reads it
    ({"inputs": [{name, type, shape}], "outputs": [...]}, a dimension -1 when dynamic) and
    the feature names registered per input ({} when none).

    Rejected, naming the field, when either is not of that form."""

    signature: Mapping[str, Sequence[Mapping[str, Any]]]
    feature_names: Mapping[str, Sequence[str]]

    def __post_init__(self) -> None:
        _tensors(self.signature, "inputs")
        _tensors(self.signature, "outputs")
        _check_feature_names(self.feature_names)

    @classmethod
    def from_record(cls, fields: Mapping[str, str]) -> VersionSchema:
        """From a stored version's fields: the JSON in "signature" and in "feature_names"
        (none when the record has no such field). Rejected naming a field that is missing,
        not JSON or not of the form above."""
        return cls(_json_field(fields, "signature"), _json_field(fields, "feature_names", "{}"))


def schema_mismatches(reference: VersionSchema, candidate: VersionSchema) -> list[str]:
    """Each way `candidate` cannot take the place of (or serve beside) `reference` for the
    same callers, one message per mismatch, [] when compatible.

    Callers were built against `reference`. Each of its inputs must be in the candidate with
    the same datatype and rank, and each dimension fixed in both equal; a dimension dynamic
    (-1) in the reference must stay dynamic, since callers send any size (a fixed one may
    become dynamic). The candidate may have no other input: ONNX graph inputs are required
    and callers do not send them. Each reference output must be in the candidate with the
    same datatype and rank, and each dimension fixed in both equal (exporters often leave
    output dimensions symbolic, so dynamic against fixed is no mismatch); more outputs are
    fine. Feature names registered for the same input by both must be the same, in order.

    Messages name the tensor, then the candidate's value, then the reference's ("expected");
    in the reference's input order, then the candidate's extra inputs, then outputs.
    """
    found: list[str] = []
    expected_inputs = _tensors(reference.signature, "inputs")
    candidate_inputs = _tensors(candidate.signature, "inputs")
    by_name = {t.name: t for t in candidate_inputs}
    for expected in expected_inputs:
        got = by_name.get(expected.name)
        if got is None:
            found.append(
                f"{_label('input', expected.name)}: missing, expected {_describe(expected)}"
            )
            continue
        found += _tensor_mismatches("input", expected, got, dynamic_stays=True)
        found += _feature_name_mismatches(
            expected.name,
            reference.feature_names.get(expected.name),
            candidate.feature_names.get(expected.name),
        )
    known = {t.name for t in expected_inputs}
    for extra in candidate_inputs:
        if extra.name not in known:
            found.append(f"{_label('input', extra.name)}: extra {_describe(extra)}, expected"
                         " none (callers do not send it)")  # fmt: skip
    by_name = {t.name: t for t in _tensors(candidate.signature, "outputs")}
    for expected in _tensors(reference.signature, "outputs"):
        got = by_name.get(expected.name)
        if got is None:
            found.append(
                f"{_label('output', expected.name)}: missing, expected {_describe(expected)}"
            )
            continue
        found += _tensor_mismatches("output", expected, got, dynamic_stays=False)
    return found


class _Tensor(NamedTuple):
    name: str
    type: str
    shape: tuple[int, ...]  # a negative dimension is dynamic


def _tensor_mismatches(
    kind: str, expected: _Tensor, got: _Tensor, *, dynamic_stays: bool
) -> list[str]:
    """Datatype and shape differences of one tensor; with `dynamic_stays`, a dimension dynamic
    in `expected` and fixed in `got` is one too."""
    label = _label(kind, expected.name)
    found = []
    if got.type != expected.type:
        found.append(f"{label}: datatype {got.type}, expected {expected.type}")
    if len(got.shape) != len(expected.shape):
        found.append(f"{label}: rank {len(got.shape)} {_shape(got.shape)}, expected rank"
                     f" {len(expected.shape)} {_shape(expected.shape)}")  # fmt: skip
        return found  # dimensions of different ranks do not correspond
    shapes = f"shape {_shape(got.shape)}, expected {_shape(expected.shape)}"
    pairs = list(enumerate(zip(expected.shape, got.shape, strict=True)))
    differ = [i for i, (e, g) in pairs if e >= 0 and g >= 0 and e != g]
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        found.append(f"{label}: {shapes} ({_dimensions(differ)} {verb})")
    fixed = [i for i, (e, g) in pairs if e < 0 and g >= 0] if dynamic_stays else []
    if fixed:
        verb = "is" if len(fixed) == 1 else "are"
        found.append(f"{label}: {shapes} ({_dimensions(fixed)} {verb} fixed; callers send any"
                     " size)")  # fmt: skip
    return found


def _feature_name_mismatches(
    name: str, expected: Sequence[str] | None, got: Sequence[str] | None
) -> list[str]:
    """The difference of the names both versions registered for input `name`, if any."""
    if expected is None or got is None or list(expected) == list(got):
        return []
    pairs = enumerate(zip(expected, got, strict=False))
    first = next((i for i, (e, g) in pairs if e != g), min(len(expected), len(got)))
    longest = max(len(expected), len(got))
    # Both cut at the same columns, so that they read side by side.
    start = max(0, min(first - 2, longest - _SHOWN_NAMES))
    message = (f"{_label('input', name)}: feature names {_names(got, start)}, expected"
               f" {_names(expected, start)}")  # fmt: skip
    if longest > _SHOWN_NAMES:
        message += f" (first difference at column {first})"
    return [message]


def _names(names: Sequence[str], start: int) -> str:
    """names as a JSON list, cut to _SHOWN_NAMES from column `start`: "..." stands for
    those left out, and the count follows."""
    end = start + _SHOWN_NAMES
    shown = [json.dumps(n) for n in names[start:end]]
    if start == 0 and end >= len(names):
        return f"[{', '.join(shown)}]"
    shown = ["...", *shown] if start > 0 else shown
    shown = [*shown, "..."] if end < len(names) else shown
    return f"[{', '.join(shown)}] ({len(names)} names)"


def _label(kind: str, name: str) -> str:
    """`input "x"`: the name quoted as JSON, so that no character in it can mislead."""
    return f"{kind} {json.dumps(name)}"


def _describe(tensor: _Tensor) -> str:
    return f"{tensor.type} {_shape(tensor.shape)}"


def _shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(str(d) for d in shape)}]"


def _dimensions(indices: list[int]) -> str:
    """ "dimension 1", "dimensions 0 and 2", "dimensions 0, 1 and 2"."""
    if len(indices) == 1:
        return f"dimension {indices[0]}"
    return f"dimensions {', '.join(str(i) for i in indices[:-1])} and {indices[-1]}"


def _json_field(fields: Mapping[str, str], name: str, default: str | None = None) -> Any:
    """The JSON value of a stored field; Rejected naming it when missing or not JSON."""
    text = fields.get(name, default)
    if text is None:
        raise Rejected(f'field "{name}" is missing from the version record')
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise Rejected(f'field "{name}" is not JSON: {exc}') from exc


def _tensors(signature: object, kind: str) -> list[_Tensor]:
    """The inputs or outputs (`kind`) of a signature; Rejected saying what is malformed."""
    entries = signature.get(kind) if isinstance(signature, Mapping) else None
    if not _is_list(entries):
        raise Rejected(f'field "signature": expected {{"inputs": [...], "outputs": [...]}},'
                       f" got {brief_repr(signature)}")  # fmt: skip
    tensors = []
    for i, entry in enumerate(entries):
        where = f'field "signature": {kind}[{i}]'
        if not isinstance(entry, Mapping):
            raise Rejected(
                f'{where}: expected {{"name", "type", "shape"}}, got {brief_repr(entry)}'
            )
        name, type_, shape = entry.get("name"), entry.get("type"), entry.get("shape")
        for key, value in (("name", name), ("type", type_)):
            if not isinstance(value, str):
                raise Rejected(f"{where}.{key}: expected text, got {brief_repr(value)}")
        if not _is_list(shape) or not all(_is_int(d) for d in shape):
            raise Rejected(f"{where}.shape: expected a list of integers, got {brief_repr(shape)}")
        tensors.append(_Tensor(str(name), str(type_), tuple(int(d) for d in shape)))
    return tensors


def _check_feature_names(feature_names: object) -> None:
    """Rejected saying what is wrong unless feature_names maps input names to lists of text."""
    where = 'field "feature_names"'
    if not isinstance(feature_names, Mapping):
        raise Rejected(f"{where}: expected {{input: [names]}}, got {brief_repr(feature_names)}")
    for name, names in feature_names.items():
        if not isinstance(name, str) or not _is_list(names):
            raise Rejected(f"{where}: {brief_repr(name)}: expected a list of names, got"
                           f" {brief_repr(names)}")  # fmt: skip
        if not all(isinstance(n, str) for n in names):
            raise Rejected(f"{where}: {brief_repr(name)}: expected names as text, got"
                           f" {brief_repr(names)}")  # fmt: skip


def _is_list(value: object) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    """A list or tuple (JSON arrays decode as lists; tuples are fine when built directly)."""
    return isinstance(value, list | tuple)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no dimension

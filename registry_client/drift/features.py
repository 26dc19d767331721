"""Which features an input tensor has, and their values per row, vectorised."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from registry_client.errors import Rejected

__all__ = ["MAX_FLAT_FEATURES", "feature_columns", "validate_feature_names"]

_FEATURE_NAME = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,128}")

# A row of at most this many elements is one feature per element; a larger one (an image, an
# embedding) is summarised per row by its mean and standard deviation.
MAX_FLAT_FEATURES = 64


def feature_columns(
    name: str, batch: np.ndarray, names: Sequence[str] | None = None
) -> list[tuple[str, np.ndarray]]:
    """(feature name, one value per row) for a batch whose first dimension is rows. Columns
    are called `names` when the version registered them, else `name[i]`.

    Numeric and boolean inputs only: strings have no distribution to compare here.
    """
    if batch.dtype.kind not in "biuf" or batch.ndim == 0:
        return []
    rows = batch.shape[0]
    if batch.ndim == 1:
        return [(name, batch)]
    width = math.prod(batch.shape[1:])
    flat = batch.reshape(rows, width)
    if width <= MAX_FLAT_FEATURES:
        if names is not None and len(names) == width:
            return [(names[i], flat[:, i]) for i in range(width)]
        return [(f"{name}[{i}]", flat[:, i]) for i in range(width)]
    values = flat.astype(np.float64)
    with np.errstate(invalid="ignore"):  # rows of infinities give NaN: counted as missing
        return [(f"{name}.mean", values.mean(axis=1)), (f"{name}.std", values.std(axis=1))]


def validate_feature_names(
    given: Mapping[str, Sequence[str]], inputs: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """Names per input, checked against the model's inputs; Rejected says what is wrong.
    The input name "" stands for a model's only input."""
    shapes = {i["name"]: i.get("shape", []) for i in inputs}
    checked: dict[str, list[str]] = {}
    seen: set[str] = set()
    for given_name, names in given.items():
        input_name = given_name
        if not given_name:
            if len(shapes) != 1:
                raise Rejected(f"feature names: the model has inputs {', '.join(shapes)}:"
                               " say which, as INPUT:names")  # fmt: skip
            input_name = next(iter(shapes))
        if input_name not in shapes:
            raise Rejected(f"feature names: {input_name!r} is not an input (inputs: "
                           f"{', '.join(shapes)})")  # fmt: skip
        shape = shapes[input_name]
        columns = math.prod(shape[1:]) if len(shape) > 1 and min(shape[1:]) > 0 else None
        if columns is not None and len(names) != columns:
            raise Rejected(f"feature names of {input_name!r}: expected {columns} names, one"
                           f" per column, got {len(names)}")  # fmt: skip
        for feature in names:
            if not _FEATURE_NAME.fullmatch(feature):
                raise Rejected(f"feature name {feature!r}: expected letters, digits and _.:[]-")
            if feature in seen:
                raise Rejected(f"feature name {feature!r} is given twice")
            seen.add(feature)
        checked[input_name] = list(names)
    return checked

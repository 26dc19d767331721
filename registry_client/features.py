"""Which features an input tensor has, and their values per row, vectorised."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_FLAT_FEATURES", "feature_columns"]

# A row of at most this many elements is one feature per element; a larger one (an image, an
# embedding) is summarised per row by its mean and standard deviation.
MAX_FLAT_FEATURES = 64


def feature_columns(name: str, batch: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(feature name, one value per row) for a batch whose first dimension is rows.

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
        return [(f"{name}[{i}]", flat[:, i]) for i in range(width)]
    values = flat.astype(np.float64)
    with np.errstate(invalid="ignore"):  # rows of infinities give NaN: counted as missing
        return [(f"{name}.mean", values.mean(axis=1)), (f"{name}.std", values.std(axis=1))]

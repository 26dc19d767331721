"""One score per row from a model's score output, as a label is scored against it: the
positive class's probability (binary) or the value (regression) from the configured column, or
the predicted class (multiclass: argmax of the row).

The gateway's prediction recorder and `gatectl evaluate` both pick scores here, so a version's
evaluation before deployment measures exactly what its live predictions are measured on.
"""

from __future__ import annotations

import numpy as np

from registry_client.quality.task import QualityConfig

__all__ = ["rows_of", "scores_of"]


def rows_of(config: QualityConfig, outputs: np.ndarray) -> int:
    """How many predictions (rows) scores_of finds in `outputs`, without reading them."""
    if outputs.ndim == 0 or (outputs.ndim == 1 and config.task == "multiclass"):
        return 1
    return int(outputs.shape[0])


def scores_of(config: QualityConfig, outputs: np.ndarray) -> list[float]:
    """The score of each row of `outputs` (the config's score output of one run). A rank-0
    or rank-1 output of a multiclass model is one row of class scores; of the other tasks, one
    value per row, whatever `score_index` says."""
    if outputs.ndim == 2 and outputs.shape[0] == 1 and config.task != "multiclass":
        # One row, the common case: a scalar read costs far less than the numpy steps below.
        index = config.score_index if config.score_index is not None else 0
        return [float(outputs[0, index])]
    rows = outputs.reshape(1, -1) if outputs.ndim <= 1 and config.task == "multiclass" else outputs
    if rows.ndim == 0:
        rows = rows.reshape(1)
    if config.task == "multiclass":
        return [float(i) for i in np.argmax(rows.reshape(rows.shape[0], -1), axis=1)]
    if config.score_index is not None and rows.ndim >= 2:
        return [float(v) for v in rows.reshape(rows.shape[0], -1)[:, config.score_index]]
    return [float(v) for v in rows.reshape(rows.shape[0], -1)[:, 0]]

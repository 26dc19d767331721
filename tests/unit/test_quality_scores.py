"""Picking one score per row from a score output, and reading a labelled dataset's labels and
segments as the join reads live ones: pure functions, no server."""

from __future__ import annotations

import re

import numpy as np
import pytest

from registry_client.errors import Rejected
from registry_client.quality.offline import capped_segments, task_labels
from registry_client.quality.scores import scores_of
from registry_client.quality.task import QualityConfig

BINARY = QualityConfig("binary", "probabilities", 1)
MULTICLASS = QualityConfig("multiclass", "scores", None)
REGRESSION = QualityConfig("regression", "value", 0)


def test_binary_scores_are_the_positive_class_column() -> None:
    probabilities = np.array([[0.9, 0.1], [0.25, 0.75]], np.float32)
    assert scores_of(BINARY, probabilities) == [pytest.approx(0.1), 0.75]


def test_a_binary_score_index_picks_its_column_of_a_wider_output() -> None:
    config = QualityConfig("binary", "probabilities", 2)
    assert scores_of(config, np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])) == [0.7, 0.25]


def test_a_binary_model_with_one_value_per_row_scores_that_value() -> None:
    config = QualityConfig("binary", "probability", None)
    assert scores_of(config, np.array([0.5, 0.25])) == [0.5, 0.25]
    assert scores_of(config, np.array([[0.5], [0.25]])) == [0.5, 0.25]


def test_multiclass_scores_are_the_argmax_class() -> None:
    assert scores_of(MULTICLASS, np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])) == [1.0, 0.0]


def test_a_rank_one_multiclass_output_is_one_row_of_class_scores() -> None:
    assert scores_of(MULTICLASS, np.array([0.1, 0.2, 0.7])) == [2.0]


def test_regression_scores_are_the_configured_columns_values() -> None:
    assert scores_of(REGRESSION, np.array([[1.5], [-2.0]])) == [1.5, -2.0]
    config = QualityConfig("regression", "values", 1)
    assert scores_of(config, np.array([[1.0, 3.5], [2.0, 4.5]])) == [3.5, 4.5]


def test_a_rank_zero_output_is_one_row() -> None:
    assert scores_of(REGRESSION, np.array(2.5)) == [2.5]


def test_higher_rank_outputs_are_flattened_per_row() -> None:
    config = QualityConfig("binary", "probabilities", 1)
    assert scores_of(config, np.array([[[0.4, 0.6]], [[0.8, 0.2]]])) == [0.6, pytest.approx(0.2)]


def test_binary_labels_map_to_the_positive_class_as_the_join_maps_them() -> None:
    assert task_labels(BINARY, [0.0, 1.0, 1.0]) == [0.0, 1.0, 1.0]
    flipped = QualityConfig("binary", "probabilities", 0, positive_label=0)
    assert task_labels(flipped, [0.0, 1.0]) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("config", "value", "message"),
    [
        (BINARY, 2.0, "labels[1]: 2.0 is not a binary label (0 or 1)"),
        (BINARY, 0.5, "labels[1]: 0.5 is not a binary label"),
        (MULTICLASS, 1.5, "labels[1]: 1.5 is not a class index (an integer from 0 to 63)"),
        (MULTICLASS, 64.0, "labels[1]: 64.0 is not a class index"),
        (MULTICLASS, -1.0, "labels[1]: -1.0 is not a class index"),
        (REGRESSION, float("nan"), "labels[1]: nan is not a finite number"),
    ],
)
def test_a_label_the_task_cannot_take_is_refused_naming_its_row(
    config: QualityConfig, value: float, message: str
) -> None:
    with pytest.raises(Rejected, match=re.escape(message)):
        task_labels(config, [0.0, value])


def test_segment_values_are_kept_apart_up_to_the_cap_in_the_order_met() -> None:
    config = QualityConfig("binary", "p", 1, segments=("region",), max_segment_values=2)
    found = capped_segments(config, ["north", "south", "east", "north", "west"])
    assert found == ["north", "south", "__other__", "north", "__other__"]


def test_unusable_segment_values_are_missing_as_the_gateway_reads_them() -> None:
    config = QualityConfig("binary", "p", 1, segments=("region",))
    found = capped_segments(config, ["", "x" * 65, "a\tb", "x" * 64])
    assert found == ["__missing__", "__missing__", "__missing__", "x" * 64]

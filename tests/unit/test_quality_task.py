"""QualityConfig: validation naming the field, its JSON, and the defaults inferred from a
version's outputs."""

from __future__ import annotations

import dataclasses
import re

import pytest

from registry_client.errors import Rejected
from registry_client.quality.task import (
    TASKS,
    QualityConfig,
    infer_config,
    parse_score_output,
    signature_outputs,
)

PROBABILITIES = ("probabilities", "FP32", (-1, 2))
LOGITS = ("logits", "FP32", (-1, 2))
THREE_CLASSES = ("scores", "FP32", (-1, 3))
COLUMN = ("value", "FP64", (-1, 1))
VECTOR = ("value", "FP16", (-1,))
LABEL = ("label", "INT64", (-1,))
DYNAMIC = ("scores", "FP32", (-1, -1))


def binary(**fields: object) -> QualityConfig:
    base = QualityConfig(task="binary", score_output="probabilities", score_index=1)
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]  # bad values on purpose


def test_tasks_are_binary_multiclass_regression():
    assert TASKS == ("binary", "multiclass", "regression")


def test_defaults():
    config = binary()
    assert (config.threshold, config.positive_label, config.segments) == (0.5, 1, ())
    assert (config.max_segment_values, config.label_deadline_seconds) == (32, 7 * 86400)


def test_json_round_trip_is_compact_and_sorted():
    config = binary(segments=("gender", "age_band"), threshold=0.7, label_deadline_seconds=3600)
    text = config.to_json()
    assert " " not in text
    assert text.index('"label_deadline_seconds"') < text.index('"task"')
    assert QualityConfig.from_json(text) == config


def test_json_round_trip_keeps_a_missing_index():
    config = QualityConfig(task="multiclass", score_output="scores", score_index=None)
    assert QualityConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"task": "ranking"}, "task (--task)"),
        ({"score_output": ""}, "score_output (--score-output)"),
        ({"score_index": -1}, "score_index"),
        ({"threshold": 1.5}, "threshold (--threshold)"),
        ({"threshold": -0.1}, "threshold (--threshold)"),
        ({"threshold": float("nan")}, "threshold (--threshold)"),
        ({"threshold": float("inf")}, "threshold (--threshold)"),
        ({"positive_label": 2}, "positive_label (--positive-label)"),
        ({"segments": ("gender", "gender")}, "segments (--segments)"),
        ({"segments": ("bad name",)}, "segments (--segments)"),
        ({"segments": ("a/b",)}, "segments (--segments)"),
        ({"segments": tuple(f"s{i}" for i in range(9))}, "segments (--segments)"),
        ({"max_segment_values": 0}, "max_segment_values (--max-segment-values)"),
        ({"max_segment_values": 1025}, "max_segment_values (--max-segment-values)"),
        ({"label_deadline_seconds": 0}, "label_deadline_seconds (--label-deadline)"),
        ({"label_deadline_seconds": 91 * 86400}, "label_deadline_seconds (--label-deadline)"),
    ],
)
def test_validate_names_the_field(fields, named):
    with pytest.raises(Rejected, match="^" + re.escape(named)):
        binary(**fields).validate()


def test_validate_accepts_the_limits():
    config = binary(threshold=0, positive_label=0, max_segment_values=1024,
                    segments=tuple(f"s{i}" for i in range(8)),
                    label_deadline_seconds=90 * 86400)  # fmt: skip
    assert config.validate() is config


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"task": "binary"}', '{"task": "binary", "score_output": "p",'
     ' "score_index": 1, "colour": "red"}', '{"task": "binary", "score_output": "p",'
     ' "score_index": 1, "threshold": 2}'],
)  # fmt: skip
def test_from_json_refuses_what_it_cannot_read(text):
    with pytest.raises(Rejected):
        QualityConfig.from_json(text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("probabilities:1", ("probabilities", 1)), ("score", ("score", None)),
     (" output_0:0 ", ("output_0", 0))],
)  # fmt: skip
def test_parse_score_output(text, parsed):
    assert parse_score_output(text) == parsed


@pytest.mark.parametrize("text", ["", ":1", "p:", "p:-1", "p:x", "p:1:2", "p: 1"])
def test_parse_score_output_refuses_bad_forms_naming_the_flag(text):
    with pytest.raises(Rejected, match="--score-output"):
        parse_score_output(text)


def test_signature_outputs_maps_onnxruntime_types():
    signature = {"inputs": [], "outputs": [
        {"name": "probabilities", "type": "tensor(float)", "shape": [-1, 2]},
        {"name": "label", "type": "tensor(int64)", "shape": [-1]},
    ]}  # fmt: skip
    assert signature_outputs(signature) == [
        ("probabilities", "FP32", (-1, 2)), ("label", "INT64", (-1,)),
    ]  # fmt: skip


def test_two_columns_infer_binary_with_the_positive_class_column():
    config = infer_config([LABEL, PROBABILITIES, LOGITS])
    assert (config.task, config.score_output, config.score_index) == ("binary", "probabilities", 1)


def test_positive_label_zero_scores_column_zero():
    assert infer_config([PROBABILITIES], positive_label=0).score_index == 0


def test_more_columns_infer_multiclass_over_the_whole_row():
    config = infer_config([THREE_CLASSES])
    assert (config.task, config.score_index) == ("multiclass", None)


def test_one_column_infers_regression_on_column_zero():
    config = infer_config([COLUMN])
    assert (config.task, config.score_output, config.score_index) == ("regression", "value", 0)


def test_a_rank_one_output_infers_regression_on_the_value():
    assert (infer_config([VECTOR]).task, infer_config([VECTOR]).score_index) == ("regression", None)


def test_the_first_float_output_with_a_known_width_is_chosen():
    assert infer_config([DYNAMIC, LABEL, THREE_CLASSES, PROBABILITIES]).score_output == "scores"
    assert infer_config([DYNAMIC, THREE_CLASSES]).score_index is None


def test_an_explicit_score_output_and_index_are_kept():
    config = infer_config([PROBABILITIES, LOGITS], score_output="logits:0")
    assert (config.task, config.score_output, config.score_index) == ("binary", "logits", 0)


def test_explicit_binary_on_a_single_value_is_the_positive_probability():
    assert infer_config([COLUMN], task="binary").score_index == 0
    assert infer_config([VECTOR], task="binary").score_index is None


def test_explicit_binary_on_many_columns_with_an_index_is_one_against_the_rest():
    config = infer_config([THREE_CLASSES], task="binary", score_output="scores:2")
    assert (config.task, config.score_index) == ("binary", 2)


def test_the_other_fields_are_taken_as_given():
    config = infer_config([PROBABILITIES], threshold=0.3, segments=["gender", "age_band"],
                          max_segment_values=8, label_deadline_seconds=86400)  # fmt: skip
    assert (config.threshold, config.segments, config.max_segment_values,
            config.label_deadline_seconds) == (0.3, ("gender", "age_band"), 8, 86400)  # fmt: skip


def test_no_signature_takes_task_and_score_output_as_given():
    config = infer_config(None, task="regression", score_output="value")
    assert (config.task, config.score_output, config.score_index) == ("regression", "value", None)


@pytest.mark.parametrize(
    ("outputs", "overrides", "named"),
    [
        ([PROBABILITIES], {"score_output": "absent"}, "--score-output"),
        ([PROBABILITIES], {"score_output": "probabilities:2"}, "--score-output INDEX"),
        ([LABEL, PROBABILITIES], {"score_output": "label"}, "--score-output"),
        ([COLUMN], {"task": "multiclass"}, "--task"),
        ([THREE_CLASSES], {"task": "binary"}, "--task"),
        ([THREE_CLASSES], {"score_output": "scores:1", "task": "multiclass"}, "--score-output"),
        ([PROBABILITIES], {"task": "regression"}, "--task"),
        ([DYNAMIC], {"score_output": "scores"}, "--score-output"),
        ([PROBABILITIES], {"task": "ranking"}, "--task"),
        ([PROBABILITIES], {"threshold": 2.0}, "--threshold"),
        ([PROBABILITIES], {"segments": ["a", "a"]}, "--segments"),
        (None, {"task": "binary"}, "--score-output"),
        (None, {"score_output": "p"}, "--task"),
    ],
)
def test_infer_config_refusals_name_the_flag(outputs, overrides, named):
    with pytest.raises(Rejected, match=named):
        infer_config(outputs, **overrides)


def test_no_usable_output_names_the_outputs_found():
    with pytest.raises(Rejected, match=r"label INT64 \[-1\], scores FP32 \[-1, -1\]"):
        infer_config([LABEL, DYNAMIC])


def test_an_unknown_score_output_names_the_known_ones():
    with pytest.raises(Rejected, match=r"probabilities FP32 .*logits FP32"):
        infer_config([PROBABILITIES, LOGITS], score_output="prob")

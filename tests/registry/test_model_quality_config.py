"""A model's quality config through gatectl against a real redis-server: given, inferred from
the newest version's outputs, kept on partial updates, audited and shown."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import redis
from onnx import TensorProto, helper

from registry_client.client import RegistryClient
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl


def scorer(width: int) -> onnx.ModelProto:
    """x FP32 [N,width] -> Identity -> score FP32 [N,width]; plus a label INT64 [N] output."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["score"]),
         helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)],
        "scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", width])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def url(redis_server) -> str:
    return str(redis_server.url)


@pytest.fixture
def registered(url: str, tmp_path: Path) -> Iterator[str]:
    """Models wide2, wide3 and wide1, each with version 1 of scorer(2), scorer(3), scorer(1)."""
    for width in (2, 3, 1):
        path = onnx_models.save(scorer(width), tmp_path, f"wide{width}", "1")
        code, _, err = run_gatectl(url, "register", f"wide{width}", "1", str(path),
                                   "--create-model")  # fmt: skip
        assert code == 0, err
    yield url


def quality(url: str, model: str) -> dict[str, object]:
    code, out, err = run_gatectl(url, "--json", "model", "show", model)
    assert code == 0, err
    shown = json.loads(out)
    assert isinstance(shown["quality"], dict)
    return shown["quality"]


@pytest.mark.parametrize(
    ("task", "score_output", "index"),
    [("binary", "p:1", 1), ("multiclass", "scores", None), ("regression", "value:0", 0)],
)
def test_model_create_with_each_task_stores_it(url, task, score_output, index):
    code, _, err = run_gatectl(url, "model", "create", "credit", "--task", task,
                               "--score-output", score_output)  # fmt: skip
    assert code == 0, err
    stored = quality(url, "credit")
    assert (stored["task"], stored["score_output"], stored["score_index"]) == (
        task, score_output.split(":")[0], index,
    )  # fmt: skip
    assert (stored["threshold"], stored["segments"], stored["label_deadline_seconds"]) == (
        0.5, [], 7 * 86400,
    )  # fmt: skip


def test_a_model_without_versions_needs_task_and_score_output(url):
    run_gatectl(url, "model", "create", "credit")
    code, _, err = run_gatectl(url, "model", "create", "credit", "--task", "binary")
    assert code == 1
    assert "--task" in err and "--score-output" in err


def test_two_columns_infer_binary_on_column_one(registered):
    code, _, err = run_gatectl(registered, "model", "create", "wide2", "--segments", "gender")
    assert code == 0, err
    stored = quality(registered, "wide2")
    assert (stored["task"], stored["score_output"], stored["score_index"]) == ("binary", "score", 1)
    assert stored["segments"] == ["gender"]


def test_three_columns_infer_multiclass(registered):
    assert run_gatectl(registered, "model", "create", "wide3", "--task", "multiclass")[0] == 0
    stored = quality(registered, "wide3")
    assert (stored["task"], stored["score_index"]) == ("multiclass", None)


def test_one_column_infers_regression(registered):
    assert run_gatectl(registered, "model", "create", "wide1", "--threshold", "0.5")[0] == 0
    stored = quality(registered, "wide1")
    assert (stored["task"], stored["score_output"], stored["score_index"]) == (
        "regression", "score", 0,
    )  # fmt: skip


def test_the_newest_version_is_the_one_inferred_from(registered, tmp_path):
    path = onnx_models.save(scorer(3), tmp_path / "newer", "wide2", "2")
    assert run_gatectl(registered, "register", "wide2", "2", str(path))[0] == 0
    assert run_gatectl(registered, "model", "create", "wide2", "--segments", "")[0] == 0
    assert quality(registered, "wide2")["task"] == "multiclass"


def test_an_unknown_score_output_is_refused_naming_the_outputs(registered):
    code, _, err = run_gatectl(registered, "model", "create", "wide2", "--score-output", "probs")
    assert code == 1
    assert "--score-output" in err
    assert "label INT64 [-1]" in err and "score FP32 [-1, 2]" in err


def test_a_task_the_shape_contradicts_is_refused(registered):
    code, _, err = run_gatectl(registered, "model", "create", "wide1", "--task", "multiclass")
    assert code == 1
    assert "--task" in err and "one value per row" in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--threshold", "1.5"), ("--positive-label", "2"), ("--max-segment-values", "0"),
     ("--segments", "gender,gender"), ("--segments", "a b"), ("--task", "ranking")],
)  # fmt: skip
def test_invalid_values_exit_1_naming_the_flag(registered, flag, value):
    code, _, err = run_gatectl(registered, "model", "create", "wide2", flag, value)
    assert code == 1
    assert flag in err


def test_a_malformed_duration_is_a_usage_error_naming_the_flag(registered, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_gatectl(registered, "model", "create", "wide2", "--label-deadline", "soon")
    assert exit_info.value.code == 2
    assert "--label-deadline" in capsys.readouterr().err


def test_a_label_deadline_may_be_up_to_90_days(registered, capsys):
    assert run_gatectl(registered, "model", "create", "wide2", "--label-deadline", "30d")[0] == 0
    assert quality(registered, "wide2")["label_deadline_seconds"] == 30 * 86400
    with pytest.raises(SystemExit) as exit_info:
        run_gatectl(registered, "model", "create", "wide2", "--label-deadline", "91d")
    assert exit_info.value.code == 2
    assert "at most 90d" in capsys.readouterr().err


def test_the_audit_entry_records_the_change(registered, redis_server):
    assert run_gatectl(registered, "model", "create", "wide2", "--label-deadline", "2d")[0] == 0
    client = RegistryClient.from_url(redis_server.url)
    try:
        entry = client.history("wide2")[0]
    finally:
        client.close()
    assert entry["action"] == "model.update"
    before, after = json.loads(entry["before"]), json.loads(entry["after"])
    assert "quality" not in before
    assert json.loads(after["quality"])["label_deadline_seconds"] == 2 * 86400


def test_model_show_json_includes_the_config(registered):
    run_gatectl(registered, "model", "create", "wide2", "--segments", "gender,age_band")
    assert quality(registered, "wide2") == {
        "task": "binary", "score_output": "score", "score_index": 1, "threshold": 0.5,
        "positive_label": 1, "segments": ["gender", "age_band"], "max_segment_values": 32,
        "label_deadline_seconds": 7 * 86400,
    }  # fmt: skip


def test_model_show_prints_one_row_per_quality_field(registered):
    run_gatectl(registered, "model", "create", "wide2", "--segments", "gender,age_band")
    code, out, _ = run_gatectl(registered, "model", "show", "wide2")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.split()}
    assert rows["quality.task"] == ["binary"]
    assert rows["quality.segments"] == ["gender,age_band"]
    assert rows["quality.label_deadline_seconds"] == ["168h"]


def test_updating_only_segments_keeps_the_rest(registered):
    code, _, err = run_gatectl(registered, "model", "create", "wide3", "--task", "binary",
                               "--score-output", "score:2", "--threshold", "0.8",
                               "--label-deadline", "1d", "--segments", "gender")  # fmt: skip
    assert code == 0, err
    before = quality(registered, "wide3")
    assert run_gatectl(registered, "model", "create", "wide3", "--segments", "region")[0] == 0
    assert quality(registered, "wide3") == {**before, "segments": ["region"]}


def test_a_new_positive_label_moves_the_inferred_column(registered):
    run_gatectl(registered, "model", "create", "wide2", "--threshold", "0.7")
    assert run_gatectl(registered, "model", "create", "wide2", "--positive-label", "0")[0] == 0
    stored = quality(registered, "wide2")
    assert (stored["positive_label"], stored["score_index"], stored["threshold"]) == (0, 0, 0.7)


def test_other_updates_leave_the_config_alone(registered):
    run_gatectl(registered, "model", "create", "wide2", "--threshold", "0.7")
    assert run_gatectl(registered, "model", "create", "wide2", "--owner", "risk")[0] == 0
    assert quality(registered, "wide2")["threshold"] == 0.7


def test_an_unreadable_config_is_reported_and_can_be_replaced(registered, redis_server):
    raw = redis.Redis.from_url(redis_server.url)
    try:
        raw.hset("{onnxgate}:model:wide2", "quality", '{"task": "ranking"}')
    finally:
        raw.close()
    code, out, _ = run_gatectl(registered, "--json", "model", "show", "wide2")
    assert code == 0
    assert "unreadable" in json.loads(out)["quality_error"]
    code, _, err = run_gatectl(registered, "model", "create", "wide2", "--threshold", "0.6")
    assert code == 1
    assert "quality config of model 'wide2' is unreadable" in err
    assert run_gatectl(registered, "model", "create", "wide2", "--task", "binary")[0] == 0
    assert quality(registered, "wide2")["task"] == "binary"

"""`gatectl evaluate` against a real redis-server, running real ONNX models built with
onnx.helper: the stored metrics agree with scikit-learn on the same rows (overall and per
segment value), fairness gaps with numpy, segment values are capped as the join caps them, and
every bad file is refused naming it, with nothing stored."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import redis
from onnx import TensorProto, helper, numpy_helper
from sklearn import metrics as sk  # type: ignore[import-untyped]  # sklearn ships no type hints

from registry_client.client import RegistryClient
from registry_client.errors import NotFound, Rejected
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.task import QualityConfig
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

ROWS = 600
WEIGHTS = np.array([[0.0, 1.5], [0.0, -1.0], [0.0, 0.5], [0.0, 0.0]])


class Data:
    """A labelled dataset for the credit classifier: inputs, labels drawn from the model's own
    probabilities (so AUC is well above 0.5), and segments whose selection rates differ."""

    def __init__(self, directory: Path, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((ROWS, 4)).astype(np.float32)
        self.gender = np.where(rng.random(ROWS) < 0.5, "F", "M")
        self.x[self.gender == "F", 0] -= 0.6  # women selected less often: a fairness gap
        logits = self.x.astype(np.float64) @ WEIGHTS
        positive = 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
        self.y = (rng.random(ROWS) < positive).astype(np.int64)
        self.age = rng.choice(["18-25", "26-40", "41-65"], ROWS)
        self.data, self.labels, self.segments = (directory / n for n in
                                                 ("x.npz", "y.npy", "seg.csv"))  # fmt: skip
        np.savez(self.data, input=self.x)
        np.save(self.labels, self.y)
        lines = ["gender,age_band", *(f"{g},{a}" for g, a in zip(self.gender, self.age,
                                                                  strict=True))]  # fmt: skip
        self.segments.write_text("\n".join(lines) + "\n")

    def args(self, *extra: str) -> list[str]:
        return ["evaluate", "credit", "2", "--data", str(self.data), "--labels",
                str(self.labels), "--segments", str(self.segments), *extra]  # fmt: skip


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path):
    """Model credit (binary, segments gender and age_band) with version 2 registered."""
    client = RegistryClient.from_url(redis_server.url)
    config = QualityConfig("binary", "probabilities", 1, segments=("gender", "age_band"))
    client.create_model("credit", actor="ops", quality=config)
    model = onnx_models.linear_classifier(WEIGHTS, np.zeros(2))
    client.register_version("credit", "2", onnx_models.save(model, tmp_path, "credit", "2"),
                            actor="ops")  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def data(tmp_path: Path) -> Data:
    return Data(tmp_path)


def _probabilities(x: np.ndarray) -> np.ndarray:
    logits = x @ WEIGHTS.astype(np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = (exp / exp.sum(axis=1, keepdims=True))[:, 1]
    return probabilities


def _assert_binary_metrics_match_sklearn(
    found: dict[str, float | None], scores: np.ndarray, y: np.ndarray
) -> None:
    predicted = (scores >= 0.5).astype(int)
    assert found["n"] == len(y)
    assert found["accuracy"] == pytest.approx(sk.accuracy_score(y, predicted), abs=1e-12)
    assert found["precision"] == pytest.approx(sk.precision_score(y, predicted), abs=1e-12)
    assert found["recall"] == pytest.approx(sk.recall_score(y, predicted), abs=1e-12)
    assert found["f1"] == pytest.approx(sk.f1_score(y, predicted), abs=1e-12)
    assert found["auc_roc"] == pytest.approx(sk.roc_auc_score(y, scores), abs=0.005)
    assert found["brier"] == pytest.approx(sk.brier_score_loss(y, scores), abs=1e-6)
    assert found["log_loss"] == pytest.approx(sk.log_loss(y, scores), abs=1e-6)


def test_a_binary_evaluation_stores_metrics_equal_to_sklearns(redis_server, registry, data):
    code, out, err = run_gatectl(redis_server.url, *data.args())
    assert code == 0, err
    stored = registry.evaluation("credit", "2")
    assert stored is not None and stored.rows == ROWS and stored.task == "binary"
    scores = _probabilities(data.x)
    _assert_binary_metrics_match_sklearn(dict(stored.metrics), scores, data.y)
    for value in ("F", "M"):
        rows = data.gender == value
        _assert_binary_metrics_match_sklearn(dict(stored.segments["gender"][value]),
                                             scores[rows], data.y[rows])  # fmt: skip
    assert sorted(stored.segments["age_band"]) == ["18-25", "26-40", "41-65"]
    assert "model credit  version 2  task binary  rows 600" in out
    assert "auc_roc" in out and "demographic_parity_difference" in out


def test_the_fairness_gap_is_the_selection_rate_difference_naming_the_lower_value(
    redis_server, registry, data
):
    assert run_gatectl(redis_server.url, *data.args())[0] == 0
    stored = registry.evaluation("credit", "2")
    assert stored is not None
    selected = _probabilities(data.x) >= 0.5
    rates = {v: selected[data.gender == v].mean() for v in ("F", "M")}
    metric, gap, worst = stored.gaps["gender"]
    assert metric == "demographic_parity_difference" and worst == "F"
    assert gap == pytest.approx(rates["M"] - rates["F"], abs=1e-12)
    report = stored.fairness["gender"]
    assert report["demographic_parity_worst"] == "F"
    assert report["rates"]["F"]["selection_rate"] == pytest.approx(rates["F"], abs=1e-12)
    assert stored.worst_gap() is not None


def test_the_evaluation_records_the_files_hashes_and_is_audited(redis_server, registry, data):
    code, out, _ = run_gatectl(redis_server.url, "--json", *data.args("--batch", "7"))
    assert code == 0
    view = json.loads(out)
    stored = registry.evaluation("credit", "2")
    assert stored is not None

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert (stored.data_sha256, stored.labels_sha256, stored.segments_sha256) == (
        sha(data.data), sha(data.labels), sha(data.segments))  # fmt: skip
    assert (view["model"], view["version"], view["rows"]) == ("credit", "2", ROWS)
    assert view["metrics"] == dict(stored.metrics)
    entry = registry.history("credit", limit=1)[0]
    assert (entry["action"], entry["who"]) == ("version.evaluation", "alice")
    assert json.loads(entry["after"]) == {"version": "2", "rows": ROWS,
                                          "data_sha256": sha(data.data)}  # fmt: skip


def test_batches_of_any_size_give_the_same_evaluation(redis_server, registry, data):
    assert run_gatectl(redis_server.url, *data.args("--batch", "1000000"))[0] == 0
    whole = registry.evaluation("credit", "2")
    assert run_gatectl(redis_server.url, *data.args("--batch", "13"))[0] == 0
    batched = registry.evaluation("credit", "2")
    assert whole is not None and batched is not None
    assert (whole.metrics, whole.segments, whole.gaps) == (
        batched.metrics, batched.segments, batched.gaps)  # fmt: skip


def test_segment_values_past_the_cap_count_as_other_in_the_order_met(redis_server, registry, data):
    config = registry.model_quality("credit")
    assert config is not None
    capped = {**config.as_dict(), "segments": ("gender", "age_band"), "max_segment_values": 2}
    registry.create_model("credit", actor="ops", quality=QualityConfig(**capped))
    data.segments.write_text("age_band\n" + "\n".join(data.age) + "\n")
    assert run_gatectl(redis_server.url, *data.args())[0] == 0
    stored = registry.evaluation("credit", "2")
    assert stored is not None
    first_two = list(dict.fromkeys(data.age))[:2]
    counts = {k: v["n"] for k, v in stored.segments["age_band"].items()}
    assert set(counts) == {*first_two, "__other__"}
    assert counts["__other__"] == sum(1 for a in data.age if a not in first_two)
    assert "gender" not in stored.segments  # a dimension the file does not give


def _register(registry: RegistryClient, directory: Path, name: str, model: onnx.ModelProto,
              config: QualityConfig) -> None:  # fmt: skip
    registry.create_model(name, actor="ops", quality=config)
    registry.register_version(name, "1", onnx_models.save(model, directory, name, "1"),
                              actor="ops", upload=True)  # fmt: skip


def _gemm(name: str, weights: np.ndarray, output: str, softmax: bool) -> onnx.ModelProto:
    width = weights.shape[1]
    nodes = [helper.make_node("Gemm", ["x", "W"], ["raw" if softmax else output])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["raw"], [output], axis=1))
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 3])],
        [helper.make_tensor_value_info(output, TensorProto.DOUBLE, ["N", width])],
        [numpy_helper.from_array(weights, "W")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_a_multiclass_evaluation_of_an_uploaded_version_matches_sklearn(
    redis_server, registry, tmp_path
):
    rng = np.random.default_rng(8)
    weights = rng.normal(0, 1, (3, 4))
    _register(registry, tmp_path, "kind", _gemm("kind", weights, "scores", softmax=True),
              QualityConfig("multiclass", "scores", None))  # fmt: skip
    x = rng.standard_normal((300, 3))
    y = np.argmax(x @ weights + rng.normal(0, 1.0, (300, 4)), axis=1)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "y.npy", y.astype(np.float64))
    files = ["--data", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy")]
    code, _, err = run_gatectl(redis_server.url, "evaluate", "kind", "1", *files)
    assert code == 0, err
    stored = registry.evaluation("kind", "1")
    assert stored is not None and stored.segments == {} and stored.segments_sha256 is None
    predicted = np.argmax(x @ weights, axis=1)
    assert stored.metrics["accuracy"] == pytest.approx(sk.accuracy_score(y, predicted))
    assert stored.metrics["macro_f1"] == pytest.approx(sk.f1_score(y, predicted, average="macro"))


def test_a_regression_evaluation_matches_sklearn(redis_server, registry, tmp_path):
    rng = np.random.default_rng(9)
    weights = rng.normal(0, 1, (3, 1))
    _register(registry, tmp_path, "price", _gemm("price", weights, "value", softmax=False),
              QualityConfig("regression", "value", 0))  # fmt: skip
    x = rng.standard_normal((250, 3))
    y = (x @ weights)[:, 0] + rng.normal(0, 0.3, 250)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "y.npy", y[:, None])  # [N, 1] reads as one label per row
    files = ["--data", str(tmp_path / "x.npz"), "--labels", str(tmp_path / "y.npy")]
    code, _, err = run_gatectl(redis_server.url, "evaluate", "price", "1", *files)
    assert code == 0, err
    stored = registry.evaluation("price", "1")
    assert stored is not None
    predicted = (x @ weights)[:, 0]
    assert stored.metrics["mae"] == pytest.approx(sk.mean_absolute_error(y, predicted))
    assert stored.metrics["rmse"] == pytest.approx(sk.root_mean_squared_error(y, predicted))
    assert stored.metrics["r2"] == pytest.approx(sk.r2_score(y, predicted))


def _refused(url: str, registry: RegistryClient, argv: list[str], message: str) -> None:
    before = registry.history("credit", limit=1)
    code, out, err = run_gatectl(url, *argv)
    assert code == 1, (out, err)
    assert message in err, err
    assert registry.evaluation("credit", "2") is None
    assert registry.history("credit", limit=1) == before  # nothing audited either


def test_a_missing_input_array_is_refused_naming_it(redis_server, registry, data):
    np.savez(data.data, features=data.x)
    message = f"--data {data.data}: no array for the model's input 'input' (found: 'features')"
    _refused(redis_server.url, registry, data.args(), message)


def test_an_array_that_is_not_an_input_is_refused(redis_server, registry, data):
    np.savez(data.data, input=data.x, extra=data.x)
    _refused(redis_server.url, registry, data.args(), "array 'extra' is not an input")


def test_an_input_of_the_wrong_kind_is_refused(redis_server, registry, data):
    np.savez(data.data, input=data.x.astype(np.complex64))
    _refused(redis_server.url, registry, data.args(),
             "array 'input' holds complex64; the model's input is tensor(float)")  # fmt: skip


def test_labels_of_another_length_are_refused(redis_server, registry, data):
    np.save(data.labels, data.y[:-1])
    _refused(redis_server.url, registry, data.args(),
             f"--labels {data.labels}: {ROWS - 1} labels for {ROWS} rows of --data")  # fmt: skip


def test_a_label_the_task_cannot_take_is_refused_naming_its_row(redis_server, registry, data):
    y = data.y.copy()
    y[17] = 2
    np.save(data.labels, y)
    _refused(redis_server.url, registry, data.args(),
             "labels[17]: 2.0 is not a binary label (0 or 1) (binary model)")  # fmt: skip


def test_labels_that_are_not_numbers_are_refused(redis_server, registry, data):
    np.save(data.labels, np.array(["yes"] * ROWS))
    _refused(redis_server.url, registry, data.args(), "labels are numbers")


def test_an_unknown_segment_column_is_refused(redis_server, registry, data):
    data.segments.write_text("gender,region\nF,north\n")
    message = "column 'region' is not a segment of the model (its segments: gender, age_band)"
    _refused(redis_server.url, registry, data.args(), message)


def test_segments_of_another_length_are_refused(redis_server, registry, data):
    data.segments.write_text("gender\n" + "\n".join(data.gender[:10]) + "\n")
    message = f"--segments {data.segments}: 10 rows of gender for {ROWS} rows of --data"
    _refused(redis_server.url, registry, data.args(), message)


def test_a_data_file_that_is_not_an_npz_archive_is_refused(redis_server, registry, data):
    with data.data.open("wb") as file:  # np.save would add .npy to the name
        np.save(file, data.x)
    _refused(redis_server.url, registry, data.args(), "expected an .npz archive")
    data.data.write_bytes(b"not numpy at all")
    _refused(redis_server.url, registry, data.args(), "not an .npz archive numpy can read")
    np.savez(data.data)
    _refused(redis_server.url, registry, data.args(), "holds no arrays")


def test_a_file_that_cannot_be_read_is_refused(redis_server, registry, data):
    data.labels.unlink()
    _refused(redis_server.url, registry, data.args(),
             f"--labels {data.labels}: cannot read it (No such file or directory)")  # fmt: skip


def test_an_unregistered_version_and_a_model_without_a_quality_config_are_refused(
    redis_server, registry, data, tmp_path
):
    argv = data.args()
    argv[2] = "7"
    code, _, err = run_gatectl(redis_server.url, *argv)
    assert code == 1 and "version '7' of model 'credit' is not registered" in err
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "plain", "1")
    registry.create_model("plain", actor="ops")
    registry.register_version("plain", "1", path, actor="ops")
    argv = data.args()
    argv[1:3] = ["plain", "1"]
    code, _, err = run_gatectl(redis_server.url, *argv)
    assert code == 1 and "model 'plain' has no quality config" in err


def test_a_malformed_batch_is_a_usage_error(redis_server, registry, data, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse's own exit for a bad flag
        run_gatectl(redis_server.url, *data.args("--batch", "0"))
    assert exited.value.code == 2
    assert "argument --batch: expected a whole number of rows >= 1" in capsys.readouterr().err


def test_an_artifact_file_changed_since_registration_is_refused(
    redis_server, registry, data, tmp_path
):
    onnx_models.save(onnx_models.classifier(seed=9), tmp_path, "credit", "2")  # overwritten
    _refused(redis_server.url, registry, data.args(), "changed since it was registered")


def test_an_evaluation_round_trips_and_a_second_replaces_the_first(registry) -> None:
    first = Evaluation(time=1.5, data_sha256="a" * 64, labels_sha256="b" * 64,
                       segments_sha256=None, rows=10, task="binary",
                       metrics={"auc_roc": 0.8, "precision": None},
                       segments={"gender": {"F": {"n": 4.0}, "M": {"n": 6.0}}},
                       fairness={"gender": {"demographic_parity_difference": 0.1}},
                       gaps={"gender": ("demographic_parity_difference", 0.1, "F")})  # fmt: skip
    registry.record_evaluation("credit", "2", first, actor="alice")
    assert registry.evaluation("credit", "2") == first
    second = Evaluation(time=2.0, data_sha256="c" * 64, labels_sha256="d" * 64,
                        segments_sha256="e" * 64, rows=3, task="binary", metrics={})  # fmt: skip
    registry.record_evaluation("credit", "2", second, actor="bob")
    assert registry.evaluation("credit", "2") == second
    actions = [(e["action"], e["who"]) for e in registry.history("credit", limit=2)]
    assert actions == [("version.evaluation", "bob"), ("version.evaluation", "alice")]


def test_an_evaluation_of_an_unregistered_version_is_not_found(registry) -> None:
    evaluation = Evaluation(1.0, "a" * 64, "b" * 64, None, 1, "binary", {})
    with pytest.raises(NotFound, match="version '9' of model 'credit' is not registered"):
        registry.record_evaluation("credit", "9", evaluation, actor="alice")
    assert registry.evaluation("credit", "9") is None


def test_an_unreadable_stored_evaluation_is_refused_naming_the_version(
    registry, redis_server
) -> None:
    with redis.Redis.from_url(redis_server.url) as raw:
        raw.hset(registry.keys.version("credit", "2"), "evaluation", '{"format": 1}')
    with pytest.raises(Rejected, match="the evaluation of credit 2 is unreadable"):
        registry.evaluation("credit", "2")

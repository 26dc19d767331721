"""`gatectl accuracy` and `gatectl fairness` over labels really joined in a real Redis: the
figures they print equal scikit-learn's and a plain numpy computation on the same rows, per
version, role and segment value; undefined figures are "-" (null); refusals name the field."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn import metrics  # type: ignore[import-untyped]  # sklearn ships no type hints

from registry_client.client import RegistryClient
from registry_client.quality.labels import Label
from registry_client.quality.task import QualityConfig
from tests.support.gatectl import run_gatectl
from tests.support.joined_labels import Row, join_all, log_and_label
from tests.support.redis_server import RedisServer

N = 1500  # labelled predictions per model
UNLABELLED = 300
NOW = time.time()
BASE = int(NOW) - 3 * 3600  # the predictions' times: the last three hours
GENDERS = np.array(["F", "M", "X"])
V1, V2 = ("1", "primary"), ("2", "shadow")
BINARY = QualityConfig("binary", "probabilities", 1, segments=("gender", "region"),
                       label_deadline_seconds=86400.0)  # fmt: skip
MULTICLASS = QualityConfig("multiclass", "label", None, segments=("gender",),
                           label_deadline_seconds=86400.0)  # fmt: skip
REGRESSION = QualityConfig("regression", "value", None, segments=("gender",),
                           label_deadline_seconds=86400.0)  # fmt: skip


def _decimal(values: np.ndarray) -> np.ndarray:
    """Scores as the prediction log stores them (7 significant digits) store them exactly."""
    return np.array([float(f"{v:.4f}") for v in values.tolist()])


class Data:
    """Each model's rows as numpy arrays: what the expected figures are computed from."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        total = N + UNLABELLED
        self.gender = rng.choice(GENDERS, total, p=[0.45, 0.45, 0.10])
        self.region = rng.choice(np.array(["north", "south"]), total)
        logits = rng.normal(0.0, 1.5, total)
        self.labels = (rng.random(total) < 1 / (1 + np.exp(-logits))).astype(int)
        under = np.where(self.gender == "X", -0.8, 0.0)  # version 1 under-selects X
        noisy = logits + under + rng.normal(0.0, 0.8, total)
        self.scores = {
            V1: np.clip(_decimal(1 / (1 + np.exp(-noisy))), 0.0001, 0.9999),
            V2: np.clip(_decimal(1 / (1 + np.exp(-(logits + rng.normal(0, 0.5, total))))),
                        0.0001, 0.9999),
        }  # fmt: skip
        self.classes = rng.integers(0, 4, total)
        hit = rng.random(total) < np.where(self.gender == "X", 0.5, 0.8)
        self.predicted_class = np.where(hit, self.classes, (self.classes + 1) % 4)
        self.values = _decimal(rng.normal(10.0, 3.0, total))
        self.estimates = _decimal(self.values + rng.normal(0.2, np.where(self.gender == "X",
                                                                         2.0, 1.0)))  # fmt: skip

    def rows(self, task: str) -> list[Row]:
        found = []
        for i in range(N + UNLABELLED):
            labelled = i < N
            if task == "binary":
                scores = {key: float(s[i]) for key, s in self.scores.items()}
                label: float | None = float(self.labels[i])
                segments: tuple[str, ...] = (str(self.gender[i]), str(self.region[i]))
            elif task == "multiclass":
                scores = {V1: float(self.predicted_class[i])}
                label, segments = float(self.classes[i]), (str(self.gender[i]),)
            else:
                scores = {V1: float(self.estimates[i])}
                label, segments = float(self.values[i]), (str(self.gender[i]),)
            found.append(Row(f"r{i}", BASE + 5 * i, segments, scores,
                             label if labelled else None))  # fmt: skip
        return found


DATA = Data(7)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Redis for the module (the tests only read): credit (binary, version 1 primary and 2
    its shadow), digits (multiclass), price (regression), plain (no quality config), each with
    N labelled and UNLABELLED unlabelled predictions; credit also has 3 labels for unknown ids
    and one label replaced twice; tiny (binary) two negatives."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    client = RegistryClient.from_url(server.url)
    for model, config in (("credit", BINARY), ("digits", MULTICLASS), ("price", REGRESSION)):
        client.create_model(model, actor="ops", quality=config)
        log_and_label(client, model, config, DATA.rows(config.task), NOW)
    client.create_model("plain", actor="ops")
    client.create_model("tiny", actor="ops", quality=BINARY)  # two negatives: no recall, no AUC
    log_and_label(client, "tiny", BINARY, [Row("t0", BASE, ("F", "north"), {V1: 0.7}, 0.0),
                                           Row("t1", BASE, ("M", "north"), {V1: 0.2}, 0.0)],
                  NOW)  # fmt: skip
    client.put_labels("credit", [Label(f"ghost{i}", 1) for i in range(3)], NOW)
    right = float(DATA.labels[0])
    for value in (1 - right, right):  # replaced, then replaced back
        client.put_labels("credit", [Label("r0", value)], NOW)
        join_all(client, "credit", BINARY, NOW)
    client.close()
    yield server.url
    server.stop()


def _json(url: str, *argv: str) -> dict[str, Any]:
    code, out, err = run_gatectl(url, "--json", *argv)
    assert (code, err) == (0, ""), err
    found: dict[str, Any] = json.loads(out)
    return found


def _versions(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["version"], r["role"]): r for r in report["versions"]}


def _sklearn_binary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predicted = (scores >= 0.5).astype(int)
    coarse = np.minimum((scores * 2000).astype(int), 1999) // 200
    ece = sum(abs(scores[coarse == c].sum() - labels[coarse == c].sum())
              for c in np.unique(coarse)) / len(scores)  # fmt: skip
    return {
        "precision": metrics.precision_score(labels, predicted),
        "recall": metrics.recall_score(labels, predicted),
        "f1": metrics.f1_score(labels, predicted),
        "accuracy": metrics.accuracy_score(labels, predicted),
        "auc_roc": metrics.roc_auc_score(labels, scores),
        "pr_auc": metrics.average_precision_score(labels, scores),
        "brier": metrics.brier_score_loss(labels, scores),
        "log_loss": metrics.log_loss(labels, scores),
        "ece": float(ece),
    }


def _assert_binary_equals_sklearn(found: dict[str, float], expected: dict[str, float],
                                  where: object) -> None:  # fmt: skip
    for name in ("precision", "recall", "f1", "accuracy"):
        assert found[name] == expected[name], (where, name)
    assert found["auc_roc"] == pytest.approx(expected["auc_roc"], abs=0.005), where
    assert found["pr_auc"] == pytest.approx(expected["pr_auc"], abs=0.01), where
    for name in ("brier", "log_loss", "ece"):
        assert found[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (where, name)


def test_accuracy_json_equals_sklearn_per_version_role_and_segment(url):
    rows = _versions(_json(url, "accuracy", "credit", "--segment", "gender"))
    assert list(rows) == [V1, V2]
    labels = DATA.labels[:N]
    for key in (V1, V2):
        scores = DATA.scores[key][:N]
        _assert_binary_equals_sklearn(rows[key]["metrics"], _sklearn_binary(scores, labels), key)
        segments = rows[key]["segments"]
        assert sorted(segments) == ["F", "M", "X"]
        for value in ("F", "M", "X"):
            mask = DATA.gender[:N] == value
            found = segments[value]
            assert found["labelled"] == mask.sum()
            expected = _sklearn_binary(scores[mask], labels[mask])
            _assert_binary_equals_sklearn(found["metrics"], expected, (key, value))


def test_accuracy_counts_rows_coverage_delay_and_the_join(url):
    report = _json(url, "accuracy", "credit")
    one = _versions(report)[V1]
    assert (one["labelled"], one["logged"]) == (N, N + UNLABELLED)
    assert one["coverage"] == N / (N + UNLABELLED)
    delays = NOW - (BASE + 5 * np.arange(N))
    # log-spaced buckets: within 19% of the true quantile
    assert one["label_delay_seconds"]["p50"] == pytest.approx(np.median(delays), rel=0.2)
    assert one["label_delay_seconds"]["p90"] == pytest.approx(np.quantile(delays, 0.9), rel=0.2)
    assert report["join_counts"] == {"joined": N + 2, "replaced": 2, "unmatched:unknown_id": 3}
    assert report["task"] == "binary" and report["joiners"] == ["gw-1"]


def test_accuracy_table_shows_the_tasks_columns_per_version_and_the_join_footer(url):
    code, out, err = run_gatectl(url, "accuracy", "credit")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("model credit  task binary  from ")
    assert lines[1].split() == ["version", "role", "labelled", "logged", "coverage", "auc_roc",
                                "pr_auc", "precision", "recall", "f1", "accuracy", "brier",
                                "log_loss", "ece", "delay", "p50", "delay", "p90"]  # fmt: skip
    one = lines[2].split()
    assert one[:5] == ["1", "primary", str(N), str(N + UNLABELLED), "83.3%"]
    expected = _sklearn_binary(DATA.scores[V1][:N], DATA.labels[:N])
    assert one[7] == f"{expected['precision']:.4f}"
    assert lines[3].split()[:2] == ["2", "shadow"]
    assert lines[-1] == (f"labels joined (all time, every joiner): joined {N + 2}, replaced 2,"
                         " unmatched:unknown_id 3")  # fmt: skip


def test_accuracy_segment_table_has_a_row_per_value_after_the_versions_own(url):
    code, out, _ = run_gatectl(url, "accuracy", "credit", "--version", "2", "--segment",
                               "region")  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:6] == ["version", "role", "region", "labelled", "logged", "coverage"]
    cells = [line.split()[:5] for line in lines[2:5]]
    north = int((DATA.region[:N] == "north").sum())
    assert cells == [["2", "shadow", "(all)", str(N), str(N + UNLABELLED)],
                     ["2", "shadow", "north", str(north), "-"],
                     ["2", "shadow", "south", str(N - north), "-"]]  # fmt: skip


def test_accuracy_role_filter_and_json_after_the_command(url):
    code, out, _ = run_gatectl(url, "accuracy", "credit", "--role", "shadow", "--json")
    assert code == 0
    assert list(_versions(json.loads(out))) == [V2]


def test_an_undefined_metric_is_a_dash_and_null(url):
    one = _versions(_json(url, "accuracy", "tiny"))[V1]
    assert (one["metrics"]["recall"], one["metrics"]["auc_roc"], one["metrics"]["pr_auc"]) == (
        None, None, None)  # fmt: skip
    assert (one["metrics"]["precision"], one["metrics"]["accuracy"]) == (0.0, 0.5)
    _, out, _ = run_gatectl(url, "accuracy", "tiny")
    cells = dict(zip(out.splitlines()[1].split(), out.splitlines()[2].split(), strict=False))
    assert (cells["auc_roc"], cells["pr_auc"], cells["recall"], cells["precision"]) == (
        "-", "-", "-", "0.0000")  # fmt: skip


def _direct_fairness(version: tuple[str, str]) -> dict[str, dict[str, float]]:
    predicted, labels = DATA.scores[version][:N] >= 0.5, DATA.labels[:N] == 1
    rates = {}
    for value in ("F", "M", "X"):
        m = DATA.gender[:N] == value
        y, p = labels[m], predicted[m]
        rates[value] = {
            "selection_rate": p.sum() / m.sum(), "tpr": (p & y).sum() / y.sum(),
            "fpr": (p & ~y).sum() / (~y).sum(), "precision": (p & y).sum() / p.sum(),
            "accuracy": (p == y).sum() / m.sum(), "n": m.sum(),
        }  # fmt: skip
    return rates


def _spread(rates: dict[str, dict[str, float]], name: str) -> tuple[float, str]:
    by_value = {v: r[name] for v, r in rates.items()}
    low = min(by_value, key=lambda v: by_value[v])
    return max(by_value.values()) - by_value[low], low


def test_fairness_figures_equal_numpy_and_name_the_worst_value(url):
    report = _json(url, "fairness", "credit", "--segment", "gender", "--version", "1")
    side = report["version"]
    assert (side["version"], side["role"], side["rows"]) == ("1", "primary", N)
    direct = _direct_fairness(V1)
    scores, labels = DATA.scores[V1][:N], DATA.labels[:N]
    for value, expected in direct.items():
        found = side["values"][value]
        for name, rate in expected.items():
            assert found[name] == rate, (value, name)
        mask = DATA.gender[:N] == value
        auc = metrics.roc_auc_score(labels[mask], scores[mask])
        assert found["auc_roc"] == pytest.approx(auc, abs=0.005), value
    parity, parity_worst = _spread(direct, "selection_rate")
    opportunity, opportunity_worst = _spread(direct, "tpr")
    false_positives, fpr_worst = _spread(direct, "fpr")
    selection = [r["selection_rate"] for r in direct.values()]
    figures = side["figures"]
    assert figures["demographic_parity_difference"] == {"value": parity, "worst": parity_worst}
    assert figures["demographic_parity_ratio"] == {"value": min(selection) / max(selection),
                                                   "worst": parity_worst}  # fmt: skip
    assert figures["equal_opportunity_difference"] == {"value": opportunity,
                                                       "worst": opportunity_worst}  # fmt: skip
    odds = max((opportunity, opportunity_worst), (false_positives, fpr_worst),
               key=lambda item: item[0])  # fmt: skip
    assert figures["equalized_odds_difference"] == {"value": odds[0], "worst": odds[1]}
    assert parity_worst == "X"  # the segment version 1 under-selects
    assert min(selection) / max(selection) < 0.8 and side["four_fifths_ok"] is False


def test_fairness_against_puts_the_second_version_beside_with_the_differences(url):
    report = _json(url, "fairness", "credit", "--segment", "gender", "--version", "1",
                   "--against", "2")  # fmt: skip
    side, other = report["version"], report["against"]
    assert (other["version"], other["role"]) == ("2", "shadow")  # where version 2 has rows
    direct = _direct_fairness(V2)
    for value, expected in direct.items():
        assert {k: other["values"][value][k] for k in expected} == expected
        for name in ("selection_rate", "tpr", "fpr", "precision", "accuracy", "auc_roc"):
            assert report["differences"]["values"][value][name] == (
                side["values"][value][name] - other["values"][value][name])  # fmt: skip
    parity, _ = _spread(direct, "selection_rate")
    assert other["figures"]["demographic_parity_difference"]["value"] == parity
    assert report["differences"]["figures"]["demographic_parity_difference"] == (
        side["figures"]["demographic_parity_difference"]["value"] - parity)  # fmt: skip


def test_fairness_table_shows_values_figures_and_the_four_fifths_verdict(url):
    code, out, err = run_gatectl(url, "fairness", "credit", "--segment", "gender", "--against",
                                 "2")  # fmt: skip
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("model credit  segment gender  version 1 (primary)  against 2"
                               " (shadow)  from ")  # fmt: skip
    assert lines[1].split() == ["value", "version", "rows", "selection", "TPR", "FPR",
                                "precision", "accuracy", "AUC"]  # fmt: skip
    assert [line.split()[:2] for line in lines[2:5]] == [["F", "1"], ["F", "2"], ["F", "diff"]]
    report = _json(url, "fairness", "credit", "--segment", "gender", "--against", "2")
    parity = report["version"]["figures"]["demographic_parity_difference"]
    parity_line = next(line.split() for line in lines if line.startswith("demographic parity d"))
    assert parity_line[3:5] == [f"{parity['value']:.4f}", "X"]
    verdict = "pass" if report["version"]["four_fifths_ok"] else "fail"
    assert any(line.startswith(f"four-fifths rule (ratio >= 0.8)  {verdict}")
               for line in lines)  # fmt: skip


def test_multiclass_accuracy_and_fairness_gap_equal_sklearn_and_numpy(url):
    predicted, classes = DATA.predicted_class[:N], DATA.classes[:N]
    one = _versions(_json(url, "accuracy", "digits", "--segment", "gender"))[V1]
    for found, mask in [(one, np.ones(N, dtype=bool))] + [
        (one["segments"][v], DATA.gender[:N] == v) for v in ("F", "M", "X")
    ]:
        assert found["metrics"]["accuracy"] == metrics.accuracy_score(classes[mask],
                                                                      predicted[mask])  # fmt: skip
        macro = metrics.f1_score(classes[mask], predicted[mask], average="macro")
        assert found["metrics"]["macro_f1"] == pytest.approx(macro, rel=1e-12)
    side = _json(url, "fairness", "digits", "--segment", "gender")["version"]
    accuracy = {v: float((predicted == classes)[DATA.gender[:N] == v].mean()) for v in "FMX"}
    worst = min(accuracy, key=lambda v: accuracy[v])
    assert {v: side["values"][v]["accuracy"] for v in "FMX"} == accuracy
    assert side["figures"] == {"accuracy_difference": {
        "value": max(accuracy.values()) - accuracy[worst], "worst": worst}}  # fmt: skip
    assert worst == "X"


def test_regression_accuracy_and_fairness_gap_equal_sklearn_and_numpy(url):
    estimates, values = DATA.estimates[:N], DATA.values[:N]
    found = _versions(_json(url, "accuracy", "price"))[V1]["metrics"]
    expected = {
        "mae": metrics.mean_absolute_error(values, estimates),
        "rmse": math.sqrt(metrics.mean_squared_error(values, estimates)),
        "bias": float(np.mean(estimates - values)),
        "r2": metrics.r2_score(values, estimates),
    }
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-9), name
    side = _json(url, "fairness", "price", "--segment", "gender")["version"]
    mae = {v: float(np.abs(estimates - values)[DATA.gender[:N] == v].mean()) for v in "FMX"}
    worst = max(mae, key=lambda v: mae[v])
    for v in "FMX":
        assert side["values"][v]["mae"] == pytest.approx(mae[v], rel=1e-12)
    gap = side["figures"]["mae_difference"]
    assert gap["worst"] == worst == "X"
    assert gap["value"] == pytest.approx(mae[worst] - min(mae.values()), rel=1e-9)


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (["accuracy", "fraud"], 1, "model 'fraud' is not registered"),
        (["accuracy", "plain"], 1, "model 'plain' has no quality config (field quality):"
                                   " expected one"),
        (["accuracy", "credit", "--segment", "age"], 1,
         "--segment: expected one of the model's segments (gender, region), got 'age'"),
        (["fairness", "credit", "--segment", "age"], 1, "--segment: expected one of"),
        (["accuracy", "credit", "--version", "9"], 1, "model 'credit' has no version '9'"),
        (["fairness", "credit", "--segment", "gender", "--against", "9"], 1,
         "model 'credit' has no version '9'"),
        (["fairness", "credit"], 2, "the following arguments are required: --segment"),
        (["accuracy", "credit", "--role", "canary"], 2, "--role: invalid choice"),
        (["accuracy", "credit", "--since", "100d"], 2, "at most 90d"),
    ],
)  # fmt: skip
def test_what_cannot_be_answered_is_refused_naming_the_field(url, argv, exit_code, message,
                                                             capsys):  # fmt: skip
    try:
        code, _, err = run_gatectl(url, *argv)
    except SystemExit as usage:  # argparse's own exit for a bad flag
        code, err = int(str(usage.code)), ""
    assert code == exit_code
    assert message in err + capsys.readouterr().err

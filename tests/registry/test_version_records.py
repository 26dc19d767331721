"""What a version's record tells a reviewer, through gatectl: its model card and the ONNX
file's own facts, its lineage (a parent must exist), metrics measured after registration, and
`version show`, the whole record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import onnx
import pytest

from registry_client.cli.main import main
from tests.support import onnx_models

CARD_YAML = """\
training_data:
  uri: s3://risk/credit/2026-10.parquet
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  rows: 1200000
  time_range: {start: 2025-01-01, end: 2026-09-30}
algorithm: gradient-boosted trees
intended_use: pre-screening of consumer credit applications
limitations: |
  Not validated for business loans.
  Scores drift after rate changes.
contact: risk-ml@example.com
evaluated_segments: [gender, age_band]
"""


def _gatectl(url: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", url, "--actor", "alice", *args], env={}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _produced(seed: int) -> onnx.ModelProto:
    model = onnx_models.classifier(seed=seed)
    model.producer_name, model.producer_version = "skl2onnx", "1.17.0"
    model.doc_string = "credit default classifier"
    onnx.helper.set_model_props(model, {"team": "risk", "git": "4f2a9c1"})
    return model


@pytest.fixture
def url(redis_server, tmp_path: Path) -> str:
    url = str(redis_server.url)
    assert _gatectl(url, "model", "create", "credit")[0] == 0
    return url


def _register(url: str, tmp_path: Path, version: str, *flags: str) -> tuple[int, str]:
    path = onnx_models.save(_produced(int(version)), tmp_path, "credit", version)
    code, _, err = _gatectl(url, "register", "credit", version, str(path), *flags)
    return code, err


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_card_round_trips_and_the_onnx_facts_are_read_from_the_file(url, tmp_path, suffix):
    import yaml  # the JSON card is the YAML one, converted

    document = yaml.safe_load(CARD_YAML)
    card = tmp_path / f"card{suffix}"
    card.write_text(CARD_YAML if suffix == ".yaml" else json.dumps(document, default=str))
    code, err = _register(url, tmp_path, "1", "--card", str(card))
    assert code == 0, err
    shown = json.loads(_gatectl(url, "--json", "version", "show", "credit", "1")[1])
    assert shown["card"] == {
        "training_data": {"uri": "s3://risk/credit/2026-10.parquet",
                          "sha256": document["training_data"]["sha256"], "rows": 1200000,
                          "time_range": {"start": "2025-01-01", "end": "2026-09-30"}},
        "algorithm": "gradient-boosted trees",
        "intended_use": "pre-screening of consumer credit applications",
        "limitations": "Not validated for business loans.\nScores drift after rate changes.",
        "contact": "risk-ml@example.com", "evaluated_segments": ["gender", "age_band"],
    }  # fmt: skip
    facts = shown["onnx"]
    assert (facts["producer_name"], facts["producer_version"]) == ("skl2onnx", "1.17.0")
    assert facts["metadata_props"] == {"team": "risk", "git": "4f2a9c1"}
    assert facts["doc_string"] == "credit default classifier"
    assert facts["opset_imports"] == {"ai.onnx": 17} and facts["ir_version"] >= 8
    assert [i["name"] for i in shown["signature"]["inputs"]] == ["input"]


def test_unknown_card_fields_are_refused_by_name_and_nothing_is_registered(url, tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(CARD_YAML.replace("  rows: 1200000", "  rowz: 1200000"))
    code, err = _register(url, tmp_path, "1", "--card", str(card))
    assert code == 1
    assert "card.training_data.rowz: unknown field; expected one of" in err
    assert _gatectl(url, "--json", "versions", "credit")[1] == "[]\n"


def test_lineage_names_a_registered_parent_and_walks_back(url, tmp_path):
    sha = "ab" * 32
    code, err = _register(
        url, tmp_path, "1", "--lineage", f"data=s3://d/1,data_sha256={sha},code=r1"
    )
    assert code == 0, err
    code, err = _register(url, tmp_path, "2", "--lineage", "parent=1,code=r2,run=mlflow-77")
    assert code == 0, err
    code, err = _register(url, tmp_path, "3", "--lineage", "parent=9")
    assert (code, err) == (1, "gatectl: lineage.parent: version '9' of model 'credit' is not"
                              " registered (a parent is registered first)\n")  # fmt: skip
    code, err = _register(url, tmp_path, "3", "--lineage", "origin=laptop")
    assert code == 1 and "lineage.origin: unknown field; expected one of parent, data" in err
    code, err = _register(url, tmp_path, "3", "--lineage", "data_sha256=abc")
    assert code == 1 and "lineage.data_sha256: expected 64 lowercase hex digits" in err

    chain = json.loads(_gatectl(url, "--json", "lineage", "credit", "2")[1])
    assert [(c["version"], c.get("code"), c.get("data_sha256")) for c in chain] == [
        ("2", "r2", None), ("1", "r1", sha)]  # fmt: skip
    code, out, _ = _gatectl(url, "lineage", "credit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "version", "sha256", "registered", "data",
                                "data_sha256", "code", "run"]  # fmt: skip
    assert lines[1].split()[:2] == ["credit", "2"] and lines[1].split()[-2:] == ["r2", "mlflow-77"]
    assert _gatectl(url, "lineage", "credit", "7")[0] == 1


def test_metrics_are_added_over_time_and_compare_shows_the_latest(url, tmp_path, capsys):
    assert _register(url, tmp_path, "1", "--metrics", "auc=0.91,recall=0.8")[0] == 0
    code, out, err = _gatectl(url, "metrics", "add", "credit", "1", "auc=0.88", "--source",
                              "offline-eval-2026-12")  # fmt: skip
    assert code == 0, err
    assert out.startswith("credit version 1: auc=0.88 from offline-eval-2026-12 at ")
    history = json.loads(_gatectl(url, "--json", "metrics", "history", "credit", "1")[1])
    assert [(m["source"], m["values"], m["by"]) for m in history] == [
        ("registration", {"auc": 0.91, "recall": 0.8}, "alice"),
        ("offline-eval-2026-12", {"auc": 0.88}, "alice"),
    ]  # fmt: skip
    audited = json.loads(_gatectl(url, "--json", "route", "history", "credit", "--limit", "1")[1])
    assert audited[0]["action"] == "version.metrics"
    compared = json.loads(_gatectl(url, "--json", "compare", "credit", "1")[1])
    row = compared["versions"][0]
    assert row["metrics"] == {"auc": 0.88, "recall": 0.8}
    assert row["metric_sources"]["auc"]["source"] == "offline-eval-2026-12"
    assert row["metric_sources"]["recall"]["source"] == "registration"
    code, out, _ = _gatectl(url, "compare", "credit", "1")
    assert "0.88 (offline-eval-2026-12)" in out

    code, _, err = _gatectl(url, "metrics", "add", "credit", "1", "auc=nan", "--source", "x")
    assert (code, err) == (1, "gatectl: metrics.auc: expected a finite number, got nan\n")
    for usage, message in (
        (["auc=high", "--source", "x"], "auc: expected a number, got 'high'"),
        (["auc=1"], "the following arguments are required: --source"),
    ):
        with pytest.raises(SystemExit) as exited:  # argparse's usage error
            _gatectl(url, "metrics", "add", "credit", "1", *usage)
        assert exited.value.code == 2 and message in capsys.readouterr().err
    code, _, err = _gatectl(url, "metrics", "add", "credit", "9", "auc=1", "--source", "x")
    assert code == 1 and "version '9' of model 'credit' is not registered" in err


def test_version_show_prints_the_whole_record(url, tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(CARD_YAML)
    assert _register(url, tmp_path, "1", "--card", str(card), "--lineage", "code=r1")[0] == 0
    assert _register(url, tmp_path, "2", "--lineage", "parent=1")[0] == 0
    _gatectl(
        url, "route", "set", "credit", "--split", "1=90,2=10", "--reason", "canary", "--no-wait"
    )
    _gatectl(url, "metrics", "add", "credit", "1", "auc=0.9", "--source", "eval")
    code, out, _ = _gatectl(url, "version", "show", "credit", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("credit version 1: primary 90% since ")
    sections = [line for line in lines if line and not line.startswith(" ") and
                line in {"artifact", "onnx", "signature", "card", "lineage", "metrics",
                         "evaluation", "deployment history"}]  # fmt: skip
    assert sections == ["artifact", "onnx", "signature", "card", "lineage", "metrics",
                        "evaluation", "deployment history"]  # fmt: skip
    assert any(line.split()[:2] == ["producer", "skl2onnx"] for line in lines)
    assert any(line.startswith("training_data.rows") and "1200000" in line for line in lines)
    history = lines[lines.index("deployment history") + 2 :]
    assert [line.split()[2:4] for line in history] == [["version.register", "-"],
        ["route.set", "split"], ["version.metrics", "split"]]  # fmt: skip
    record = json.loads(_gatectl(url, "--json", "version", "show", "credit", "2")[1])
    assert record["status"]["status"] == "canary 10%"
    assert [c["version"] for c in record["lineage"]] == ["2", "1"]
    assert record["card"] is None and record["evaluation"] is None
    assert _gatectl(url, "version", "show", "credit", "5")[0] == 1

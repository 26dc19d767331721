"""gatectl against a real redis-server: output, JSON and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import redis

from registry_client.cli.main import main
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl


@pytest.fixture
def url(redis_server, tmp_path: Path) -> str:
    """A registry with model credit, versions 1-3 registered through gatectl."""
    for version, seed in (("1", 1), ("2", 2), ("3", 3)):
        path = onnx_models.save(onnx_models.classifier(seed=seed), tmp_path, "credit", version)
        flags = ["--create-model"] if version == "1" else []
        parent = "" if version == "1" else f",parent={int(version) - 1}"
        code, out, err = _gatectl(
            redis_server.url, "register", "credit", version, str(path), *flags,
            "--metrics", "auc=0.9", "--lineage", f"data=s3://bucket/train.csv{parent}",
        )  # fmt: skip
        assert code == 0, err
        assert out.startswith(f"registered credit version {version} sha256 ")
    return str(redis_server.url)


def test_route_set_prints_the_rule_with_shares(url):
    code, out, _ = _gatectl(
        url, "route", "set", "credit", "--split", "1=90,2=10", "--shadow", "3=5",
        "--reason", "canary step",
    )  # fmt: skip
    assert code == 0
    assert "revision 1" in out
    assert "90.0%" in out and "10.0%" in out and "5% mirrored" in out
    assert "canary step" in out


def test_route_show_json_is_the_stored_rule(url):
    _gatectl(url, "route", "set", "credit", "--split", "1=100")
    code, out, _ = _gatectl(url, "--json", "route", "show", "credit")
    assert code == 0
    rule = json.loads(out)
    assert (rule["revision"], rule["split"], rule["updated_by"]) == (
        1, [{"version": "1", "weight": 100}], "alice",
    )  # fmt: skip


def test_invalid_weights_exit_1_naming_the_field(url):
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "1=0,2=0")
    assert code == 1
    assert "weights must have a positive sum" in err


def test_malformed_split_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _gatectl(url, "route", "set", "credit", "--split", "1:90")
    assert exit_info.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_stale_expected_revision_exits_3(url):
    _gatectl(url, "route", "set", "credit", "--split", "1=100")
    _gatectl(url, "route", "set", "credit", "--split", "2=100")
    code, _, err = _gatectl(
        url, "route", "set", "credit", "--split", "3=100", "--expected-revision", "1"
    )
    assert code == 3
    assert "read it again" in err


def test_unreachable_redis_exits_4(redis_server):
    url = redis_server.url
    redis_server.stop()
    code, _, err = _gatectl(url, "models")
    assert code == 4
    assert "Redis is unreachable" in err


@pytest.mark.parametrize(
    ("setting", "value", "said"),
    [
        ("maxmemory", "1", "it is full (used memory above maxmemory"),
        ("min-replicas-to-write", "1", "the primary has fewer connected replicas than its"),
    ],
)
def test_a_redis_refusing_writes_exits_4_saying_why_and_writes_nothing(
    redis_server, url, setting, value, said
):
    admin = redis.Redis.from_url(url)
    default = str(admin.config_get(setting)[setting])
    admin.config_set(setting, value)
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "1=100", "--no-wait")
    assert code == 4
    assert f"gatectl: Redis refused the write: {said}" in err
    admin.config_set(setting, default)
    code, out, _ = _gatectl(url, "route", "set", "credit", "--split", "1=100", "--no-wait")
    assert code == 0 and "revision 1" in out  # the refused write left no revision behind
    admin.close()


def test_missing_redis_url_is_a_usage_error():
    out, err = io.StringIO(), io.StringIO()
    assert main(["models"], {}, out, err) == 2
    assert "--redis-url" in err.getvalue()


def test_history_and_rollback(url):
    _gatectl(url, "route", "set", "credit", "--split", "1=100", "--reason", "launch")
    _gatectl(url, "route", "set", "credit", "--split", "1=50,2=50", "--reason", "half")
    code, out, _ = _gatectl(url, "route", "rollback", "credit", "--to-revision", "1")
    assert code == 0 and "revision 3" in out and "rollback to revision 1" in out
    code, out, _ = _gatectl(url, "route", "history", "credit")
    lines = out.splitlines()
    assert lines[0].split() == ["when", "who", "action", "revision", "reason"]
    assert "route.rollback" in lines[1] and "route.set" in lines[2]


def test_models_and_versions_tables(url):
    code, out, _ = _gatectl(url, "models")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["credit", "3"]
    code, out, _ = _gatectl(url, "--json", "versions", "credit")
    listed = json.loads(out)
    assert [v["version"] for v in listed] == ["1", "2", "3"]
    assert json.loads(listed[0]["metrics"]) == {"auc": 0.9}
    assert json.loads(listed[0]["lineage"]) == {"data": "s3://bucket/train.csv"}
    assert json.loads(listed[2]["lineage"]) == {"data": "s3://bucket/train.csv", "parent": "2"}
    code, out, _ = _gatectl(url, "versions", "credit")
    assert out.splitlines()[0].split() == ["version", "status", "since", "sha256", "bytes",
                                           "registered", "by", "at"]  # fmt: skip
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["registered"] * 3


def test_import_registers_a_model_directory_idempotently(redis_server):
    examples = Path(__file__).resolve().parents[2] / "examples" / "models"
    code, out, _ = _gatectl(redis_server.url, "import", str(examples))
    assert code == 0
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["credit", "1"], ["credit", "2"], ["echo", "1"],
    ]  # fmt: skip
    assert _gatectl(redis_server.url, "import", str(examples))[0] == 0  # again: no change
    code, out, _ = _gatectl(redis_server.url, "--json", "versions", "credit")
    assert [v["version"] for v in json.loads(out)] == ["1", "2"]


def test_import_of_a_missing_directory_exits_1(redis_server, tmp_path):
    code, _, err = _gatectl(redis_server.url, "import", str(tmp_path / "absent"))
    assert code == 1 and "is not a directory" in err


def test_retired_version_cannot_be_routed_to_until_unretired(url):
    code, out, _ = _gatectl(url, "version", "retire", "credit", "3", "--reason", "leaks PII")
    assert (code, out) == (0, "credit version 3: retired\n")
    code, out, _ = _gatectl(url, "version", "retire", "credit", "3")
    assert (code, out) == (0, "credit version 3: retired already\n")
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "3=100")
    assert code == 1 and "is retired" in err
    code, out, _ = _gatectl(url, "version", "unretire", "credit", "3", "--reason", "fixed")
    assert (code, out) == (0, "credit version 3: registered\n")
    code, _, _ = _gatectl(url, "route", "set", "credit", "--split", "3=100")
    assert code == 0


def test_a_routed_version_cannot_be_retired(url):
    _gatectl(url, "route", "set", "credit", "--split", "1=90,2=10", "--shadow", "3=20")
    for version in ("2", "3"):
        code, out, err = _gatectl(url, "version", "retire", "credit", version)
        assert (code, out) == (1, "")
        assert err == (f"gatectl: version '{version}' of model 'credit' is in its rule"
                       " (revision 1: 1=90 2=10 shadow 3=20%); route it away first"
                       " (gatectl route set)\n")  # fmt: skip
    status = {v["version"]: v["deployment"]["status"]
              for v in json.loads(_gatectl(url, "--json", "versions", "credit")[1])}  # fmt: skip
    assert status == {"1": "primary 90%", "2": "canary 10%", "3": "shadow 20%"}


def test_register_records_tags_and_description(url, tmp_path):
    path = onnx_models.save(onnx_models.classifier(seed=8), tmp_path, "credit", "8")
    code, _, _ = _gatectl(url, "register", "credit", "8", str(path), "--tags", "gbm,2026q4",
                          "--description", "retrained on October")  # fmt: skip
    assert code == 0
    listed = json.loads(_gatectl(url, "--json", "versions", "credit")[1])
    eight = next(v for v in listed if v["version"] == "8")
    assert (eight["tags"], eight["description"]) == ("gbm,2026q4", "retrained on October")

"""`gatectl get rules -o yaml` and `gatectl apply -f`: rules kept as a file, applied with the
diff shown, compare-and-set per model, a bad file refused whole."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import make_gateway
from tests.support.redis_server import RedisServer


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> str:
    """credit 1-3 with all traffic on 1; echo 1 with all traffic on it."""
    client = RegistryClient.from_url(redis_server.url)
    for model, versions in (("credit", ("1", "2", "3")), ("echo", ("1",))):
        client.create_model(model, actor="ops")
        for version in versions:
            path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, model, version)
            client.register_version(model, version, path, actor="ops")
        client.set_route(model, [Split("1", 100)], actor="ops")
    client.close()
    return redis_server.url


def _rules(url: str) -> dict[str, object]:
    code, out, err = run_gatectl(url, "get", "rules", "-o", "yaml")
    assert (code, err) == (0, "")
    document: dict[str, object] = yaml.safe_load(out)
    return document


def _write(path: Path, document: object) -> str:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def _audit_length(url: str, model: str) -> int:
    return len(json.loads(run_gatectl(url, "--json", "route", "history", model)[1]))


def test_get_rules_and_apply_round_trip_without_writing(url, tmp_path):
    document = _rules(url)
    assert document == {"format": "onnxgate-rules/1", "rules": {
        "credit": {"revision": 1, "split": {"1": 100}, "sticky": True},
        "echo": {"revision": 1, "split": {"1": 100}, "sticky": True}}}  # fmt: skip
    assert json.loads(run_gatectl(url, "get", "rules", "--json")[1]) == document
    before = _audit_length(url, "credit")
    code, out, _ = run_gatectl(url, "apply", "-f", _write(tmp_path / "rules.yaml", document))
    assert code == 0 and "2 model(s): 2 unchanged" in out
    assert _audit_length(url, "credit") == before


def test_an_unreadable_rule_is_named_left_out_and_fails_the_export(url, redis_server):
    raw = RegistryClient.from_url(url)
    raw._redis.set(raw.keys.route("echo"), b"{not json")
    raw.close()
    code, out, err = run_gatectl(url, "get", "rules", "-o", "yaml")
    assert code == 1 and list(yaml.safe_load(out)["rules"]) == ["credit"]
    assert "rule of model 'echo' left out: it cannot be read" in err
    code, out, err = run_gatectl(url, "get", "rules", "echo", "-o", "yaml")
    assert code == 1 and yaml.safe_load(out)["rules"] == {} and "'echo' left out" in err
    assert run_gatectl(url, "get", "rules", "credit", "-o", "yaml")[0] == 0


def test_dry_run_shows_the_diff_and_writes_nothing_then_apply_writes_it(url, tmp_path):
    document = _rules(url)
    document["rules"]["credit"]["split"] = {"1": 90, "2": 10}  # type: ignore[index]
    document["rules"]["credit"]["shadows"] = {"3": 5}  # type: ignore[index]
    path = _write(tmp_path / "rules.yaml", document)
    code, out, _ = run_gatectl(url, "apply", "-f", path, "--dry-run")
    assert code == 0
    assert "credit  would change  split 1=100 -> 1=90,2=10; shadows - -> 3=5%" in out
    assert "dry run: nothing written" in out
    assert _rules(url)["rules"]["credit"]["revision"] == 1  # type: ignore[index]

    code, out, _ = run_gatectl(url, "apply", "-f", path, "--no-wait", "--reason", "canary 2")
    assert code == 0 and "credit  changed" in out and "echo    unchanged" in out
    credit = json.loads(run_gatectl(url, "--json", "route", "show", "credit")[1])
    assert credit["split"] == [{"version": "1", "weight": 90}, {"version": "2", "weight": 10}]
    assert credit["shadows"] == [{"version": "3", "percent": 5.0}]
    assert (credit["revision"], credit["reason"], credit["updated_by"]) == (2, "canary 2", "alice")


def test_a_rule_changed_since_the_file_was_read_is_refused_and_the_others_written(url, tmp_path):
    document = _rules(url)
    document["rules"]["credit"]["split"] = {"2": 100}  # type: ignore[index]
    document["rules"]["echo"]["sticky"] = False  # type: ignore[index]
    path = _write(tmp_path / "rules.yaml", document)
    assert run_gatectl(url, "route", "set", "credit", "--split", "3=100", "--no-wait")[0] == 0
    code, out, err = run_gatectl(url, "apply", "-f", path, "--no-wait")
    assert code == 3
    assert "credit  conflict" in out and "echo    changed" in out
    assert "gatectl: credit: its rule is at revision 2, the file's at 1" in err
    assert _rules(url)["rules"]["credit"]["split"] == {"3": 100}  # type: ignore[index]
    assert _rules(url)["rules"]["echo"]["sticky"] is False  # type: ignore[index]


def test_a_file_without_revisions_says_what_each_rule_must_be(url, tmp_path):
    assert run_gatectl(url, "route", "set", "credit", "--split", "3=100", "--no-wait")[0] == 0
    document = {"format": "onnxgate-rules/1", "rules": {"credit": {"split": {1: 50, 2: 50}}}}
    code, out, _ = run_gatectl(url, "apply", "-f", _write(tmp_path / "r.yaml", document),
                               "--no-wait")  # fmt: skip
    assert code == 0 and "split 3=100 -> 1=50,2=50" in out


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"credit": {"split": {"1": "all"}}}, "rules.credit.split.1: expected a whole number"),
        ({"credit": {"split": {"9": 100}}}, "version '9' of model 'credit' is not registered"),
        ({"nope": {"split": {"1": 100}}}, "model 'nope' is not registered"),
        (
            {"credit": {"split": {"1": 100}, "weight": 3}},
            "rules.credit: unknown field(s) ['weight']",
        ),
        ({"credit": {"split": {}}}, "rules.credit: split: expected at least one version"),
        ({"credit": {"split": {1.5: 100}}}, "rules.credit.split: 1.5 is not a version name"),
    ],
)
def test_a_bad_file_is_refused_whole_naming_the_field(url, tmp_path, rules, message):
    # echo's change is valid, but nothing is written when any rule of the file is not.
    document = {"format": "onnxgate-rules/1",
                "rules": {"echo": {"split": {"1": 100}, "sticky": False}, **rules}}  # fmt: skip
    code, out, err = run_gatectl(url, "apply", "-f", _write(tmp_path / "bad.yaml", document))
    assert code == 1 and out == ""
    assert message in err, err
    assert _rules(url)["rules"]["echo"]["sticky"] is True  # type: ignore[index]


def test_a_file_that_is_not_a_rule_set_is_refused(url, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("format: onnxgate-rules/2\nrules: {}\n")
    code, _, err = run_gatectl(url, "apply", "-f", str(path))
    assert code == 1 and "format: expected 'onnxgate-rules/1'" in err
    path.write_text("rules: [\n")
    assert "not YAML or JSON" in run_gatectl(url, "apply", "-f", str(path))[2]
    assert "cannot be read" in run_gatectl(url, "apply", "-f", str(tmp_path / "absent"))[2]


def test_apply_reads_standard_input(url, monkeypatch):
    text = yaml.safe_dump({"format": "onnxgate-rules/1",
                           "rules": {"credit": {"split": {"2": 100}}}})  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, out, _ = run_gatectl(url, "apply", "-f", "-", "--no-wait")
    assert code == 0 and "credit  changed  split 1=100 -> 2=100" in out


def test_yaml_output_is_only_for_get_rules(url, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_gatectl(url, "route", "show", "credit", "-o", "yaml")
    assert exit_info.value.code == 2
    assert "-o yaml: only `gatectl get rules` writes YAML" in capsys.readouterr().err


@pytest.mark.parametrize(
    "write",
    [["route", "set", "credit", "--split", "1=90,2=10", "--shadow", "3=5"],
     ["route", "rollback", "credit", "--to-revision", "1"]],
)  # fmt: skip
def test_route_writes_with_dry_run_check_everything_and_write_nothing(url, write):
    assert run_gatectl(url, "route", "set", "credit", "--split", "2=100", "--no-wait")[0] == 0
    history = _audit_length(url, "credit")
    code, out, err = run_gatectl(url, *write, "--dry-run")
    assert (code, err) == (0, "")
    assert out.startswith("model credit  revision 2 -> revision 3  (dry run: nothing written)")
    assert "  split 2=100 -> 1=" in out
    assert _rules(url)["rules"]["credit"] == {  # type: ignore[index]
        "revision": 2, "split": {"2": 100}, "sticky": True}  # fmt: skip
    assert _audit_length(url, "credit") == history
    shown = json.loads(run_gatectl(url, "--json", *write, "--dry-run")[1])
    assert shown["dry_run"] is True and shown["before"]["revision"] == 2
    assert shown["after"]["revision"] == 3


def test_a_dry_run_refuses_what_the_write_would_refuse(url):
    code, out, err = run_gatectl(url, "route", "set", "credit", "--split", "9=100", "--dry-run")
    assert code == 1 and out == "" and "version '9' of model 'credit' is not registered" in err
    code, _, err = run_gatectl(url, "route", "set", "credit", "--split", "2=100",
                               "--expected-revision", "7", "--dry-run")  # fmt: skip
    assert code == 3 and "is at revision 1, not 7" in err


def test_each_rule_applied_is_named_with_its_gateways(url, tmp_path):
    gateway = make_gateway(None, redis_url=url, rules_poll_seconds=0.2)
    try:
        document = _rules(url)
        document["rules"]["credit"]["split"] = {"1": 50, "2": 50}  # type: ignore[index]
        document["rules"]["echo"]["sticky"] = False  # type: ignore[index]
        code, out, _ = run_gatectl(url, "apply", "-f", _write(tmp_path / "rules.yaml", document),
                                   "--wait", "30")  # fmt: skip
        assert code == 0
        assert out.splitlines()[-2:] == [
            "credit revision 2: applied by 1 of 1 live gateways",
            "echo revision 2: applied by 1 of 1 live gateways",
        ]
    finally:
        gateway.stop(grace_seconds=1)

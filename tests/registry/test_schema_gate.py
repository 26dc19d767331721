"""The schema gate through gatectl: route set, rollout start and rollback refuse a version
whose inputs or outputs do not fit the callers of the version it joins or replaces, naming
each mismatch; --allow-schema-change with a reason lets it through, audited."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from registry_client.cli.main import main
from tests.support import onnx_models
from tests.support.onnx_models import TensorSpec

FLOAT, DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE
INPUT: TensorSpec = ("input", FLOAT, ["N", 4])
OUTPUTS: tuple[TensorSpec, ...] = (("probabilities", FLOAT, ["N", 2]), ("logits", FLOAT, ["N", 2]))


def _gatectl(url: str, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--redis-url", url, "--actor", "alice", *args], env={}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _register(url: str, tmp_path: Path, version: str, model: onnx.ModelProto,
              *flags: str) -> None:  # fmt: skip
    path = onnx_models.save(model, tmp_path, "credit", version)
    code, _, err = _gatectl(url, "register", "credit", version, str(path), *flags)
    assert code == 0, err


@pytest.fixture
def url(redis_server, tmp_path: Path) -> str:
    """credit: version 1 (the classifier callers are built against) serving alone."""
    url = str(redis_server.url)
    assert _gatectl(url, "model", "create", "credit")[0] == 0
    _register(url, tmp_path, "1", onnx_models.classifier(seed=1),
              "--feature-names", "age,income,debt,tenure")  # fmt: skip
    assert _gatectl(url, "route", "set", "credit", "--split", "1=100")[0] == 0
    return url


MISMATCHES: dict[str, tuple[Sequence[TensorSpec], Sequence[TensorSpec], list[str], str]] = {
    "input renamed": (
        [("features", FLOAT, ["N", 4])], OUTPUTS, [],
        'input "input": missing, expected tensor(float) [-1, 4]; version 2 against 1: input'
        ' "features": extra tensor(float) [-1, 4], expected none (callers do not send it)',
    ),
    "datatype": (
        [("input", DOUBLE, ["N", 4])], OUTPUTS, [],
        'input "input": datatype tensor(double), expected tensor(float)',
    ),
    "rank": (
        [("input", FLOAT, ["N", 4, 1])], OUTPUTS, [],
        'input "input": rank 3 [-1, 4, 1], expected rank 2 [-1, 4]',
    ),
    "fixed dimension": (
        [("input", FLOAT, ["N", 5])], OUTPUTS, [],
        'input "input": shape [-1, 5], expected [-1, 4] (dimension 1 differs)',
    ),
    "dynamic dimension fixed": (
        [("input", FLOAT, [1, 4])], OUTPUTS, [],
        'input "input": shape [1, 4], expected [-1, 4] (dimension 0 is fixed; callers send'
        " any size)",
    ),
    "output missing": (
        [INPUT], OUTPUTS[:1], [],
        'output "logits": missing, expected tensor(float) [-1, 2]',
    ),
    "output datatype": (
        [INPUT], (OUTPUTS[0], ("logits", DOUBLE, ["N", 2])), [],
        'output "logits": datatype tensor(double), expected tensor(float)',
    ),
    "feature names": (
        [INPUT], OUTPUTS, ["--feature-names", "age,debt,income,tenure"],
        'input "input": feature names ["age", "debt", "income", "tenure"], expected ["age",'
        ' "income", "debt", "tenure"]',
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(MISMATCHES))
def test_each_mismatch_is_refused_by_name_and_an_override_is_audited(url, tmp_path, kind):
    inputs, outputs, flags, message = MISMATCHES[kind]
    _register(url, tmp_path, "2", onnx_models.interface(inputs, outputs), *flags)
    code, out, err = _gatectl(url, "route", "set", "credit", "--split", "1=90,2=10")
    assert (code, out) == (1, "")
    assert err.startswith("gatectl: the schema of 'credit' would change for callers built"
                          f" against version '1': version 2 against 1: {message}.")  # fmt: skip
    assert "--allow-schema-change" in err
    rule = json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])
    assert rule["revision"] == 1  # nothing written

    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "1=90,2=10",
                            "--allow-schema-change")  # fmt: skip
    assert code == 1 and "an override of the schema gate needs one (--reason)" in err
    allowed = ["--allow-schema-change", "--reason", "callers send v2's schema"]
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "1=90,2=10", *allowed)
    assert code == 0, err
    history = json.loads(_gatectl(url, "--json", "route", "history", "credit", "--limit", "2")[1])
    override = next(e for e in history if e["action"] == "schema.override")
    assert override["who"] == "alice" and override["reason"] == "callers send v2's schema"
    assert "; ".join(json.loads(override["after"])["mismatches"]) == (
        f"version 2 against 1: {message}")  # fmt: skip


def test_compatible_versions_pass_unasked(url, tmp_path):
    # Same inputs and outputs, more outputs, a fixed dimension made dynamic: all fit.
    _register(url, tmp_path, "2", onnx_models.classifier(seed=2))
    wider = onnx_models.interface([("input", FLOAT, ["N", "F"])],
                                  [*OUTPUTS, ("embedding", FLOAT, ["N", 8])])  # fmt: skip
    _register(url, tmp_path, "3", wider)
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "1=80,2=10,3=10")
    assert code == 0, err


def test_rollout_start_and_rollback_pass_the_same_gate(url, tmp_path):
    _register(url, tmp_path, "2", onnx_models.interface([("input", DOUBLE, ["N", 4])], OUTPUTS))
    code, _, err = _gatectl(url, "rollout", "start", "credit", "--candidate", "2", "--no-wait")
    assert code == 1
    assert ('version 2 against 1: input "input": datatype tensor(double), expected'
            " tensor(float)") in err  # fmt: skip
    assert json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])["revision"] == 1
    override = ["--allow-schema-change", "--reason", "callers moved to doubles"]
    code, _, err = _gatectl(url, "rollout", "start", "credit", "--candidate", "2", "--no-wait",
                            *override)  # fmt: skip
    assert code == 0, err
    assert _gatectl(url, "rollout", "abort", "credit", "--no-wait")[0] == 0

    # Version 2 alone (the abort took it out of the rule: it joins again), then back to
    # revision 1: version 1 no longer fits the callers of version 2.
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "2=100")
    assert code == 1 and "datatype tensor(double)" in err
    code, _, err = _gatectl(url, "route", "set", "credit", "--split", "2=100", *override)
    assert code == 0, err
    revision = json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])["revision"]
    code, _, err = _gatectl(url, "route", "rollback", "credit", "--to-revision", "1")
    assert code == 1 and ("version 1 against 2: input \"input\": datatype tensor(float),"
                          " expected tensor(double)") in err  # fmt: skip
    assert json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])["revision"] == revision
    code, _, err = _gatectl(url, "route", "rollback", "credit", "--to-revision", "1",
                            "--allow-schema-change", "--no-wait")  # fmt: skip
    assert code == 0, err
    entry = json.loads(_gatectl(url, "--json", "route", "history", "credit", "--limit", "1")[1])
    assert entry[0]["action"] == "schema.override"
    assert entry[0]["reason"] == "rollback to revision 1"

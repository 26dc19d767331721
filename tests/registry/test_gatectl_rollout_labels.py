"""`gatectl rollout start` with gates on labels, against a real redis-server: a candidate is
refused without an evaluation, or with one that fails the plan's own fairness and accuracy
thresholds (the refusal says why); the new flags are validated naming themselves; a rollout
document stored before the gates existed still loads. Nothing judges here (no gateway runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from registry_client.client import RegistryClient
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",))
DATA, LABELS = "a" * 64, "b" * 64


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path):
    """Model credit (binary, segment gender), versions 1 and 2, all traffic on 1."""
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops", quality=CONFIG)
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 100)], actor="ops")
    yield client
    client.close()


def _evaluated(registry: RegistryClient, version: str, auc: float, gap: float = 0.02,
               data: str = DATA) -> None:  # fmt: skip
    registry.record_evaluation("credit", version, Evaluation(
        time=1.0, data_sha256=data, labels_sha256=LABELS, segments_sha256=None, rows=1000,
        task="binary", metrics={"auc_roc": auc, "accuracy": 0.8},
        gaps={"gender": ("demographic_parity_difference", gap, "F")},
    ), actor="alice")  # fmt: skip


def _start(url: str, *flags: str) -> tuple[int, str, str]:
    return run_gatectl(url, "rollout", "start", "credit", "--candidate", "2", "--no-wait", *flags)


def _refused(url: str, registry: RegistryClient, flags: list[str], message: str) -> None:
    code, _, err = _start(url, *flags)
    assert code == 1 and message in err, err
    assert run_gatectl(url, "rollout", "status", "credit")[0] == 1  # no rollout stored
    rule = registry.get_route("credit")
    assert rule is not None and rule.revision == 1


def test_a_candidate_without_an_evaluation_is_refused(redis_server, registry) -> None:
    _refused(redis_server.url, registry, ["--require-evaluation"],
             "--require-evaluation: the candidate 2 of 'credit' has no evaluation: run gatectl"
             " evaluate credit 2 --data ... --labels ... first")  # fmt: skip


def test_a_candidate_whose_evaluation_is_unfair_is_refused_naming_the_gap(
    redis_server, registry
) -> None:
    _evaluated(registry, "2", 0.85, gap=0.31)
    message = (
        "the candidate 2's evaluation has a fairness gap of 0.31 on gender"
        " (demographic_parity_difference, worst value 'F'), over --max-fairness-gap 0.1"
    )
    flags = ["--require-evaluation", "--max-fairness-gap", "0.1"]
    _refused(redis_server.url, registry, flags, message)


def test_a_candidate_evaluated_less_accurate_than_the_baseline_is_refused(
    redis_server, registry
) -> None:
    _evaluated(registry, "1", 0.86)
    _evaluated(registry, "2", 0.80)
    message = (
        "the candidate 2's evaluation is worse than the baseline 1's by 0.06 (drop in"
        " auc_roc; auc_roc: candidate 0.8, baseline 0.86), over --max-auc-drop 0.02"
    )
    _refused(
        redis_server.url, registry, ["--require-evaluation", "--max-auc-drop", "0.02"], message
    )


def test_comparing_evaluations_needs_the_baselines_on_the_same_data(redis_server, registry) -> None:
    _evaluated(registry, "2", 0.85)
    flags = ["--require-evaluation", "--max-auc-drop", "0.02"]
    message = "the baseline 1 of 'credit' has no evaluation: run gatectl evaluate credit 1"
    _refused(redis_server.url, registry, flags, message)
    _evaluated(registry, "1", 0.85, data="c" * 64)
    message = "--max-auc-drop: the candidate 2 and the baseline 1 were evaluated on different"
    _refused(redis_server.url, registry, flags, message + " data")


def test_a_candidate_whose_evaluation_passes_starts_with_the_gates_in_its_plan(
    redis_server, registry
) -> None:
    _evaluated(registry, "1", 0.86)
    _evaluated(registry, "2", 0.85, gap=0.05)
    code, _, err = _start(redis_server.url, "--require-evaluation", "--max-auc-drop", "0.02",
                          "--max-fairness-gap", "0.1", "--min-label-coverage", "0.3",
                          "--min-labels", "200", "--label-wait", "2h")  # fmt: skip
    assert code == 0, err
    view = json.loads(run_gatectl(redis_server.url, "--json", "rollout", "status", "credit")[1])
    plan = view["plan"]
    assert (plan["require_evaluation"], plan["max_auc_drop"], plan["max_fairness_gap"]) == (
        True, 0.02, 0.1)  # fmt: skip
    assert (plan["min_label_coverage"], plan["min_labels"], plan["label_wait_seconds"]) == (
        0.3, 200, 7200.0)  # fmt: skip
    assert view["labels_waiting_since"] is None


def test_label_gates_need_a_quality_config_and_fairness_needs_segments(
    redis_server, registry
) -> None:
    registry.create_model("credit", actor="ops",
                          quality=QualityConfig("binary", "probabilities", 1))  # fmt: skip
    _refused(redis_server.url, registry, ["--max-fairness-gap", "0.1"],
             "max_fairness_gap (--max-fairness-gap): model 'credit' has no segments to judge"
             " fairness by")  # fmt: skip
    with redis.Redis.from_url(redis_server.url) as raw:
        raw.hdel(registry.keys.model("credit"), "quality")
    _refused(
        redis_server.url,
        registry,
        ["--min-label-coverage", "0.5"],
        "model 'credit' has no quality config, which the label gates need",
    )


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--max-auc-drop", "2"], 1, "max_auc_drop (--max-auc-drop): expected a number from 0"
                                     " to 1, got 2.0"),
        (["--max-auc-drop", "x"], 2, "argument --max-auc-drop: invalid float value"),
        (["--max-fairness-gap", "-1"], 1, "max_fairness_gap (--max-fairness-gap): expected a"
                                          " number >= 0"),
        (["--min-label-coverage", "0"], 1, "min_label_coverage (--min-label-coverage): expected"
                                           " more than 0"),
        (["--min-labels", "0"], 1, "min_labels (--min-labels): expected an integer from 1"),
        (["--label-wait", "0.5"], 1, "label_wait_seconds (--label-wait): expected 1s to 90d"),
        (["--label-wait", "soon"], 2, "argument --label-wait: expected a duration"),
    ],
)  # fmt: skip
def test_a_label_gate_out_of_range_exits_naming_its_flag(
    redis_server, registry, flags: list[str], code: int, message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    if code == 2:  # argparse's own usage errors exit before main returns
        with pytest.raises(SystemExit) as exited:
            _start(redis_server.url, *flags)
        assert exited.value.code == 2 and message in capsys.readouterr().err
        return
    _refused(redis_server.url, registry, flags, message)


def test_a_rollout_stored_before_the_label_gates_still_shows_and_aborts(
    redis_server, registry
) -> None:
    assert _start(redis_server.url)[0] == 0
    key = registry.keys.rollout("credit")
    with redis.Redis.from_url(redis_server.url) as raw:
        doc = json.loads(raw.get(key))
        for name in ("require_evaluation", "max_auc_drop", "max_fairness_gap",
                     "min_label_coverage", "min_labels", "label_wait_seconds"):  # fmt: skip
            del doc["plan"][name]
        del doc["labels_waiting_since"]
        raw.set(key, json.dumps(doc))
    code, out, _ = run_gatectl(redis_server.url, "rollout", "status", "credit")
    assert code == 0 and "status progressing" in out and "waiting for labels" not in out
    code, out, _ = run_gatectl(redis_server.url, "rollout", "abort", "credit", "--no-wait")
    assert code == 0 and "status aborted" in out

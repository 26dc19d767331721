"""`gatectl rollout` against a real redis-server: what operators type, what they read back,
and the exit codes of what cannot be done. No gateway runs here, so nothing judges the
rollouts: these tests are about the plan, the operator's actions and their audit."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest
import redis

from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.redis_server import RedisServer


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> str:
    """Model credit with versions 1-3; its rule sends everything to version 1."""
    for version in ("1", "2", "3"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        flags = ["--create-model"] if version == "1" else []
        assert _gatectl(redis_server.url, "register", "credit", version, str(path), *flags)[0] == 0
    assert _gatectl(redis_server.url, "route", "set", "credit", "--split", "1=100")[0] == 0
    return str(redis_server.url)


def _start(url: str, *flags: str) -> tuple[int, str, str]:
    return _gatectl(url, "rollout", "start", "credit", "--candidate", "2", *flags)


def test_start_serves_the_first_step_at_once_and_status_shows_the_plan(url: str) -> None:
    code, out, err = _start(url, "--steps", "5,25,100", "--interval", "5m")
    assert code == 0, err
    assert "model credit  candidate 2  baseline 1  status progressing" in out
    assert "step 1/3  candidate weight 5%  steps 5,25,100  interval 5m  failures 0 of 2" in out
    assert "started " in out and " by alice  leader -  rule revision 2" in out
    code, out, _ = _gatectl(url, "--json", "route", "show", "credit")
    rule = json.loads(out)
    assert rule["split"] == [{"version": "1", "weight": 95}, {"version": "2", "weight": 5}]
    assert rule["reason"] == "rollout of 2: step 1/3, 5%" and rule["updated_by"] == "alice"
    code, out, _ = _gatectl(url, "--json", "rollout", "status", "credit")
    view = json.loads(out)
    assert (view["status"], view["step"], view["candidate_weight"]) == ("progressing", 1, 5)
    assert view["plan"]["max_p99_ratio"] == 1.2 and view["plan"]["min_requests"] == 500


def test_shadow_first_mirrors_the_candidate_before_any_step(url: str) -> None:
    code, out, err = _start(url, "--shadow-first", "10m", "--min-agreement", "0.99")
    assert code == 0, err
    assert "status shadowing" in out and "shadow phase (then 5%)" in out
    rule = json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])
    assert rule["split"] == [{"version": "1", "weight": 100}]
    assert rule["shadows"] == [{"version": "2", "percent": 100.0}]
    code, out, _ = _gatectl(url, "rollout", "abort", "credit")
    assert code == 0 and "status aborted" in out and "shadow phase (then 5%)" in out
    rule = json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])
    assert rule["split"] == [{"version": "1", "weight": 100}] and rule["shadows"] == []


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        (["--steps", "50,10"], 1, "steps[1]: expected more than the step before (50), got 10"),
        (["--steps", "5,x"], 2, "--steps: expected percents such as 5,10,25,50,100"),
        (["--interval", "0.5s"], 1, "interval_seconds: expected a number from 1"),
        (["--interval", "soon"], 2, "expected a duration such as 30s"),
        (["--min-agreement", "2"], 1, "min_agreement: expected a number from 0 to 1"),
        (["--baseline", "2"], 1, "candidate: expected a version other than the baseline"),
        (["--failures-to-rollback", "0"], 1, "failures_to_rollback: expected an integer"),
    ],
)
def test_a_plan_that_cannot_work_exits_naming_the_flag(
    url: str, flags: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if code == 2:  # argparse's own usage errors exit before main returns
        with pytest.raises(SystemExit) as exited:
            _start(url, *flags)
        assert exited.value.code == 2 and message in capsys.readouterr().err
        return
    found, _, err = _start(url, *flags)
    assert found == code and message in err
    # Nothing was written: the rule is untouched and there is no rollout.
    assert json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])["revision"] == 1
    assert _gatectl(url, "rollout", "status", "credit")[0] == 1


def test_what_cannot_be_rolled_out_is_refused(url: str) -> None:
    code, _, err = _gatectl(url, "rollout", "start", "credit", "--candidate", "9")
    assert code == 1 and "version '9' of model 'credit' is not registered" in err
    code, _, err = _gatectl(url, "rollout", "start", "ghost", "--candidate", "2")
    assert code == 1 and "model 'ghost' has no rule" in err
    assert _gatectl(url, "route", "set", "credit", "--split", "1=90,3=10")[0] == 0
    code, _, err = _start(url)
    assert code == 1 and "also sends traffic to 3" in err
    assert _gatectl(url, "route", "set", "credit", "--split", "1=100")[0] == 0
    assert _start(url)[0] == 0
    code, _, err = _gatectl(url, "rollout", "start", "credit", "--candidate", "3")
    assert code == 1 and "already has a rollout of version '2' (progressing)" in err


def test_pause_resume_abort_and_the_history_of_it_all(url: str) -> None:
    assert _start(url, "--steps", "10,100")[0] == 0
    code, out, _ = _gatectl(url, "rollout", "pause", "credit", "--reason", "incident 42")
    assert code == 0 and "status paused (from progressing)" in out
    assert _gatectl(url, "rollout", "pause", "credit")[0] == 1  # already paused
    code, out, _ = _gatectl(url, "rollout", "resume", "credit")
    assert code == 0 and "status progressing" in out
    assert _gatectl(url, "rollout", "resume", "credit")[0] == 1  # not paused
    code, out, _ = _gatectl(url, "rollout", "abort", "credit", "--reason", "wrong features")
    assert code == 0 and "status aborted" in out and "candidate weight 0%" in out
    rule = json.loads(_gatectl(url, "--json", "route", "show", "credit")[1])
    assert rule["split"] == [{"version": "1", "weight": 100}]
    assert _gatectl(url, "rollout", "abort", "credit")[0] == 1  # ended
    code, out, _ = _gatectl(url, "rollout", "history", "credit")
    lines = out.splitlines()
    assert lines[0].split() == ["when", "who", "action", "status", "weight", "reason"]
    actions = [line.split()[2] for line in lines[1:]]
    assert actions == ["rollout.abort", "rollout.resume", "rollout.pause", "rollout.start"]
    assert "incident 42" in out and "wrong features" in out
    # The route changes each caused are in the rule's own audit trail as well.
    code, out, _ = _gatectl(url, "route", "history", "credit")
    assert "rollout of 2: aborted" in out and "rollout of 2: step 1/2, 10%" in out
    # A finished rollout can be followed by a new one.
    assert _gatectl(url, "rollout", "start", "credit", "--candidate", "3")[0] == 0


def test_no_rollout_and_no_redis_have_their_exit_codes(url: str) -> None:
    code, _, err = _gatectl(url, "rollout", "status", "credit")
    assert code == 1 and "has no rollout: start one with gatectl rollout start" in err
    code, _, err = _gatectl("redis://127.0.0.1:1", "rollout", "status", "credit")
    assert code == 4


def test_an_unreadable_rollout_document_is_named_and_abort_removes_it(url: str) -> None:
    by_hand = redis.Redis.from_url(url)
    by_hand.set("{onnxgate}:rollout:credit", "not json")
    by_hand.sadd("{onnxgate}:rollouts", "credit")
    code, _, err = _gatectl(url, "rollout", "status", "credit")
    assert code == 1 and "the rollout document of 'credit' ({onnxgate}:rollout:credit) is" in err
    assert "remove it with gatectl rollout abort" in err
    code, out, _ = _gatectl(url, "rollout", "abort", "credit")
    assert code == 0 and "removed the unreadable rollout document of credit" in out
    assert by_hand.exists("{onnxgate}:rollout:credit") == 0
    assert by_hand.sismember("{onnxgate}:rollouts", "credit") == 0
    assert _gatectl(url, "rollout", "history", "credit")[1].count("rollout.abort") == 1
    by_hand.close()


def test_a_bad_model_name_exits_1_naming_it(url: str) -> None:
    for action in ("status", "history", "pause"):
        code, _, err = _gatectl(url, "rollout", action, "../etc")
        assert code == 1 and "model '../etc' is not valid" in err


def test_status_plot_draws_the_weight_over_time_and_each_decision(url: str, tmp_path: Path) -> None:
    assert _start(url, "--steps", "10,50,100")[0] == 0
    assert _gatectl(url, "rollout", "pause", "credit", "--reason", "lunch")[0] == 0
    assert _gatectl(url, "rollout", "resume", "credit", "--no-wait")[0] == 0
    picture = tmp_path / "rollout.svg"
    code, _, err = _gatectl(url, "rollout", "status", "credit", "--plot", str(picture))
    assert code == 0 and err == f"wrote {picture}\n"
    svg = "{http://www.w3.org/2000/svg}"
    root = ElementTree.parse(picture).getroot()
    assert root.findtext(f"{svg}title") == "Rollout of credit version 2 (baseline 1): progressing"
    markers = [c.get("data-decision") for c in root.iter(f"{svg}circle")]
    assert markers == ["start", "pause", "resume"]
    reasons = [c.findtext(f"{svg}title", "") for c in root.iter(f"{svg}circle")]
    assert reasons[1].endswith("pause: lunch")
    assert "Decisions in order: start to 10%; pause to 10%; resume to 10%." in root.findtext(
        f"{svg}desc", ""
    )

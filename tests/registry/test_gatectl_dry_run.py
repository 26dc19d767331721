"""`--dry-run` on gatectl's writes (model create, metrics add, evaluate, reference set, rollout
start|pause|resume|abort, restore) against a real redis-server: each prints the change it
would make, leaves every key of Redis as it was (type and value), and is refused with the
write's own exit code and message. ONNX models built with onnx.helper."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from registry_client.client import RegistryClient
from registry_client.errors import Conflict
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

Dump = dict[bytes, tuple[bytes, Any]]


@pytest.fixture
def url(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    """Model credit (binary on `probabilities`) with versions 1-3; all traffic on 1."""
    client = RegistryClient.from_url(redis_server.url)
    config = QualityConfig("binary", "probabilities", 1)
    client.create_model("credit", actor="ops", owner="risk", quality=config)
    for version in ("1", "2", "3"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), tmp_path, "credit",
                                version)  # fmt: skip
        client.register_version("credit", version, path, actor="ops", metrics={"auc": 0.8})
    client.set_route("credit", [Split("1", 100)], actor="ops")
    client.close()
    yield redis_server.url


def _dump(url: str) -> Dump:
    """Every key in Redis with its type and whole value."""
    raw = redis.Redis.from_url(url)
    readers: dict[bytes, Callable[[bytes], Any]] = {
        b"string": raw.get, b"hash": raw.hgetall, b"set": raw.smembers,
        b"list": lambda k: raw.lrange(k, 0, -1),
        b"zset": lambda k: raw.zrange(k, 0, -1, withscores=True),
        b"stream": lambda k: raw.xrange(k, "-", "+"),
    }  # fmt: skip
    try:
        kinds: dict[bytes, Any] = {key: raw.type(key) for key in sorted(raw.scan_iter("*"))}
        return {key: (kind, readers[kind](key)) for key, kind in kinds.items()}
    finally:
        raw.close()


def _dry_run(url: str, *argv: str) -> tuple[int, str, str]:
    """gatectl ARGV --dry-run, checking that Redis holds exactly what it held before."""
    before = _dump(url)
    done = run_gatectl(url, *argv, "--dry-run")
    assert _dump(url) == before, "a dry run wrote to Redis"
    return done


def _data(directory: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    np.savez(directory / f"x{rows}.npz", input=rng.standard_normal((rows, 4)).astype(np.float32))
    np.save(directory / f"y{rows}.npy", (rng.random(rows) < 0.5).astype(np.int64))
    return directory / f"x{rows}.npz", directory / f"y{rows}.npy"


def test_model_create_dry_run_shows_new_and_changed_fields(url):
    code, out, err = _dry_run(url, "model", "create", "fraud", "--owner", "payments")
    assert (code, err) == (0, "")
    assert "model fraud  (dry run: nothing written)" in out and "owner - -> payments" in out
    code, out, _ = _dry_run(url, "model", "create", "credit", "--owner", "lending",
                            "--threshold", "0.7", "--max-batch-size", "32")  # fmt: skip
    assert code == 0
    lines = out.splitlines()[1:]
    assert "  owner risk -> lending" in lines and "  quality.threshold 0.5 -> 0.7" in lines
    assert "  max_batch_size - -> 32" in lines and len(lines) == 3
    code, out, _ = _dry_run(url, "--json", "model", "create", "credit", "--owner", "lending")
    shown = json.loads(out)
    assert (shown["dry_run"], shown["subject"], shown["changes"]) == (
        True, "model credit", ["owner risk -> lending"])  # fmt: skip
    assert shown["before"]["owner"] == "risk" and shown["after"]["owner"] == "lending"


def test_model_show_takes_no_dry_run(url):
    code, out, err = run_gatectl(url, "model", "show", "credit", "--dry-run")
    assert (code, out) == (2, "") and "--dry-run: only `model create` writes" in err


def test_metrics_add_dry_run_shows_each_metric_it_would_make_latest(url):
    code, out, err = _dry_run(url, "metrics", "add", "credit", "2", "auc=0.93", "recall=0.7",
                              "--source", "nightly")  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith("metrics of model credit version 2  (dry run: nothing written)\n")
    assert "  auc 0.8 (registration, " in out and ") -> 0.93 (nightly, " in out
    assert "  recall - -> 0.7 (nightly, " in out
    shown = json.loads(_dry_run(url, "-o", "json", "metrics", "add", "credit", "2", "auc=0.9",
                                "--source", "nightly")[1])  # fmt: skip
    assert shown["before"]["auc"]["source"] == "registration"
    assert shown["after"]["auc"]["value"] == 0.9 and shown["measurement"]["by"] == "alice"


def test_evaluate_dry_run_computes_and_prints_the_evaluation_and_stores_nothing(url, tmp_path):
    data, labels = _data(tmp_path, 300)
    argv = ["evaluate", "credit", "2", "--data", str(data), "--labels", str(labels)]
    code, out, err = _dry_run(url, *argv)
    assert (code, err) == (0, "")
    assert "model credit  version 2  task binary  rows 300" in out and "auc_roc" in out
    assert "dry run: nothing stored; the version's evaluation would change:" in out
    assert "  rows - -> 300" in out
    assert run_gatectl(url, *argv)[0] == 0
    data, labels = _data(tmp_path, 200, seed=1)
    shown = json.loads(_dry_run(url, "--json", "evaluate", "credit", "2", "--data", str(data),
                                "--labels", str(labels))[1])  # fmt: skip
    assert shown["dry_run"] is True and shown["rows"] == 200 and shown["before"]["rows"] == 300
    assert "rows 300 -> 200" in shown["changes"]


def test_reference_set_dry_run_builds_and_shows_the_profile_and_stores_nothing(url, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train.npy", rng.standard_normal((500, 4)).astype(np.float32))
    np.save(tmp_path / "recent.npy", rng.standard_normal((200, 4)).astype(np.float32))
    argv = ["reference", "set", "credit", "1", "--data"]
    code, out, err = _dry_run(url, *argv, str(tmp_path / "train.npy"))
    assert (code, err) == (0, "")
    assert "reference of credit version 1  (dry run: nothing stored)" in out
    assert "  features - -> 4" in out and "  source - -> data:train.npy" in out
    assert "input[3]" in out and "median" in out  # the profile's table
    assert run_gatectl(url, *argv, str(tmp_path / "train.npy"))[0] == 0
    shown = json.loads(_dry_run(url, "--json", *argv, str(tmp_path / "recent.npy"))[1])
    assert "rows 500 -> 200" in shown["changes"]
    assert "source data:train.npy -> data:recent.npy" in shown["changes"]
    assert shown["features"]["input[0]"]["count"] == 200


def test_rollout_start_dry_run_shows_the_rollout_and_the_rule_it_would_write(url):
    code, out, err = _dry_run(url, "rollout", "start", "credit", "--candidate", "2",
                              "--steps", "5,50,100")  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith("rollout of credit  (dry run: nothing written)\n")
    assert "  status - -> progressing" in out and "  candidate_weight - -> 5" in out
    assert "rule of credit  revision 1 -> revision 2\n  split 1=100 -> 1=95,2=5\n" in out
    shown = json.loads(_dry_run(url, "--json", "rollout", "start", "credit", "--candidate", "2",
                                "--shadow-first", "5m")[1])  # fmt: skip
    assert shown["before"] is None and shown["after"]["status"] == "shadowing"
    assert shown["rule"]["changes"] == ["shadows - -> 2=100%"]


def test_pause_resume_and_abort_dry_runs_show_what_each_would_change(url):
    assert run_gatectl(url, "rollout", "start", "credit", "--candidate", "2")[0] == 0
    code, out, _ = _dry_run(url, "rollout", "pause", "credit")
    assert code == 0 and "  status progressing -> paused" in out and "rule of" not in out
    assert run_gatectl(url, "rollout", "pause", "credit")[0] == 0
    code, out, _ = _dry_run(url, "rollout", "resume", "credit")
    assert code == 0 and "  status paused -> progressing" in out
    assert "rule of credit  revision 2 -> revision 3\n  no routing change" in out
    code, out, _ = _dry_run(url, "rollout", "abort", "credit", "--reason", "p99")
    assert code == 0 and "  status paused -> aborted" in out
    assert "  split 1=95,2=5 -> 1=100" in out


def test_abort_dry_run_of_an_unreadable_rollout_says_it_would_remove_it(url):
    raw = redis.Redis.from_url(url)
    raw.set("{onnxgate}:rollout:credit", "{not json")
    raw.close()
    code, out, err = _dry_run(url, "rollout", "abort", "credit")
    assert (code, err) == (0, "")
    assert "would remove the unreadable rollout document of credit; its rule would stay" in out
    shown = json.loads(_dry_run(url, "--json", "rollout", "abort", "credit")[1])
    assert (shown["before"], shown["after"]) == ("unreadable", None)


def test_a_rollout_dry_run_makes_the_compare_and_set_checks_of_the_write(url):
    assert run_gatectl(url, "rollout", "start", "credit", "--candidate", "2")[0] == 0
    client = RegistryClient.from_url(url)
    store = RolloutStore(client)
    try:
        state = store.get("credit")
        assert state is not None
        before = _dump(url)
        with pytest.raises(Conflict, match="changed meanwhile"):
            store.commit(state.evolve(revision=7), state, actor="alice", action="pause",
                         reason="", route=False, dry_run=True)  # fmt: skip
        with pytest.raises(Conflict, match="at revision 2, not 1"):
            store.commit(state, state, actor="alice", action="resume", reason="", route=True,
                         expected_route_revision=1, dry_run=True)  # fmt: skip
        assert _dump(url) == before
    finally:
        client.close()


def test_restore_dry_run_reports_what_the_restore_then_does(url, tmp_path):
    exported = tmp_path / "registry.json"
    assert run_gatectl(url, "export", "--output", str(exported))[0] == 0
    raw = redis.Redis.from_url(url)
    raw.flushall()
    raw.close()
    code, out, err = _dry_run(url, "restore", str(exported))
    assert (code, err) == (0, "")
    assert "credit  would be restored  model, versions 1,2,3, rule revision 1" in out
    assert "1 would be restored, 0 unchanged, 0 refused" in out and "nothing written" in out
    planned = json.loads(_dry_run(url, "--json", "restore", str(exported))[1])
    done = json.loads(run_gatectl(url, "--json", "restore", str(exported))[1])
    assert planned["dry_run"] is True
    assert planned["models"] == done["models"] and planned["epoch"] == done["epoch"]


def test_restore_dry_run_refuses_a_newer_rule_as_the_restore_does(url, tmp_path):
    exported = tmp_path / "registry.json"
    assert run_gatectl(url, "export", "--output", str(exported))[0] == 0
    assert run_gatectl(url, "route", "set", "credit", "--split", "2=100", "--no-wait")[0] == 0
    code, out, err = _dry_run(url, "restore", str(exported))
    assert code == 1 and "credit  refused" in out
    assert err == run_gatectl(url, "restore", str(exported))[2]
    assert "its rule in Redis is at revision 2, newer than the export's revision 1" in err
    code, out, _ = _dry_run(url, "restore", str(exported), "--force")
    assert code == 0 and "credit  would be restored  rule revision 1" in out


def _refusals(directory: Path) -> list[list[str]]:
    data, labels = _data(directory, 30)
    np.save(directory / "short.npy", np.zeros(7, dtype=np.int64))
    (directory / "not-an-export.json").write_text('{"format": "onnxgate-registry/9"}')
    return [
        ["model", "create", "credit", "--max-batch-size", "0"],
        ["model", "create", "bad/name"],
        ["metrics", "add", "credit", "9", "auc=0.9", "--source", "nightly"],
        ["metrics", "add", "credit", "2", "auc=0.9", "--source", ""],
        ["evaluate", "credit", "2", "--data", str(data), "--labels", str(directory / "short.npy")],
        ["evaluate", "credit", "9", "--data", str(data), "--labels", str(labels)],
        ["reference", "set", "credit", "1", "--data", str(directory / "absent.npy")],
        ["reference", "set", "credit", "2", "--from-traffic", "1"],
        ["rollout", "start", "credit", "--candidate", "9"],
        ["rollout", "start", "credit", "--candidate", "2", "--steps", "50,10"],
        ["rollout", "pause", "credit"],
        ["rollout", "resume", "credit"],
        ["rollout", "abort", "credit"],
        ["restore", str(directory / "not-an-export.json")],
    ]


def test_a_refused_dry_run_exits_with_the_writes_code_and_message(url, tmp_path):
    for argv in _refusals(tmp_path):  # each refused: nothing written, the next sees the same
        code, _, err = _dry_run(url, *argv)
        written = run_gatectl(url, *argv)
        assert code != 0 and err != "", argv
        assert (code, err) == (written[0], written[2]), argv


def test_a_second_rollout_is_refused_by_its_dry_run_as_by_the_start(url):
    assert run_gatectl(url, "rollout", "start", "credit", "--candidate", "2")[0] == 0
    argv = ["rollout", "start", "credit", "--candidate", "3"]
    code, _, err = _dry_run(url, *argv)
    assert (code, err) == (1, run_gatectl(url, *argv)[2])
    assert "already has a rollout of version '2' (progressing): abort it first" in err

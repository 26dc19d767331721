"""gatectl export and restore against a real redis-server: a registry exported, flushed and
restored is the same registry, key by key; what a restore refuses, forces and skips; a bad
document changes nothing; the CLI end to end. ONNX models built with onnx.helper."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from registry_client.backup.export import export
from registry_client.backup.restore import RESTORE_ACTION, restore
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.errors import Rejected
from registry_client.quality.episode_store import EpisodeStore, Judgement
from registry_client.quality.episodes import BAD, Observation, Subject
from registry_client.quality.evaluation import Evaluation
from registry_client.quality.task import QualityConfig
from registry_client.records.leases import Lease
from registry_client.records.rule_documents import Shadow, Split
from registry_client.rollout.store import RolloutStore
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer

CARD = {"algorithm": "logistic regression", "intended_use": "credit decisions",
        "training_data": {"uri": "s3://bucket/train.csv", "rows": 1000}}  # fmt: skip
KEYS = "{onnxgate}:*"


def _populate(client: RegistryClient, directory: Path) -> None:
    """Every kind of control-plane record: models with batching and a quality config,
    versions with cards, lineage, metrics, measurements, an evaluation, a retired one, a
    drift reference, rules with a shadow, a rollout under way, quality-event episodes."""
    quality = QualityConfig("binary", "probabilities", 1, segments=("gender",))
    client.create_model("credit", actor="ops", owner="risk", description="scores",
                        tags=["tier-1", "eu"], batch_delay_us=200, max_batch_size=64,
                        quality=quality)  # fmt: skip
    for version in ("1", "2", "3", "4"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), directory, "credit",
                                version)  # fmt: skip
        client.register_version(
            "credit", version, path, actor="ops", description=f"v{version}",
            lineage={"data": "s3://bucket/train.csv",
                     **({"parent": str(int(version) - 1)} if version != "1" else {})},
            metrics={"auc": 0.8 + int(version) / 100}, tags=["candidate"],
            feature_names={"input": ["age", "income", "debt", "tenure"]}, card=CARD,
        )  # fmt: skip
    client.add_metrics("credit", "1", {"auc": 0.83}, source="backtest", actor="ops")
    client.add_metrics("credit", "1", {"auc": 0.84, "recall": 0.7}, source="weekly", actor="ops")
    client.record_evaluation("credit", "2", Evaluation(
        time=1.0, data_sha256="a" * 64, labels_sha256="b" * 64, segments_sha256=None,
        rows=1000, task="binary", metrics={"auc_roc": 0.9}, gaps={}), actor="ops")  # fmt: skip
    client.retire_version("credit", "4", actor="ops", reason="leaks a feature")
    reference = FeatureReference.from_values(np.linspace(0.0, 1.0, 500))
    assert reference is not None
    client.drift.set_reference("credit", "1", {"input[0]": reference}, {"source": "test"},
                               actor="ops")  # fmt: skip
    client.set_route("credit", [Split("1", 90), Split("2", 10)], [Shadow("3", 25.0)],
                     actor="ops", reason="canary")  # fmt: skip
    lease = Lease(client, client.keys.rollout_leader, "gw-1", 60)
    assert lease.hold()
    drop = Observation(Subject("accuracy", "1", "primary"), BAD, {"value": 0.5}, "auc_roc 0.5")
    EpisodeStore(client).commit(Judgement("credit", 120.0, [drop], [("1", "primary")],
                                          needed=1, replica="gw-1"),
                                leader=lease.value, actor="gw-1")  # fmt: skip
    client.create_model("fraud", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=10 + int(version)), directory,
                                "fraud", version)  # fmt: skip
        client.register_version("fraud", version, path, actor="ops")
    client.set_route("fraud", [Split("1", 100)], actor="ops")
    RolloutStore(client).start(None, actor="ops", baseline_from_rule=True, model="fraud",
                               candidate="2", steps=(50, 100), interval_seconds=600.0)  # fmt: skip


@pytest.fixture
def client(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    registry = RegistryClient.from_url(redis_server.url)
    _populate(registry, tmp_path / "artifacts")
    yield registry
    registry.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Redis as redis-cli sees it: reads that bypass the registry's code."""
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


Contents = dict[bytes, tuple[bytes, Any]]


def _contents(raw: redis.Redis) -> Contents:
    """Every lasting key of the namespace with its contents, read by type (leases expire and
    are not part of an export)."""
    readers: dict[Any, Callable[[Any], Any]] = {
        b"string": raw.get, b"hash": raw.hgetall, b"set": raw.smembers,
        b"list": lambda k: raw.lrange(k, 0, -1),
        b"zset": lambda k: raw.zrange(k, 0, -1, withscores=True),
        b"stream": lambda k: raw.xrange(k, "-", "+"),
    }  # fmt: skip
    kinds: dict[bytes, Any] = {key: raw.type(key) for key in sorted(raw.scan_iter(KEYS))
                               if raw.pttl(key) == -1}  # fmt: skip
    return {key: (kind, readers[kind](key)) for key, kind in kinds.items()}


def _without_restore_entries(contents: Contents) -> Contents:
    def kept(entry: tuple[bytes, dict[bytes, bytes]]) -> bool:
        return entry[1][b"action"] != RESTORE_ACTION.encode()

    return {key: (kind, [e for e in value if kept(e)] if kind == b"stream" else value)
            for key, (kind, value) in contents.items()}  # fmt: skip


def _document(client: RegistryClient, **flags: bool) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(export(client, **flags).to_document()))
    return document  # as a file holds it


def test_export_flushall_restore_gives_back_every_key(client, raw):
    before = _contents(raw)
    document = _document(client)
    raw.flushall()
    summary = restore(client, document, actor="alice")
    after = _contents(raw)
    assert {m.model: m.result for m in summary.models} == {"credit": "restored",
                                                            "fraud": "restored"}  # fmt: skip
    epoch = b"{onnxgate}:epoch"
    assert int(after.pop(epoch)[1]) == int(before.pop(epoch)[1]) + 2
    assert _without_restore_entries(after) == before
    assert list(raw.scan_iter("*:restoring:*")) == []  # every staged stream moved into place
    assert {m.audit_written for m in summary.models} == {len(raw.xrange(k)) - 1 for k in (
        b"{onnxgate}:audit:credit", b"{onnxgate}:audit:fraud")}  # fmt: skip


def test_a_restored_registry_reads_the_same_through_the_client(client, raw):
    def view() -> dict[str, object]:
        models = client.list_models()
        return {
            "models": {m: client.show_model(m) for m in models},
            "versions": {(m, v): client.show_version(m, v)
                         for m in models for v in client.list_versions(m)},
            "history": {(m, v): client.metrics_history(m, v)
                        for m in models for v in client.list_versions(m)},
            "rules": client.rules()[0], "rollout": RolloutStore(client).get("fraud"),
            "rollouts": RolloutStore(client).models(),
            "reference": client.drift.get_reference("credit", "1").keys(),
            "episodes": EpisodeStore(client).episodes("credit"),
            "audit": {m: [e for e in client.audit_entries(m) if e["action"] != RESTORE_ACTION]
                      for m in models},
        }  # fmt: skip

    expected = view()
    document = _document(client)
    raw.flushall()
    restore(client, document, actor="alice")
    assert view() == expected
    assert client.show_version("credit", "4")["status"] == "retired"
    assert [m["source"] for m in client.metrics_history("credit", "1")] == [
        "registration", "backtest", "weekly"]  # fmt: skip


def test_the_restored_epoch_is_above_the_exported_one_and_gateways_get_a_hint(client, raw):
    document = _document(client)
    raw.flushall()
    with raw.pubsub() as hints:
        hints.subscribe("{onnxgate}:events")
        assert hints.get_message(timeout=5)["type"] == "subscribe"
        restore(client, document, actor="alice")
        messages = [hints.get_message(timeout=5) for _ in range(2)]
    assert client.epoch() == document["epoch"] + 2
    assert sorted(json.loads(m["data"])["model"] for m in messages) == ["credit", "fraud"]


def test_restoring_the_same_export_twice_writes_nothing_the_second_time(client, raw):
    document = _document(client)
    raw.flushall()
    restore(client, document, actor="alice")
    once = _contents(raw)
    summary = restore(client, document, actor="alice")
    assert _contents(raw) == once  # not even an audit entry, nor the epoch
    assert [(m.result, m.written, m.audit_skipped > 0) for m in summary.models] == [
        ("unchanged", (), True)] * 2  # fmt: skip


def test_each_restored_model_gets_one_audit_entry_naming_the_export(client, raw):
    document = _document(client)
    raw.flushall()
    summary = restore(client, document, actor="alice")
    (entry,) = client.history("credit", actions=RESTORE_ACTION)
    after = json.loads(entry["after"])
    assert entry["who"] == "alice"
    assert after["export"] == {
        "exported_at": document["exported_at"],
        "epoch": document["epoch"],
        "sha256": summary.export_sha256,
    }
    assert after["rule_revision"] == 1 and "rule revision 1" in after["written"]
    assert json.loads(entry["before"]) == {"rule_revision": 0}


def test_an_uploaded_artifact_round_trips_with_include_artifacts(client, raw, tmp_path):
    path = onnx_models.save(onnx_models.classifier(seed=7), tmp_path / "up", "credit", "5")
    client.register_version("credit", "5", path, actor="ops", upload=True)
    document = _document(client, include_artifacts=True)
    raw.flushall()
    summary = restore(client, document, actor="alice")
    assert (summary.blobs_written, summary.missing_blobs) == (1, ())
    assert client.version_artifact("credit", "5") == path.read_bytes()
    assert client.show_version("credit", "5")["artifact_uri"].startswith("redis-blob:")


def test_an_uploaded_artifact_left_out_of_the_export_is_reported_missing(client, raw, tmp_path):
    path = onnx_models.save(onnx_models.classifier(seed=7), tmp_path / "up", "credit", "5")
    sha = client.register_version("credit", "5", path, actor="ops", upload=True)["sha256"]
    document = _document(client)
    assert "blobs" not in document
    raw.flushall()
    summary = restore(client, document, actor="alice")
    assert summary.missing_blobs == (("credit", "5", sha),)


def test_a_newer_rule_is_refused_naming_the_model_and_both_revisions(client, raw):
    document = _document(client)
    client.set_route("credit", [Split("1", 100)], actor="bob")  # revision 2
    before = _contents(raw)
    summary = restore(client, document, actor="alice")
    (refused,) = summary.refused
    assert refused.model == "credit"
    assert "'credit'" in refused.reason and "revision 2, newer than" in refused.reason
    assert "export's revision 1" in refused.reason
    assert [m.result for m in summary.models] == ["refused", "unchanged"]
    assert _contents(raw) == before  # nothing written: not even the epoch


def test_force_replaces_a_newer_rule_and_the_audit_says_so(client, raw):
    document = _document(client)
    client.set_route("credit", [Split("1", 100)], actor="bob")  # revision 2
    summary = restore(client, document, actor="alice", force=True)
    assert [(m.model, m.result) for m in summary.models] == [("credit", "restored"),
                                                              ("fraud", "unchanged")]  # fmt: skip
    rule = client.get_route("credit")
    assert rule is not None and (rule.revision, rule.split) == (1, (Split("1", 90),
                                                                    Split("2", 10)))  # fmt: skip
    (entry,) = client.history("credit", actions=RESTORE_ACTION)
    assert "--force" in entry["reason"]
    assert json.loads(entry["before"]) == {"rule_revision": 2}


def test_a_version_registered_with_other_bytes_is_refused_even_with_force(client, raw, tmp_path):
    document = _document(client)
    raw.flushall()
    other = onnx_models.save(onnx_models.classifier(seed=99), tmp_path / "other", "credit", "2")
    client.create_model("credit", actor="bob")
    client.register_version("credit", "2", other, actor="bob")
    summary = restore(client, document, actor="alice", force=True)
    assert [(m.model, m.result) for m in summary.models] == [("credit", "refused"),
                                                              ("fraud", "restored")]  # fmt: skip
    assert "version '2'" in summary.refused[0].reason
    assert "immutable" in summary.refused[0].reason
    assert client.list_versions("credit") == ["2"]  # nothing of credit written
    assert client.get_route("credit") is None


def test_a_model_at_the_exported_rule_keeps_what_redis_has_and_gains_what_it_lacks(client, raw):
    document = _document(client)
    client.add_metrics("credit", "1", {"auc": 0.85}, source="later", actor="bob")  # newer
    raw.delete("{onnxgate}:reference:credit:1")  # lost
    summary = restore(client, document, actor="alice")
    credit = {m.model: m for m in summary.models}["credit"]
    assert (credit.result, credit.written) == ("restored", ("references 1",))
    assert client.metrics_history("credit", "1")[-1]["source"] == "later"  # kept
    assert client.drift.get_reference("credit", "1")  # back


def test_a_model_with_audit_entries_keeps_them_and_skips_the_exported(client, raw):
    document = _document(client)
    exported = len(document["models"]["fraud"]["audit"])
    raw.flushall()
    client.create_model("fraud", actor="bob", owner="someone else")  # its stream: 1 entry
    summary = restore(client, document, actor="alice")
    fraud = {m.model: m for m in summary.models}["fraud"]
    assert (fraud.result, fraud.audit_written, fraud.audit_skipped) == ("restored", 0, exported)
    assert [e["action"] for e in client.audit_entries("fraud")] == [RESTORE_ACTION,
                                                                    "model.create"]  # fmt: skip
    assert client.show_model("fraud").get("owner") is None  # made as exported


def _broken(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """The document with the value at a JSON pointer replaced."""
    broken: dict[str, Any] = json.loads(json.dumps(document))
    *parents, last = path.strip("/").split("/")
    target: Any = broken
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[int(last) if isinstance(target, list) else last] = value
    return broken


@pytest.mark.parametrize(("path", "value", "said"), [
    ("/format", "onnxgate-registry/2", "/format: expected 'onnxgate-registry/1'"),
    ("/epoch", -1, "/epoch: expected an integer >= 0"),
    ("/models/credit/versions/2/fields/sha256", "abc", "/models/credit/versions/2/fields/sha256"),
    ("/models/credit/rule", '{"model": "credit"}', "/models/credit/rule: route document"),
    ("/models/credit/audit/1/id", "1-0", "/models/credit/audit/1/id: expected a stream id"),
    ("/models/credit/versions/1/measurements/0", "not json", "/models/credit/versions/1/meas"),
    ("/models/fraud/in_rollouts", "yes", "/models/fraud/in_rollouts: expected true or false"),
    ("/models/fraud/fields/owner", 3, "/models/fraud/fields/owner: expected text"),
])  # fmt: skip
def test_a_malformed_document_is_rejected_naming_the_field_and_writes_nothing(
    client, raw, path, value, said
):
    document = _broken(_document(client), path, value)
    raw.flushall()
    with pytest.raises(Rejected, match="export document") as err:
        restore(client, document, actor="alice")
    assert said in str(err.value)
    assert raw.dbsize() == 0


def test_a_rule_naming_a_version_the_export_lacks_is_rejected(client, raw):
    document = _document(client)
    del document["models"]["credit"]["versions"]["3"]
    with pytest.raises(Rejected, match="/models/credit/rule: names version '3'"):
        restore(client, document, actor="alice")


def test_an_export_of_another_namespace_is_rejected(client, redis_server):
    other = RegistryClient.from_url(redis_server.url, namespace="staging")
    try:
        with pytest.raises(Rejected, match="namespace 'onnxgate', not 'staging'"):
            restore(other, _document(client), actor="alice")
    finally:
        other.close()


def test_gatectl_export_then_restore_end_to_end(client, raw, redis_server, tmp_path):
    url, saved = redis_server.url, tmp_path / "registry.json"
    code, out, _ = run_gatectl(url, "export", "--output", str(saved))
    assert code == 0 and out.startswith("exported 2 models, 6 versions, ")
    assert json.loads(saved.read_text())["format"] == "onnxgate-registry/1"
    before = _contents(raw)
    raw.flushall()
    code, out, err = run_gatectl(url, "restore", str(saved))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["model", "result", "written", "audit"]
    assert lines[1].startswith("credit  restored  model, versions 1,2,3,4, measurements 1,")
    assert lines[-1].startswith("2 restored, 0 unchanged, 0 refused from the export of ")
    after = _contents(raw)
    after.pop(b"{onnxgate}:epoch"), before.pop(b"{onnxgate}:epoch")
    assert _without_restore_entries(after) == before


def test_gatectl_export_prints_the_document_on_standard_output(client, redis_server):
    code, out, _ = run_gatectl(redis_server.url, "export")
    assert code == 0
    assert sorted(json.loads(out)["models"]) == ["credit", "fraud"]


def test_gatectl_restore_exits_1_naming_the_refused_model_and_both_revisions(
    client, redis_server, tmp_path
):
    saved = tmp_path / "registry.json"
    run_gatectl(redis_server.url, "export", "--output", str(saved))
    client.set_route("credit", [Split("1", 100)], actor="bob")  # revision 2
    code, out, err = run_gatectl(redis_server.url, "restore", str(saved))
    assert code == 1
    assert "credit  refused" in out
    assert ("gatectl: refused: model 'credit': its rule in Redis is at revision 2, newer than"
            " the export's revision 1; gatectl restore --force replaces it") in err  # fmt: skip
    code, out, _ = run_gatectl(redis_server.url, "--json", "restore", str(saved), "--force")
    assert code == 0
    outcome = {m["model"]: m for m in json.loads(out)["models"]}["credit"]
    assert outcome["result"] == "restored" and "--force" in outcome["reason"]


def test_gatectl_restore_reads_standard_input(client, raw, redis_server):
    _, exported, _ = run_gatectl(redis_server.url, "export")
    raw.flushall()
    program = "from registry_client.cli.main import main; raise SystemExit(main())"
    done = subprocess.run(
        [sys.executable, "-c", program, "--redis-url", redis_server.url, "--actor", "alice",
         "restore", "-"], input=exported, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 restored" in done.stdout
    assert client.list_models() == ["credit", "fraud"]


def test_gatectl_restore_of_a_file_that_is_not_json_exits_1(client, redis_server, tmp_path):
    bad = tmp_path / "registry.json"
    bad.write_text('{"format": ')
    code, _, err = run_gatectl(redis_server.url, "restore", str(bad))
    assert code == 1 and f"{bad} is not JSON" in err

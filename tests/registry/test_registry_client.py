"""RegistryClient against a real redis-server: models, versions, routes, audit, CAS."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from registry_client.client import RegistryClient
from registry_client.errors import Conflict, NotFound, Rejected, Unreachable
from registry_client.records.rule_documents import Shadow, Split
from tests.support import onnx_models

ACTOR = "alice"


@pytest.fixture
def registry(redis_server) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def credit(registry: RegistryClient, tmp_path: Path) -> RegistryClient:
    """Model 'credit' with versions 1, 2 and 3 registered."""
    registry.create_model("credit", actor=ACTOR, owner="risk-team", tags=["tabular"])
    for version, seed in (("1", 1), ("2", 2), ("3", 3)):
        path = onnx_models.save(onnx_models.classifier(seed=seed), tmp_path, "credit", version)
        registry.register_version("credit", version, path, actor=ACTOR)
    return registry


def test_models_are_created_listed_and_shown(registry):
    registry.create_model("credit", actor=ACTOR, owner="risk-team", description="scores")
    registry.create_model("fraud", actor=ACTOR)
    assert registry.list_models() == ["credit", "fraud"]
    shown = registry.show_model("credit")
    assert (shown["owner"], shown["description"], shown["versions"]) == ("risk-team", "scores", [])


def test_bad_model_name_is_rejected_naming_the_pattern(registry):
    with pytest.raises(Rejected, match=r"model '\.\./x' is not valid: expected"):
        registry.create_model("../x", actor=ACTOR)


def test_unknown_model_is_not_found(registry):
    with pytest.raises(NotFound, match="'ghost' is not registered"):
        registry.show_model("ghost")


def test_registered_version_records_hash_size_and_signature(credit, tmp_path):
    stored = credit.show_version("credit", "2")
    data = (tmp_path / "credit" / "2" / "model.onnx").read_bytes()
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert int(stored["size"]) == len(data)
    assert stored["artifact_uri"].startswith("file:///")
    signature = json.loads(stored["signature"])
    assert signature["inputs"] == [{"name": "input", "type": "tensor(float)", "shape": [-1, 4]}]
    assert [o["name"] for o in signature["outputs"]] == ["probabilities", "logits"]
    assert (stored["status"], stored["created_by"]) == ("registered", ACTOR)
    assert credit.list_versions("credit") == ["1", "2", "3"]


def test_registering_the_same_bytes_again_is_idempotent(credit, tmp_path):
    again = credit.register_version(
        "credit", "2", tmp_path / "credit" / "2" / "model.onnx", actor="bob"
    )
    assert again["created_by"] == ACTOR


def test_other_bytes_under_a_registered_version_are_rejected(credit, tmp_path):
    with pytest.raises(Rejected, match="versions are immutable"):
        credit.register_version(
            "credit", "2", tmp_path / "credit" / "1" / "model.onnx", actor=ACTOR
        )


def test_a_file_that_is_not_a_model_is_rejected(credit, tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(Rejected, match="not a model onnxruntime can load"):
        credit.register_version("credit", "9", junk, actor=ACTOR)
    assert "9" not in credit.list_versions("credit")


def test_version_of_an_unknown_model_is_not_found(registry, tmp_path):
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "m", "1")
    with pytest.raises(NotFound, match="create it first"):
        registry.register_version("m", "1", path, actor=ACTOR)


def test_non_numeric_metric_is_rejected(credit, tmp_path):
    with pytest.raises(Rejected, match=r"metrics\.auc: expected a finite number, got .high."):
        credit.register_version(
            "credit", "4", tmp_path / "credit" / "1" / "model.onnx", actor=ACTOR,
            metrics={"auc": "high"},
        )  # fmt: skip


def test_set_route_stores_the_rule_with_revision_and_author(credit):
    rule = credit.set_route(
        "credit", [Split("1", 90), Split("2", 10)], [Shadow("3", 5)], actor=ACTOR, reason="canary"
    )
    assert rule.revision == 1
    stored = credit.get_route("credit")
    assert stored == rule
    assert (stored.updated_by, stored.reason, stored.versions) == (ACTOR, "canary", ["1", "2", "3"])


@pytest.mark.parametrize(
    ("split", "shadows", "message"),
    [
        ([Split("1", -1), Split("2", 5)], [], r"split\[0\]\.weight: expected >= 0"),
        ([Split("1", 0), Split("2", 0)], [], "weights must have a positive sum"),
        ([], [], "expected at least one version"),
        ([Split("1", 1), Split("1", 2)], [], "appears twice"),
        ([Split("1", 1)], [Shadow("1", 5)], "either served or shadowed"),
        ([Split("1", 1)], [Shadow("2", 101)], r"shadows\[0\]\.percent: expected a number"),
    ],
)
def test_invalid_rules_are_rejected_and_nothing_is_written(credit, split, shadows, message):
    with pytest.raises(Rejected, match=message):
        credit.set_route("credit", split, shadows, actor=ACTOR)
    assert credit.get_route("credit") is None


def test_rule_naming_an_unregistered_version_is_not_found(credit):
    with pytest.raises(NotFound, match="version '7' of model 'credit' is not registered"):
        credit.set_route("credit", [Split("7", 1)], actor=ACTOR)


def test_rule_naming_a_retired_version_is_rejected(credit):
    assert credit.retire_version("credit", "1", actor=ACTOR)
    with pytest.raises(Rejected, match="'1' of model 'credit' is retired"):
        credit.set_route("credit", [Split("1", 1)], actor=ACTOR)


def test_stale_expected_revision_is_a_conflict(credit):
    credit.set_route("credit", [Split("1", 100)], actor=ACTOR)
    credit.set_route("credit", [Split("1", 50), Split("2", 50)], actor="bob")
    with pytest.raises(Conflict, match="at revision 2, not 1"):
        credit.set_route("credit", [Split("2", 100)], actor=ACTOR, expected_revision=1)
    assert credit.get_route("credit").revision == 2


def test_every_write_bumps_the_epoch_and_a_route_change_is_published(credit, redis_server):
    raw = redis.Redis.from_url(redis_server.url)
    subscriber = raw.pubsub()
    subscriber.subscribe(credit.keys.events)
    assert subscriber.get_message(timeout=2)["type"] == "subscribe"
    epoch = int(raw.get(credit.keys.epoch) or 0)
    credit.set_route("credit", [Split("1", 100)], actor=ACTOR)
    assert int(raw.get(credit.keys.epoch) or 0) == epoch + 1
    message = subscriber.get_message(timeout=2)
    assert json.loads(message["data"]) == {"model": "credit", "revision": 1}
    subscriber.close()
    raw.close()


@pytest.mark.timeout(120)
def test_ten_writers_with_compare_and_set_lose_no_update(credit):
    credit.set_route("credit", [Split("1", 1)], actor=ACTOR)
    committed = []
    lock = threading.Lock()

    def writer(index: int) -> None:
        for step in range(50):
            while True:
                current = credit.get_route("credit")
                try:
                    rule = credit.set_route(
                        "credit", [Split("1", index + 1), Split("2", step)], actor=f"w{index}",
                        expected_revision=current.revision,
                    )  # fmt: skip
                except Conflict:
                    continue
                with lock:
                    committed.append(rule.revision)
                break

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert len(committed) == 500
    assert sorted(committed) == list(range(2, 502))  # every revision committed exactly once
    assert credit.get_route("credit").revision == 501
    route_entries = [e for e in credit.history("credit", limit=1000) if e["action"] == "route.set"]
    assert len(route_entries) == 501


def test_history_is_newest_first_and_rollback_restores_an_old_split(credit):
    credit.set_route("credit", [Split("1", 100)], actor=ACTOR, reason="launch")
    credit.set_route("credit", [Split("1", 90), Split("2", 10)], actor="bob", reason="canary")
    history = credit.history("credit")
    routes = [e for e in history if e["action"].startswith("route.")]
    assert [(e["who"], e["reason"]) for e in routes] == [("bob", "canary"), (ACTOR, "launch")]
    assert json.loads(routes[0]["before"])["revision"] == 1
    rolled = credit.rollback("credit", 1, actor="carol")
    assert (rolled.revision, rolled.split, rolled.reason) == (
        3, (Split("1", 100),), "rollback to revision 1",
    )  # fmt: skip
    assert credit.history("credit")[0]["action"] == "route.rollback"


def test_a_quiet_models_history_and_rollback_reach_past_a_busy_registry(credit):
    credit.set_route("credit", [Split("1", 100)], actor=ACTOR, reason="launch")
    credit.set_route("credit", [Split("2", 100)], actor="bob", reason="v2 for everyone")
    # 20,000 entries of another model since, written 1,000 to a transaction as a busy
    # controller's decisions would be.
    credit.create_model("busy", actor=ACTOR)

    def thousand_decisions(pipe: redis.client.Pipeline) -> None:
        pipe.multi()
        for _ in range(1000):
            credit.audit(pipe, "controller", "rollout.hold", "busy", None, None, "waiting")

    for _ in range(20):
        credit.transaction([credit.keys.model("busy")], thousand_decisions, retry=False)
    assert len(credit.history("busy", limit=25_000)) == 20_001  # its creation too
    history = credit.history("credit", limit=10)
    assert [e["action"] for e in history] == ["route.set", "route.set", "version.register",
        "version.register", "version.register", "model.create"]  # fmt: skip
    assert [e["action"] for e in credit.history("credit", actions="version.")] == [
        "version.register"] * 3  # fmt: skip
    rolled = credit.rollback("credit", 1, actor="carol", reason="v2 misbehaves")
    assert (rolled.revision, rolled.split) == (3, (Split("1", 100),))


def test_rollback_to_an_unknown_revision_is_not_found(credit):
    with pytest.raises(NotFound, match="revision 5"):
        credit.rollback("credit", 5, actor=ACTOR)


def test_unreachable_redis_is_reported_as_such(redis_server):
    url = redis_server.url
    redis_server.stop()
    client = RegistryClient.from_url(url)
    with pytest.raises(Unreachable, match="Redis is unreachable"):
        client.list_models()
    client.close()


# An operator (docs/security.md, "Redis security"): the registry's keys and hints, reads the
# statistics, no admin commands.
OPERATOR_ACL = (
    "on >operator-secret resetkeys ~{onnxgate}:* %R~{onnxgate:*}:stats:*"
    " %R~{onnxgate:*}:sketch:* resetchannels"
    " &{onnxgate}:* +@all -@admin -@dangerous"
)


def test_operator_works_under_its_acl_user_and_cannot_flush(redis_server, tmp_path):
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "operator", *OPERATOR_ACL.split())
    url = redis_server.url.replace("redis://", "redis://operator:operator-secret@")
    client = RegistryClient.from_url(url)
    client.create_model("credit", actor=ACTOR)
    path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
    client.register_version("credit", "1", path, actor=ACTOR)
    assert client.set_route("credit", [Split("1", 100)], actor=ACTOR).revision == 1
    assert client.history("credit")[0]["action"] == "route.set"
    assert client.gateways() == {}
    assert client.stats.read("credit", 900).by_version == {}
    client.close()
    operator = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        operator.flushall()
    operator.close()
    admin.close()

"""Deployment status derived from the rule, the rollout and live replicas' heartbeats, with
the time each version entered it: never typed by hand, so it cannot disagree with what
serves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Shadow, Split
from registry_client.rollout.store import RolloutStore
from registry_client.versions.status import VersionStatus, read_statuses
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer

HEARTBEAT_SECONDS = 0.5


@contextmanager
def two_gateways(url: str) -> Iterator[list[Gateway]]:
    started = [make_gateway(None, redis_url=url, replica_id=f"gw{i}", rules_poll_seconds=0.1,
                            heartbeat_seconds=HEARTBEAT_SECONDS) for i in range(2)]  # fmt: skip
    try:
        yield started
    finally:
        for gateway in started:
            gateway.stop(grace_seconds=1)


@pytest.fixture
def registry_with_versions(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    """Model credit with versions 1, 2 and 3 and no rule."""
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    for version in ("1", "2", "3"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), tmp_path, "credit",
                                version)  # fmt: skip
        registry.register_version("credit", version, path, actor="ops")
    yield registry
    registry.close()


def statuses(registry: RegistryClient) -> dict[str, VersionStatus]:
    return {s.version: s for s in read_statuses(registry, "credit")}


def texts(registry: RegistryClient) -> dict[str, str]:
    return {v: s.text for v, s in statuses(registry).items()}


def test_status_follows_the_rule_on_every_replica(
    registry_with_versions: RegistryClient, redis_server: RedisServer
):
    registry = registry_with_versions
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    with two_gateways(redis_server.url):
        eventually(lambda: texts(registry) == {"1": "primary 100%", "2": "idle",
                                               "3": "registered"}, timeout=30)  # fmt: skip
        assert {(s.replicas, s.applied) for s in statuses(registry).values()} == {(2, 2)}

        changed = registry.set_route("credit", [Split("1", 90), Split("2", 10)],
                                     [Shadow("3", 30)], actor="bob")  # fmt: skip
        # The rule alone tells the new statuses at once; the replicas' heartbeats tell, within
        # one beat of applying it, that every replica serves them.
        assert texts(registry) == {"1": "primary 90%", "2": "canary 10%", "3": "shadow 30%"}
        changed_at = time.monotonic()
        eventually(lambda: statuses(registry)["2"].applied == 2, timeout=30)
        print(
            f"\nSTATUS all replicas report revision {changed.revision} after"
            f" {time.monotonic() - changed_at:.2f} s (heartbeat {HEARTBEAT_SECONDS} s)"
        )
        entry = registry.history("credit", limit=1)[0]
        assert entry["action"] == "route.set"
        # Each entered its state with that change: 1 too, from 100% to 90%.
        assert {s.since for s in statuses(registry).values()} == {entry["when"]}

        # A rollout names the primary: its baseline, even when the candidate weighs as much.
        registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="bob")
        RolloutStore(registry).start(None, actor="alice", baseline_from_rule=True,
                                     model="credit", candidate="2", steps=(50, 100),
                                     interval_seconds=600.0)  # fmt: skip
        assert texts(registry)["1"] == "primary 50%" and texts(registry)["2"] == "canary 50%"
        RolloutStore(registry).abort("credit", actor="alice")
        assert texts(registry) == {"1": "primary 100%", "2": "registered", "3": "registered"}


def test_a_version_that_fails_to_load_says_on_how_many_replicas(
    redis_server: RedisServer, tmp_path: Path
):
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    good = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", "1")
    bad = onnx_models.save(onnx_models.classifier(seed=2), tmp_path, "credit", "2")
    for version, path in (("1", good), ("2", bad)):
        registry.register_version("credit", version, path, actor="ops")
    bad.write_bytes(b"changed after registration")  # no longer the bytes registered
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    with two_gateways(redis_server.url):
        eventually(lambda: texts(registry)["2"] == "failed on 2 replicas", timeout=30)
        registry.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops")
        # Each replica tries the new rule's versions again: while one does, only the other
        # reports the failure.
        eventually(lambda: texts(registry)["2"] == "canary 10%, failed on 2 replicas", timeout=30)
    registry.close()


def test_retired_and_unretired_versions_say_since_when(registry_with_versions: RegistryClient):
    registry = registry_with_versions
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    registry.retire_version("credit", "2", actor="ops", reason="trained on leaked labels")
    retired = registry.history("credit", limit=1)[0]
    assert statuses(registry)["2"].text == "retired"
    assert statuses(registry)["2"].since == retired["when"]
    registry.set_route("credit", [Split("1", 100), Split("3", 0)], actor="ops")
    assert statuses(registry)["2"].since == retired["when"]  # rules since do not move it
    registry.unretire_version("credit", "2", actor="ops", reason="labels fixed")
    back = registry.history("credit", limit=1)[0]
    assert (statuses(registry)["2"].text, statuses(registry)["2"].since) == (
        "registered", back["when"])  # fmt: skip
    # Without live replicas, a version at weight 0 cannot be known loaded.
    assert statuses(registry)["3"].text == "loading"

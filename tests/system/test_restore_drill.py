"""The restore drill (docs/operations.md, "Backup and restore"): a gateway serves a split
under client traffic; `gatectl export`; Redis comes back empty; `gatectl restore`. No request
fails at any step, nothing is reloaded, and the gateway follows a rule changed after the
restore. Real gateway, real redis-server, models built with onnx.helper, gatectl in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.traffic import Traffic


@pytest.fixture
def serving(redis_server: RedisServer, tmp_path: Path) -> Iterator[Gateway]:
    """credit 1 and 2 split 50/50 (rule revision 2), served by a gateway following Redis."""
    client = RegistryClient.from_url(redis_server.url)
    try:
        client.create_model("credit", actor="ops", owner="risk")
        for version in ("1", "2"):
            path = onnx_models.save(onnx_models.classifier(seed=int(version)),
                                    tmp_path / "artifacts", "credit", version)  # fmt: skip
            client.register_version("credit", version, path, actor="ops")
        client.set_route("credit", [Split("1", 100)], actor="ops")
        client.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")
    finally:
        client.close()
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2,
                           heartbeat_seconds=0.2)  # fmt: skip
    yield gateway
    gateway.stop(grace_seconds=1)


def _gauge(gateway: Gateway, name: str, **labels: str) -> float | None:
    return gateway.registry.get_sample_value(name, labels)


def _answers_more(traffic: Traffic, count: int = 50) -> None:
    """Wait until the client has had `count` more answers, whatever they were."""
    seen = sum(traffic.codes.values())
    eventually(lambda: sum(traffic.codes.values()) >= seen + count, 30)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_the_restore_drill_fails_no_request_and_the_gateway_follows_on(
    serving, redis_server, tmp_path, how
):
    gateway, url, saved = serving, redis_server.url, tmp_path / "registry.json"
    eventually(lambda: gateway.routes.current().routes["credit"].weights == {"1": 50, "2": 50},
               30)  # fmt: skip
    loaded = {v: gateway.versions.get("credit", v) for v in ("1", "2")}
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "credit")
    try:
        _answers_more(traffic)
        code, said, _ = run_gatectl(url, "export", "--output", str(saved))
        assert code == 0 and said.startswith("exported 1 models, 2 versions, "), said

        lost = time.monotonic()
        if how == "restart":
            redis_server.stop()
            redis_server.start()
        else:
            raw = redis.Redis.from_url(url)
            raw.flushall()
            raw.close()
        eventually(lambda: _gauge(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
        _answers_more(traffic)

        restored = time.monotonic()
        code, said, err = run_gatectl(url, "restore", str(saved))
        assert (code, err) == (0, ""), err
        assert said.splitlines()[1].split()[:2] == ["credit", "restored"]
        eventually(lambda: _gauge(gateway, "onnxgate_registry_epoch_missing") == 0, 30)
        eventually(lambda: _gauge(gateway, "onnxgate_registry_missing", model="credit") == 0, 30)
        followed = time.monotonic()
        assert {v: gateway.versions.get("credit", v) for v in ("1", "2")} == loaded  # kept
        _answers_more(traffic)

        # A change made after the restore: gatectl waits for the gateway to apply it.
        code, said, err = run_gatectl(url, "route", "set", "credit", "--split", "2=100",
                                      "--wait", "30")  # fmt: skip
        assert (code, err) == (0, ""), err
        assert "revision 3" in said
        route = gateway.routes.current().routes["credit"]
        assert (route.weights, route.revision) == ({"2": 100}, 3)
        _answers_more(traffic)
    finally:
        codes = traffic.stop()
    print(f"\n{how}: restore started {restored - lost:.2f} s after the loss; restored and"
          f" followed {followed - restored:.2f} s later; {codes['OK']} requests answered,"
          f" {sum(codes.values()) - codes['OK']} failed")  # fmt: skip
    assert set(codes) == {"OK"}

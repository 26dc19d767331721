"""The registry on the Redis deployments production runs: a Redis Cluster of three shards
(each with a replica) made by `redis-cli --cluster create`, and a primary with a replica
watched by three Debian `redis-sentinel` processes. gatectl and gateways reach each by one
URL (redis+cluster://, redis+sentinel://); every flow works there as on one server: records,
uploads, rules and their hints, export and restore, statistics, sketches and drift, a rollout
driven by the gateways' controllers, predictions and labels joined."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.cli import main as onnxgate
from registry_client import Label, RegistryClient
from registry_client.quality.report import minutes_of, read_range
from registry_client.quality.task import QualityConfig
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import eventually
from tests.support.redis_server import CLUSTER_ACL, CONTROLLER_ACL, GATEWAY_ACL
from tests.support.redis_topologies import RedisClusterDeployment, SentinelDeployment
from tests.support.rollout_rig import Traffic, rig
from tests.support.wire import infer_request

Deployment = RedisClusterDeployment | SentinelDeployment
QUICK: dict[str, Any] = {"prediction_hold_seconds": 0.2, "prediction_flush_seconds": 0.1,
                            "label_join_seconds": 0.1}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterDeployment]:
    deployment = RedisClusterDeployment(tmp_path_factory.mktemp("cluster"))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(tmp_path_factory.mktemp("sentinel"))
    yield deployment
    deployment.stop()


@pytest.fixture(params=["cluster", "sentinel"])
def deployment(request: pytest.FixtureRequest) -> Deployment:
    """Each deployment, emptied for the test."""
    found: Deployment = request.getfixturevalue(request.param)
    found.flush()
    return found


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://127.0.0.1:26379", "name the primary the sentinels watch"),
        ("redis+cluster://127.0.0.1:7000/3", "a Redis Cluster has only db 0"),
        ("redis+cluster://127.0.0.1:70000", "must be a number from 1 to 65535"),
        ("redis://:pw@127.0.0.1?password_file=/run/secrets/redis", "not both"),
        ("redis://127.0.0.1?password_file=/nonexistent/redis-password", "cannot read"),
        ("memcached://127.0.0.1", "expected one of redis://"),
    ],
)  # fmt: skip
def test_a_malformed_redis_url_is_a_usage_error_of_both_tools(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--redis-url", url, "--grpc-port", "0", "--metrics-port", "-1"]
    assert onnxgate(argv, env={}) == 2
    err = capsys.readouterr().err
    assert "--redis-url: " in err and message in err
    code, _, err = run_gatectl(url, "models")
    assert code == 2 and err.startswith("gatectl: --redis-url: ") and message in err


def test_the_password_may_come_from_a_file(sentinel: SentinelDeployment, tmp_path: Path) -> None:
    sentinel.flush()
    registry = RegistryClient.from_url(sentinel.url)
    registry.create_model("credit", actor="ops", description="scores")
    registry.close()
    for server in sentinel.servers:  # ACL users are each server's own
        server.client().execute_command("ACL", "SETUSER", "reader", "on", ">from-a-file",
                                        "~*", "&*", "+@all")  # fmt: skip
    secret = tmp_path / "redis-password"
    secret.write_text("from-a-file\n")
    url = sentinel.url.replace("redis+sentinel://", "redis+sentinel://reader@")
    code, out, err = run_gatectl(f"{url}?password_file={secret}", "models")
    assert (code, err) == (0, "") and out.splitlines()[1].split() == ["credit", "0", "scores"]
    code, _, err = run_gatectl(url, "models")  # no password: the server refuses the user
    assert code == 4 and "invalid username-password pair" in err


def gatectl(deployment: Deployment, *argv: str) -> str:
    code, out, err = run_gatectl(deployment.url, *argv)
    assert code == 0, err
    return out


def test_gatectl_keeps_the_registry_and_restores_an_export(
    deployment: Deployment, tmp_path: Path
) -> None:
    for version, seed in (("1", 1), ("2", 2)):
        path = onnx_models.save(onnx_models.classifier(seed=seed), tmp_path, "credit", version)
        gatectl(deployment, "register", "credit", version, str(path), "--create-model",
                "--upload", "-q")  # fmt: skip
    gatectl(deployment, "route", "set", "credit", "--split", "1=90,2=10", "--no-wait")
    rule = json.loads(gatectl(deployment, "-o", "json", "route", "show", "credit"))
    assert [(s["version"], s["weight"]) for s in rule["split"]] == [("1", 90), ("2", 10)]
    exported = tmp_path / "export.json"
    gatectl(deployment, "export", "--include-artifacts", "--output", str(exported))

    deployment.flush()
    code, _, err = run_gatectl(deployment.url, "route", "show", "credit")
    assert code == 1 and "'credit' has no rule" in err
    gatectl(deployment, "restore", str(exported))
    again = json.loads(gatectl(deployment, "-o", "json", "route", "show", "credit"))
    assert (again["split"], again["revision"]) == (rule["split"], rule["revision"])
    versions = json.loads(gatectl(deployment, "-o", "json", "versions", "credit"))
    assert [v["version"] for v in versions] == ["1", "2"]
    history = json.loads(gatectl(deployment, "-o", "json", "route", "history", "credit"))
    assert [e["action"] for e in history][:2] == ["registry.restore", "route.set"]


def test_gateways_follow_rules_count_sketch_and_roll_out(
    deployment: Deployment, tmp_path: Path
) -> None:
    with rig(deployment, tmp_path, onnx_models.classifier(seed=1)) as r:
        # Both gateways apply a rule gatectl writes: its hint and the heartbeats that say so
        # cross the deployment (sharded pub/sub on a Cluster; a SCAN of every node).
        started = time.monotonic()
        gatectl(deployment, "route", "set", "credit", "--split", "1=50,2=50", "--wait", "10")
        assert time.monotonic() - started < 5
        assert r.serving({"1": 50, "2": 50})
        with Traffic(r.addresses) as traffic:
            eventually(lambda: len(traffic.records) >= 300, timeout=30)
            # The statistics every gateway flushes, per version, read by gatectl.
            eventually(lambda: _compared(deployment).get("1", 0) >= 50, timeout=15)
            # The sketches of version 1's inputs, read back as a reference and judged.
            reference = ("reference", "set", "credit", "1", "--from-traffic", "1", "--since", "10m")
            eventually(lambda: run_gatectl(deployment.url, *reference)[0] == 0, timeout=15)
            drift = json.loads(gatectl(deployment, "-o", "json", "drift", "credit",
                                       "--version", "1"))  # fmt: skip
            assert {f["feature"] for f in drift["features"]} >= {"input[0]", "input[3]"}
            gatectl(deployment, "route", "set", "credit", "--split", "1=100,2=0", "--wait", "10")
            # Latency on a shared machine is not what this test is about.
            assert r.start(min_p99_increase_ms=25.0).status == "progressing"
            state = r.wait_until_ended(60)
        assert state.status == "promoted", state.last_decision
        eventually(lambda: r.serving({"2": 100}))
        assert all(status == "OK" for _, _, status in traffic.records)


def test_gateways_under_least_privilege_users_follow_and_drive_a_cluster(
    cluster: RedisClusterDeployment, tmp_path: Path
) -> None:
    cluster.flush()
    for node in cluster.live_nodes():  # ACL users are each node's own
        client = node.client()
        client.execute_command("ACL", "SETUSER", "gateway", *(GATEWAY_ACL + CLUSTER_ACL).split())
        client.execute_command("ACL", "SETUSER", "controller",
                               *(CONTROLLER_ACL + CLUSTER_ACL).split())  # fmt: skip
    urls = [cluster.url.replace("redis+cluster://", f"redis+cluster://{user}:gateway-secret@")
            for user in ("gateway", "controller")]  # fmt: skip
    with rig(cluster, tmp_path, onnx_models.classifier(seed=1), redis_urls=urls) as r:
        gatectl(cluster, "route", "set", "credit", "--split", "1=50,2=50", "--wait", "10")
        assert r.serving({"1": 50, "2": 50})
        gatectl(cluster, "route", "set", "credit", "--split", "1=100,2=0", "--wait", "10")
        with Traffic(r.addresses):
            assert r.start(min_p99_increase_ms=25.0).status == "progressing"
            state = r.wait_until_ended(60)
    assert state.status == "promoted" and state.last_decision["by"] == "gw1", state.last_decision


def test_predictions_and_labels_are_joined(deployment: Deployment, tmp_path: Path) -> None:
    config = QualityConfig("binary", "probabilities", 1)
    rows = np.random.default_rng(3).normal(size=(40, 4)).astype(np.float32)
    registry = RegistryClient.from_url(deployment.url)  # the config before gateways read it
    registry.create_model("credit", actor="ops", quality=config)
    registry.close()
    with rig(deployment, tmp_path, onnx_models.classifier(seed=1), **QUICK) as r:
        for index, row in enumerate(rows):
            request = infer_request("credit", {"input": row[None, :]}, request_id=f"r{index}")
            with grpc.insecure_channel(r.addresses[index % 2]) as channel:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
        labels = [Label(f"r{i}", i % 2) for i in range(len(rows))]
        eventually(lambda: _logged(r.registry) == len(rows), timeout=20)
        assert r.registry.put_labels("credit", labels) == len(rows)
        eventually(lambda: _joined(r.registry) == len(rows), timeout=20)


def _compared(deployment: Deployment) -> dict[str, int]:
    report = json.loads(gatectl(deployment, "-o", "json", "compare", "credit", "--since", "15m"))
    return {row["version"]: row["requests"] for row in report["versions"]}


def _logged(registry: RegistryClient) -> int:
    first, last = minutes_of(900, time.time())
    return sum(registry.predictions.logged("credit", first, last).values())


def _joined(registry: RegistryClient) -> int:
    found = read_range(registry.quality, registry.predictions, "credit",
                       *minutes_of(900, time.time()))  # fmt: skip
    state = found.state("1", "primary", "", "")
    return 0 if state is None else int(state.n)

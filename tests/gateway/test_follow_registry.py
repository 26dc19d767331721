"""Gateways follow the registry's rules in a real redis-server, and survive it going away."""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.gateways import eventually, make_gateway, wait_until_ready
from tests.support.redis_server import GATEWAY_ACL, RedisServer, make_certificates
from tests.support.wire import infer_request

FEATURES = {"input": np.ones((1, 4), np.float32)}


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    """credit 1, 2, 3 registered; the rule sends everything to 1."""
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    for version in ("1", "2", "3"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), tmp_path, "credit",
                                version)  # fmt: skip
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 100)], actor="ops")
    yield client
    client.close()


@pytest.fixture
def following(redis_server, registry) -> Iterator[tuple[Gateway, pb_grpc.GRPCInferenceServiceStub]]:
    gateway = make_gateway(
        None, redis_url=redis_server.url, rules_poll_seconds=0.2, heartbeat_seconds=0.2
    )
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield gateway, pb_grpc.GRPCInferenceServiceStub(channel)
    gateway.stop(grace_seconds=1)


def _revision(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith('onnxgate_route_revision{model="credit"}'):
            return float(line.split()[-1])
    return 0.0


def _all_at_revision(metrics_ports: list[int], revision: int) -> bool:
    return all(_revision(port) == revision for port in metrics_ports)


def _served(stub: pb_grpc.GRPCInferenceServiceStub) -> str:
    return stub.ModelInfer(infer_request("credit", FEATURES)).model_version


def test_gateway_serves_the_registry_rule_once_synced(following):
    gateway, stub = following
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert {_served(stub) for _ in range(20)} == {"1"}
    assert gateway.registry.get_sample_value("onnxgate_route_revision", {"model": "credit"}) == 1


def test_route_change_is_followed_and_unused_versions_unload(following, registry):
    gateway, stub = following
    registry.set_route("credit", [Split("2", 100)], actor="ops", reason="promote")
    eventually(lambda: _served(stub) == "2")
    assert {_served(stub) for _ in range(20)} == {"2"}
    eventually(lambda: gateway.versions.status("credit", "1") is None)  # no rule names it


def test_weighted_rule_splits_traffic(following, registry):
    _, stub = following
    registry.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")
    eventually(lambda: _served(stub) == "2")
    served = [_served(stub) for _ in range(400)]
    assert 0.40 < served.count("2") / len(served) < 0.60


def test_the_weight_gauges_follow_the_rule_and_forget_versions_that_left_it(following, registry):
    gateway, _ = following
    weight = functools.partial(gateway.registry.get_sample_value, "onnxgate_route_weight")
    registry.set_route("credit", [Split("1", 70), Split("2", 30)], actor="ops")
    eventually(lambda: weight({"model": "credit", "version": "2"}) == 30)
    assert weight({"model": "credit", "version": "1"}) == 70
    registry.set_route("credit", [Split("3", 100)], actor="ops")
    eventually(lambda: weight({"model": "credit", "version": "3"}) == 100)
    # Kept at 70 and 30, versions 1 and 2 would take 50% of the rule in every share computed.
    assert weight({"model": "credit", "version": "1"}) is None
    assert weight({"model": "credit", "version": "2"}) is None


def test_rule_naming_a_tampered_artifact_is_not_applied(following, registry, tmp_path):
    gateway, stub = following
    onnx_models.save(onnx_models.classifier(seed=99), tmp_path, "credit", "3")  # other bytes
    registry.set_route("credit", [Split("3", 100)], actor="ops")
    eventually(lambda: (s := gateway.versions.status("credit", "3")) is not None and bool(s.reason))
    assert "sha256 mismatch" in gateway.versions.status("credit", "3").reason
    assert {_served(stub) for _ in range(20)} == {"1"}  # the old rule keeps serving

    def reported() -> bool:
        heartbeat = registry.gateways().get(gateway.replica, {})
        return "sha256 mismatch" in json.loads(heartbeat.get("errors", "{}")).get("credit", "")

    eventually(reported)


@pytest.mark.timeout(120)
def test_redis_killed_under_load_fails_no_request_and_resyncs_within_5s(
    following, redis_server, tmp_path
):
    gateway, stub = following
    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal served
        while not stop.is_set():
            try:
                _served(stub)
                served += 1
            except grpc.RpcError as exc:
                failures.append(exc.code().name)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        redis_server.stop()
        eventually(lambda: gateway.registry.get_sample_value("onnxgate_redis_connected") == 0, 15)
        before_restart = served
        eventually(lambda: served > before_restart + 50)  # serving on the last good rules
        redis_server.start()  # empty: the registry is written again, as after a restore
        fresh = RegistryClient.from_url(redis_server.url)
        fresh.create_model("credit", actor="ops")
        fresh.register_version("credit", "2", tmp_path / "credit" / "2" / "model.onnx",
                               actor="ops")  # fmt: skip
        fresh.set_route("credit", [Split("2", 100)], actor="ops")  # perhaps before resubscribing
        written = time.monotonic()
        eventually(lambda: gateway.routes.current().routes["credit"].versions == ("2",), 5)
        resync_seconds = time.monotonic() - written
        fresh.close()
    finally:
        stop.set()
        worker.join(timeout=10)
    assert failures == []
    assert resync_seconds < 5
    assert gateway.registry.get_sample_value("onnxgate_redis_connected") == 1


def test_models_directory_is_imported_with_default_rules(redis_server, tmp_path):
    repo = tmp_path / "repo"
    onnx_models.save(onnx_models.classifier(seed=1), repo, "credit", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "credit", "2")
    gateway = make_gateway(repo, redis_url=redis_server.url, rules_poll_seconds=0.2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert _served(stub) == "2"
            pinned = stub.ModelInfer(infer_request("credit", FEATURES, version="1"))
            assert pinned.model_version == "1"  # the lower version stays reachable by pin
        client = RegistryClient.from_url(redis_server.url)
        rule = client.get_route("credit")
        assert rule is not None
        assert (rule.revision, rule.updated_by) == (1, gateway.replica)
        client.close()
    finally:
        gateway.stop(grace_seconds=1)


def test_route_status_shows_each_replica_and_its_problems(following, registry, tmp_path,
                                                           redis_server):  # fmt: skip
    gateway, _ = following
    onnx_models.save(onnx_models.classifier(seed=99), tmp_path, "credit", "3")  # tampered
    registry.set_route("credit", [Split("3", 100)], actor="ops")

    def shown() -> list[list[str]]:
        code, out, _ = _gatectl(redis_server.url, "route", "status", "credit")
        assert code == 0
        return [line.split(None, 4) for line in out.splitlines()[2:]]

    eventually(lambda: any("sha256" in row[-1] for row in shown()))
    replica, applied, target, versions, problems = shown()[0]
    assert (replica, applied, target) == (gateway.replica, "1", "-")  # still serving revision 1
    assert versions.startswith("1:READY")
    assert "3: sha256 mismatch" in problems


@pytest.mark.timeout(120)
def test_three_gateway_processes_apply_a_change_under_load_without_failures(
    redis_server, registry, gateway_process, tmp_path
):
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    empty = tmp_path / "empty"
    empty.mkdir()
    gateways = [
        gateway_process(empty, "--redis-url", redis_server.url, "--rules-poll-seconds", "0.5")
        for _ in range(3)
    ]
    channels = [grpc.insecure_channel(g.address) for g in gateways]
    stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
    for stub in stubs:
        wait_until_ready(stub)
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()

    def load(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        while not stop.is_set():
            try:
                served.append(_served(stub))
            except grpc.RpcError as exc:
                failures.append(exc.code().name)

    workers = [threading.Thread(target=load, args=(s,)) for s in stubs]
    for worker in workers:
        worker.start()
    try:
        for step in (10, 50, 100):  # a canary growing under continuous traffic
            rule = registry.set_route(
                "credit", [Split("1", 100 - step), Split("2", step)], actor="ops"
            )
            ports = [g.metrics_port for g in gateways]
            eventually(functools.partial(_all_at_revision, ports, rule.revision))
        for stub in stubs:
            assert _served(stub) == "2"
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        for channel in channels:
            channel.close()
    assert failures == []
    assert {"1", "2"} <= set(served)  # traffic flowed while the canary grew


@pytest.mark.timeout(120)
def test_same_key_same_version_on_three_gateway_processes(
    redis_server, registry, gateway_process, tmp_path
):
    rule = registry.set_route(
        "credit", [Split("1", 50), Split("2", 30), Split("3", 20)], actor="ops"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    # Separate interpreters: each has its own (salted) hash(), so only a stable hash agrees.
    gateways = [gateway_process(empty, "--redis-url", redis_server.url) for _ in range(3)]
    eventually(functools.partial(_all_at_revision, [g.metrics_port for g in gateways],
                                 rule.revision), timeout=30)  # fmt: skip
    keys = [f"customer-{i}" for i in range(300)]
    answers = []
    for g in gateways:
        with grpc.insecure_channel(g.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            by_key = {}
            for key in keys:
                request = infer_request("credit", FEATURES)
                request.parameters["routing_key"].string_param = key
                response = stub.ModelInfer(request)
                assert response.parameters["routed_by"].string_param == "sticky"
                by_key[key] = response.model_version
            answers.append(by_key)
    assert answers[0] == answers[1] == answers[2]
    shares = {v: list(answers[0].values()).count(v) / len(keys) for v in ("1", "2", "3")}
    assert shares["1"] > shares["2"] > shares["3"] > 0.1  # the keys follow the 50/30/20 split


def test_rule_naming_a_version_gone_from_the_registry_is_not_applied(following, registry,
                                                                     redis_server):  # fmt: skip
    gateway, stub = following
    registry.set_route("credit", [Split("2", 100)], actor="ops")
    eventually(lambda: _served(stub) == "2")
    raw = redis.Redis.from_url(redis_server.url)
    raw.delete(registry.keys.version("credit", "3"))  # the registry lost it behind our back
    registry_rule = json.loads(raw.get(registry.keys.route("credit")) or b"{}")
    registry_rule["split"] = [{"version": "3", "weight": 100}]
    registry_rule["revision"] += 1
    raw.set(registry.keys.route("credit"), json.dumps(registry_rule))
    raw.incr(registry.keys.epoch)
    raw.close()

    def reported() -> bool:
        heartbeat = registry.gateways().get(gateway.replica, {})
        return "is not registered" in json.loads(heartbeat.get("errors", "{}")).get("credit", "")

    eventually(reported)
    assert {_served(stub) for _ in range(20)} == {"2"}
    assert gateway.registry.get_sample_value("onnxgate_redis_connected") == 1


def test_gateway_runs_under_a_least_privilege_redis_user(redis_server, registry):
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "gateway", *GATEWAY_ACL.split())
    url = redis_server.url.replace("redis://", "redis://gateway:gateway-secret@")
    gateway = make_gateway(None, redis_url=url, rules_poll_seconds=0.2, heartbeat_seconds=0.2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert _served(stub) == "1"
            registry.set_route("credit", [Split("2", 100)], actor="ops")
            eventually(lambda: _served(stub) == "2")
        eventually(lambda: gateway.replica in registry.gateways())
        assert gateway.stats_flusher is not None and gateway.stats_flusher.flush()
        assert gateway.sketch_flusher is not None and gateway.sketch_flusher.flush()
        assert registry.drift.read("credit", "2", 900).rows >= 1
        served = registry.stats.read("credit", 900).by_version
        assert sum(s.requests for s in served.values()) >= 2
        restricted = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.set(registry.keys.route("credit"), "{}")
        restricted.close()
    finally:
        gateway.stop(grace_seconds=1)
        admin.close()


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "{onnxgate}:route:credit", "{}"),  # a route write
        ("DEL", "{onnxgate}:route:credit"),
        ("HSET", "{onnxgate}:version:credit:1", "sha256", "0" * 64),  # tamper with a version
        ("INCR", "{onnxgate}:epoch"),
        ("PUBLISH", "{onnxgate}:events", "credit"),  # a rule event
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "dir"),
        ("CONFIG", "SET", "dir", "/tmp"),
        ("KEYS", "*"),
        ("ACL", "WHOAMI"),
        ("SHUTDOWN", "NOSAVE"),
        ("EVAL", "return 1", "0"),
        ("SET", "{elsewhere}:key", "x"),  # keys outside the namespace
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_the_gateway_redis_user_is_refused_every_command_it_must_not_run(redis_server, command):
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "gateway", *GATEWAY_ACL.split())
    admin.set("{onnxgate}:route:credit", '{"kept": true}')
    url = redis_server.url.replace("redis://", "redis://gateway:gateway-secret@")
    restricted = redis.Redis.from_url(url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            restricted.execute_command(*command)
        assert admin.get("{onnxgate}:route:credit") == b'{"kept": true}'
        assert admin.ping()  # still up: SHUTDOWN and FLUSHALL were refused
        # Refused selectively: what the gateway must do still works under the same user.
        assert restricted.hset("{onnxgate:credit}:stats:1", "replica", "x") == 1
        assert restricted.get("{onnxgate}:route:credit") == b'{"kept": true}'
    finally:
        restricted.close()
        admin.close()


def test_uploaded_artifact_is_served_without_the_original_file(following, registry, tmp_path):
    _, stub = following
    path = onnx_models.save(onnx_models.classifier(seed=7), tmp_path / "elsewhere", "credit", "7")
    stored = registry.register_version("credit", "7", path, actor="ops", upload=True)
    assert stored["artifact_uri"] == f"redis-blob:{stored['sha256']}"
    path.unlink()  # only the registry has the bytes now
    registry.set_route("credit", [Split("7", 100)], actor="ops")
    eventually(lambda: _served(stub) == "7")
    assert registry.fetch_blob(stored["sha256"])[:4]  # content-addressed, fetchable


def test_gateway_and_gatectl_work_over_mutual_tls(tmp_path):
    tls = RedisServer(tmp_path, make_certificates(tmp_path))
    try:
        client = RegistryClient.from_url(tls.url)
        client.create_model("credit", actor="ops")
        path = onnx_models.save(onnx_models.classifier(), tmp_path, "credit", "1")
        client.register_version("credit", "1", path, actor="ops")
        client.set_route("credit", [Split("1", 100)], actor="ops")
        gateway = make_gateway(None, redis_url=tls.url, rules_poll_seconds=0.2)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
                assert _served(pb_grpc.GRPCInferenceServiceStub(channel)) == "1"
        finally:
            gateway.stop(grace_seconds=1)
        code, out, _ = _gatectl(tls.url, "route", "show", "credit")
        assert code == 0 and "revision 1" in out
        plain = redis.Redis(port=tls.port, socket_connect_timeout=1)
        with pytest.raises(redis.ConnectionError):
            plain.ping()  # no TLS, no entry
        plain.close()
        client.close()
    finally:
        tls.stop()


def test_routing_key_from_parameter_or_metadata_is_sticky(following, registry):
    gateway, stub = following
    registry.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")
    eventually(lambda: gateway.routes.current().routes["credit"].versions == ("1", "2"))
    for key in ("alice", "bob", "carol", "dave"):
        by_parameter = infer_request("credit", FEATURES)
        by_parameter.parameters["routing_key"].string_param = key
        answers = {stub.ModelInfer(by_parameter).model_version for _ in range(10)}
        answers |= {
            stub.ModelInfer(infer_request("credit", FEATURES),
                            metadata=[("x-routing-key", key)]).model_version
            for _ in range(10)
        }  # fmt: skip
        assert len(answers) == 1, key
        response = stub.ModelInfer(by_parameter)
        assert response.parameters["routed_by"].string_param == "sticky"


def test_pinned_request_ignores_the_split_and_needs_a_deployed_version(following, registry):
    gateway, stub = following
    registry.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    eventually(lambda: gateway.routes.current().routes["credit"].revision == 2)
    for _ in range(20):  # the split never sends traffic to 2, a pin always does
        response = stub.ModelInfer(infer_request("credit", FEATURES, version="2"))
        assert response.model_version == "2"
        assert response.parameters["routed_by"].string_param == "pin"
    with pytest.raises(grpc.RpcError) as err:  # registered, but no rule deploys it here
        stub.ModelInfer(infer_request("credit", FEATURES, version="3"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    details = err.value.details() or ""
    assert "'credit'" in details and "'3'" in details

"""A Redis that comes back empty (restarted without its data, or flushed) changes nothing a
gateway serves: the same loaded versions answer, readiness stays, nothing is unloaded, each
warning is logged once. A registry restored afterwards, at its old revisions, from revision 1
again, or from an older copy, is followed as usual. Real gateways, a real redis-server,
models built with onnx.helper."""

from __future__ import annotations

import collections
import logging
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.routing.watcher import FULL_READ_POLLS
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.traffic import ROW, Traffic
from tests.support.wire import infer_request

EPOCH_GONE = "registry epoch gone"
EPOCH_BACK = "registry epoch went back"
# Enough epoch polls for two full reads of every rule (FULL_READ_POLLS polls apart).
POLLS_FOR_TWO_FULL_READS = 2 * FULL_READ_POLLS + 1


def _register(client: RegistryClient, directory: Path) -> None:
    """credit 1 and 2; everything on 1, 2 loaded for pinned requests (epoch 4, revision 1)."""
    client.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = directory / "credit" / version / "model.onnx"
        if not path.exists():
            onnx_models.save(onnx_models.classifier(seed=int(version)), directory, "credit",
                             version)  # fmt: skip
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    _register(client, tmp_path / "artifacts")
    yield client
    client.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """Redis as someone with a shell on it sees it: commands that bypass the registry."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def following(redis_server: RedisServer, registry: RegistryClient) -> Iterator[Gateway]:
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2,
                           heartbeat_seconds=0.2, drift_monitor_seconds=0.2)  # fmt: skip
    yield gateway
    gateway.stop(grace_seconds=1)


def _scraped(gateway: Gateway, name: str) -> float | None:
    """A label-less sample's value as the gateway's /metrics endpoint serves it."""
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in body.splitlines()
              if line.startswith(f"{name} ")]  # fmt: skip
    return values[0] if values else None


def _served(gateway: Gateway, version: str = "") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(infer_request("credit", ROW, version=version),
                               timeout=10).model_version  # fmt: skip


def _serves(gateway: Gateway, version: str) -> bool:
    try:
        return _served(gateway) == version
    except grpc.RpcError:
        return False


def _empty_again(redis_server: RedisServer, raw: redis.Redis, how: str) -> None:
    """Redis without its data: a new server on the same port (every connection dropped), or
    FLUSHALL on the running one (connections kept)."""
    if how == "restart":
        redis_server.stop()
        redis_server.start()
    else:
        raw.flushall()


def _wait_for_epoch_polls(url: str, polls: int, timeout: float = 60) -> None:
    """Return once the gateway has read `{onnxgate}:epoch` `polls` times more (only the rule
    follower reads it), as Redis's MONITOR shows the commands it runs."""
    client = redis.Redis.from_url(url, socket_timeout=timeout)  # a stalled gateway fails
    deadline = time.monotonic() + timeout
    seen = 0
    try:
        with client.monitor() as monitor:
            while seen < polls:
                assert time.monotonic() < deadline, f"{seen} of {polls} epoch polls seen"
                seen += monitor.next_command()["command"] == "GET {onnxgate}:epoch"
    finally:
        client.close()


def _export(raw: redis.Redis) -> dict[bytes, bytes]:
    """Every lasting key of the namespace, DUMPed: what an export of the registry holds
    (heartbeats and leases expire, and are not part of it)."""
    dumped = {key: raw.dump(key) for key in raw.scan_iter("{onnxgate}:*") if raw.pttl(key) == -1}
    return {key: payload for key, payload in dumped.items() if payload is not None}


def _restore(raw: redis.Redis, exported: dict[bytes, bytes], *, flush_first: bool) -> None:
    """Write an export back in one transaction; with `flush_first`, in place of everything
    (no reader sees the registry empty in between)."""
    with raw.pipeline(transaction=True) as pipe:
        if flush_first:
            pipe.flushall()
        for key, payload in exported.items():
            pipe.restore(key, 0, payload, replace=True)
        pipe.execute()


def _unloads(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() in {"version unloaded", "load cancelled"}]


def _epoch_warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_an_empty_redis_changes_nothing_served(following, redis_server, raw, caplog, how):
    caplog.set_level(logging.INFO)
    gateway = following
    loaded = {v: gateway.versions.get("credit", v) for v in ("1", "2")}
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "credit")
    try:
        eventually(lambda: traffic.codes["OK"] > 20)
        before = traffic.codes["OK"]
        emptied = time.monotonic()
        _empty_again(redis_server, raw, how)
        eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
        noticed = time.monotonic() - emptied
        _wait_for_epoch_polls(redis_server.url, POLLS_FOR_TWO_FULL_READS)
        answered = traffic.codes["OK"]
        eventually(lambda: traffic.codes["OK"] > answered + 50)
    finally:
        codes = traffic.stop()
    print(f"\n{how}: noticed after {noticed:.2f} s; {codes['OK'] - before} requests answered"
          f" from then on, {sum(codes.values()) - codes['OK']} failed")  # fmt: skip
    assert set(codes) == {"OK"}
    assert {_served(gateway) for _ in range(20)} == {"1"}
    assert _served(gateway, version="2") == "2"  # weight 0, kept for pinned requests
    assert {v: gateway.versions.get("credit", v) for v in ("1", "2")} == loaded  # not reloaded
    assert _unloads(caplog) == []


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_an_empty_redis_keeps_the_gateway_and_its_model_ready(following, redis_server, raw,
                                                              how):  # fmt: skip
    gateway = following
    _empty_again(redis_server, raw, how)
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
    _wait_for_epoch_polls(redis_server.url, POLLS_FOR_TWO_FULL_READS)
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="credit"), timeout=5).ready
        assert stub.ModelReady(pb.ModelReadyRequest(name="credit", version="2"), timeout=5).ready
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert _scraped(gateway, "onnxgate_redis_connected") == 1  # it answers: not an outage


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_an_empty_redis_logs_each_warning_once(following, redis_server, raw, caplog, how):
    caplog.set_level(logging.INFO)
    gateway = following
    _empty_again(redis_server, raw, how)
    empty_since = time.time()  # a restart's outage, before it, is reported as an outage
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
    _wait_for_epoch_polls(redis_server.url, POLLS_FOR_TWO_FULL_READS)  # drift refreshed 10+
    warnings = collections.Counter(
        (r.name, r.getMessage(), getattr(r, "version", None))
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.created >= empty_since
    )
    assert warnings, "the empty registry was not reported"
    assert {key: n for key, n in warnings.items() if n > 1} == {}
    assert len(_epoch_warnings(caplog, EPOCH_GONE)) == 1


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_a_registry_restored_at_its_revisions_is_followed_again(
    following, registry, redis_server, raw, how
):
    gateway = following
    registry.set_route("credit", [Split("2", 100)], actor="ops")  # revision 2
    eventually(lambda: _serves(gateway, "2"))
    exported = _export(raw)
    loaded = gateway.versions.get("credit", "2")
    _empty_again(redis_server, raw, how)
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
    _restore(raw, exported, flush_first=False)  # the same rules at the same revisions
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 0)
    eventually(lambda: gateway.registry.get_sample_value(
        "onnxgate_registry_missing", {"model": "credit"}) == 0)  # fmt: skip
    assert gateway.versions.get("credit", "2") is loaded  # the same rule: nothing reloaded
    registry.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")  # revision 3
    eventually(lambda: gateway.routes.current().routes["credit"].weights == {"1": 50, "2": 50})
    assert gateway.routes.current().routes["credit"].revision == 3


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_a_registry_written_again_from_revision_1_is_followed(following, registry, redis_server,
                                                              raw, tmp_path, how):  # fmt: skip
    gateway = following
    registry.set_route("credit", [Split("2", 100)], actor="ops")  # revision 2
    eventually(lambda: _serves(gateway, "2"))
    _empty_again(redis_server, raw, how)
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
    # Restored with gatectl's writes: revisions count from 1 again, below the one served.
    fresh = RegistryClient.from_url(redis_server.url)
    try:
        _register(fresh, tmp_path / "artifacts")  # revision 1: 1=100, 2=0
        eventually(lambda: gateway.routes.current().routes["credit"].revision == 1)
        assert _served(gateway) == "1"
        # Revision 2 again, with other content than the revision 2 served before the loss.
        fresh.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")
        eventually(lambda: gateway.routes.current().routes["credit"].weights == {"1": 50, "2": 50})
    finally:
        fresh.close()


def test_a_registry_replaced_by_an_older_copy_is_followed_and_reported(following, registry, raw,
                                                                       caplog):  # fmt: skip
    caplog.set_level(logging.INFO)
    gateway = following
    older = _export(raw)  # epoch 4: revision 1, everything on 1
    registry.set_route("credit", [Split("2", 100)], actor="ops")  # epoch 5, revision 2
    eventually(lambda: _serves(gateway, "2"))
    _restore(raw, older, flush_first=True)  # at once: no read ever sees it empty
    eventually(lambda: _serves(gateway, "1"))
    assert gateway.routes.current().routes["credit"].revision == 1
    assert gateway.registry.get_sample_value("onnxgate_registry_epoch_rewinds_total") == 1
    (warning,) = _epoch_warnings(caplog, EPOCH_BACK)
    assert (vars(warning)["previous_epoch"], vars(warning)["epoch"]) == (5, 4)
    assert _epoch_warnings(caplog, EPOCH_GONE) == []  # never empty
    assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0
    # Revision 2 again, with other content than the revision 2 served before.
    registry.set_route("credit", [Split("1", 50), Split("2", 50)], actor="ops")
    eventually(lambda: gateway.routes.current().routes["credit"].weights == {"1": 50, "2": 50})


def test_a_restore_ending_at_the_epoch_last_seen_is_followed_on_its_hint(
    redis_server, registry, raw, tmp_path
):
    # Polls far apart: only the restore's hint can bring the rule in within the test.
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=30)
    try:
        registry.set_route("credit", [Split("2", 100)], actor="ops")  # epoch 5, revision 2
        eventually(lambda: _serves(gateway, "2"))
        raw.flushall()
        fresh = RegistryClient.from_url(redis_server.url)
        try:
            fresh.create_model("credit", actor="ops", description="restored")  # epoch 1
            _register(fresh, tmp_path / "artifacts")  # epoch 5 again, revision 1
        finally:
            fresh.close()
        assert raw.get("{onnxgate}:epoch") == b"5"  # the value the gateway last read
        eventually(lambda: _serves(gateway, "1"), 10)
    finally:
        gateway.stop(grace_seconds=1)


@pytest.mark.parametrize("how", ["restart", "flushall"])
def test_a_revision_given_up_before_the_loss_is_tried_again_when_written_again(
    following, registry, redis_server, raw, tmp_path, how
):
    gateway = following
    artifacts = tmp_path / "artifacts"
    path = onnx_models.save(onnx_models.classifier(seed=3), artifacts, "credit", "3")
    registry.register_version("credit", "3", path, actor="ops")
    onnx_models.save(onnx_models.classifier(seed=99), artifacts, "credit", "3")  # other bytes
    registry.set_route("credit", [Split("3", 100)], actor="ops")  # revision 2: given up
    eventually(lambda: gateway.following.watcher.published.rejected.get("credit") == 2)
    _empty_again(redis_server, raw, how)
    eventually(lambda: _scraped(gateway, "onnxgate_registry_epoch_missing") == 1, 30)
    fresh = RegistryClient.from_url(redis_server.url)
    try:
        _register(fresh, artifacts)  # revision 1 again: the rule still served
        fixed = onnx_models.save(onnx_models.classifier(seed=3), tmp_path / "fixed", "credit", "3")
        fresh.register_version("credit", "3", fixed, actor="ops")
        # Revision 2 again, with the content given up before the loss: a new write all the same.
        fresh.set_route("credit", [Split("3", 100)], actor="ops")
        eventually(lambda: _serves(gateway, "3"))
    finally:
        fresh.close()


def test_a_gateway_started_against_an_empty_redis_serves_nothing_until_it_is_written(
    redis_server, tmp_path
):
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2)
    try:
        with pytest.raises(grpc.RpcError) as err:
            _served(gateway)
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        assert gateway.versions.statuses() == []
        assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0  # never seen: not lost
        assert _scraped(gateway, "onnxgate_registry_epoch_rewinds_total") == 0
        client = RegistryClient.from_url(redis_server.url)
        try:
            _register(client, tmp_path / "artifacts")
        finally:
            client.close()
        eventually(lambda: _serves(gateway, "1"))
    finally:
        gateway.stop(grace_seconds=1)

"""A registry that answers but has lost what a gateway serves (FLUSHALL, keys deleted): the
gateway keeps serving its last good rules, stays ready and reports the loss (a warning once,
onnxgate_registry_missing{model}, onnxgate_registry_epoch_missing, its heartbeat) until the
registry has the rules again. Real gateways, a real redis-server, models built with
onnx.helper."""

from __future__ import annotations

import io
import json
import logging
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
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.traffic import ROW, Traffic
from tests.support.wire import infer_request

LOSS_LOG = "gateway.routing.registry_loss"
# A key deleted behind the registry's back bumps no epoch: it is seen at the next full read
# (FULL_READ_POLLS poll periods, 2 s here), well within this.
FULL_READ_TIMEOUT = 20


def _register(client: RegistryClient, model: str, directory: Path) -> None:
    """`model` with versions 1 and 2; everything on 1, 2 loaded for pinned requests."""
    client.create_model(model, actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=int(version)), directory, model,
                                version)  # fmt: skip
        client.register_version(model, version, path, actor="ops")
    client.set_route(model, [Split("1", 100), Split("2", 0)], actor="ops")


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    _register(client, "credit", tmp_path / "artifacts")
    yield client
    client.close()


@pytest.fixture
def raw(redis_server) -> Iterator[redis.Redis]:
    """Redis as someone with a shell on it sees it: commands that bypass the registry."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def following(redis_server, registry) -> Iterator[Gateway]:
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2,
                           heartbeat_seconds=0.2)  # fmt: skip
    yield gateway
    gateway.stop(grace_seconds=1)


def _scraped(gateway: Gateway, name: str, **labels: str) -> float | None:
    """A sample's value as the gateway's /metrics endpoint serves it; None when absent."""
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{selector}}} " if labels else f"{name} "
    values = [float(line[len(prefix) :]) for line in body.splitlines() if line.startswith(prefix)]
    return values[0] if values else None


def _missing(gateway: Gateway, model: str) -> float | None:
    return _scraped(gateway, "onnxgate_registry_missing", model=model)


def _heartbeat_errors(registry: RegistryClient, gateway: Gateway) -> dict[str, str]:
    heartbeat = registry.gateways().get(gateway.replica, {})
    errors: dict[str, str] = json.loads(heartbeat.get("errors", "{}"))
    return errors


def _served(gateway: Gateway, model: str, version: str = "") -> str:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = infer_request(model, ROW, version=version)
        return stub.ModelInfer(request, timeout=10).model_version


def _serves(gateway: Gateway, model: str, version: str) -> bool:
    """Whether the model's default route answers with `version` (False while it has none)."""
    try:
        return _served(gateway, model) == version
    except grpc.RpcError:
        return False


def _lost_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOSS_LOG and r.levelno == logging.WARNING
            and hasattr(r, "lost")]  # fmt: skip


@pytest.mark.timeout(120)
def test_flushall_under_load_fails_no_request_and_flags_the_served_model(following, raw):
    gateway = following
    assert _missing(gateway, "credit") == 0
    assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0
    traffic = Traffic(f"127.0.0.1:{gateway.grpc_port}", "credit")
    try:
        eventually(lambda: traffic.codes["OK"] > 20)
        raw.flushall()
        eventually(lambda: _missing(gateway, "credit") == 1)
        assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 1
        flagged = traffic.codes["OK"]
        eventually(lambda: traffic.codes["OK"] > flagged + 50)  # still serving after the loss
    finally:
        codes = traffic.stop()
    assert set(codes) == {"OK"}
    assert _scraped(gateway, "onnxgate_redis_connected") == 1  # reachable: not an outage


def test_models_imported_at_start_are_not_imported_again_after_a_flush(redis_server, raw,
                                                                       tmp_path):  # fmt: skip
    repo = tmp_path / "repo"
    onnx_models.save(onnx_models.classifier(), repo, "classifier", "1")
    gateway = make_gateway(repo, redis_url=redis_server.url, rules_poll_seconds=0.2)
    try:
        assert _serves(gateway, "classifier", "1")
        raw.flushall()  # perhaps on purpose: the gateway reports it, and leaves it so
        eventually(lambda: _missing(gateway, "classifier") == 1)
        assert raw.keys("*models*") == []
        assert _serves(gateway, "classifier", "1")
    finally:
        gateway.stop(grace_seconds=1)


def test_a_flushed_registry_keeps_the_gateway_ready(following, raw):
    gateway = following
    raw.flushall()
    eventually(lambda: _missing(gateway, "credit") == 1)
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        assert pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest()).ready
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_versions_of_a_lost_rule_stay_loaded_for_pinned_requests(following, registry, raw):
    gateway = following
    raw.flushall()
    # The heartbeat is published after the resync has unloaded what no rule needs.
    eventually(lambda: "rule gone" in _heartbeat_errors(registry, gateway).get("credit", ""))
    assert _served(gateway, "credit") == "1"
    assert _served(gateway, "credit", version="2") == "2"  # weight 0 in the lost rule


def test_the_loss_is_logged_once_however_often_the_registry_is_read_again(
    following, registry, raw, caplog, tmp_path
):
    caplog.set_level(logging.INFO, logger=LOSS_LOG)
    gateway = following
    raw.flushall()
    eventually(lambda: _missing(gateway, "credit") == 1)
    # Registry writes after the loss: each is read in full, and credit is still missing.
    _register(registry, "fraud", tmp_path / "more")
    eventually(lambda: _serves(gateway, "fraud", "1"))
    _register(registry, "churn", tmp_path / "more")
    eventually(lambda: _serves(gateway, "churn", "1"))
    assert _missing(gateway, "credit") == 1
    (warning,) = _lost_warnings(caplog)
    assert vars(warning)["lost"] == {
        "credit": "rule gone from the registry; revision 1 keeps serving"
    }
    epoch_gone = [r for r in caplog.records if "registry epoch gone" in r.getMessage()]
    assert [r.levelno for r in epoch_gone] == [logging.WARNING]
    assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0  # written again since


def test_a_recreated_rule_clears_the_signal_and_is_followed(following, registry, raw, tmp_path):
    gateway = following
    raw.flushall()
    eventually(lambda: _missing(gateway, "credit") == 1)
    registry.create_model("credit", actor="ops")  # an operator restores the registry
    for version in ("1", "2"):
        artifact = tmp_path / "artifacts" / "credit" / version / "model.onnx"
        registry.register_version("credit", version, artifact, actor="ops")
    registry.set_route("credit", [Split("2", 100)], actor="ops")
    eventually(lambda: _serves(gateway, "credit", "2"))
    eventually(lambda: _missing(gateway, "credit") == 0)
    assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0
    eventually(lambda: "credit" not in _heartbeat_errors(registry, gateway))


def test_deleting_one_rule_flags_only_that_model(following, registry, raw, tmp_path):
    gateway = following
    _register(registry, "fraud", tmp_path / "more")
    eventually(lambda: _serves(gateway, "fraud", "1"))
    raw.delete(registry.keys.route("fraud"))  # behind the registry's back: no epoch bump
    eventually(lambda: _missing(gateway, "fraud") == 1, FULL_READ_TIMEOUT)
    assert _missing(gateway, "credit") == 0
    assert _scraped(gateway, "onnxgate_registry_epoch_missing") == 0
    assert _served(gateway, "fraud") == "1"


def test_route_status_shows_the_replica_serving_a_lost_rule(following, registry, raw,
                                                            redis_server):  # fmt: skip
    gateway = following
    raw.delete(registry.keys.route("credit"))
    eventually(lambda: "rule gone" in _heartbeat_errors(registry, gateway).get("credit", ""),
               FULL_READ_TIMEOUT)  # fmt: skip
    out = io.StringIO()
    argv = ["--redis-url", redis_server.url, "--json", "route", "status", "credit"]
    assert gatectl(argv, {}, out, io.StringIO()) == 0
    report = json.loads(out.getvalue())
    assert report["revision"] is None  # the registry has no rule for credit
    (mine,) = [r for r in report["replicas"] if r["replica"] == gateway.replica]
    assert mine["applied_revision"] == 1
    assert mine["error"] == "rule gone from the registry; revision 1 keeps serving"


def test_a_deleted_version_record_flags_its_model(following, registry, raw):
    gateway = following
    raw.delete(registry.keys.version("credit", "2"))  # loaded at weight 0, for pins
    eventually(lambda: _missing(gateway, "credit") == 1, FULL_READ_TIMEOUT)
    eventually(lambda: "version 2 gone" in _heartbeat_errors(registry, gateway).get("credit", ""))
    assert _served(gateway, "credit", version="2") == "2"


@pytest.mark.timeout(120)
def test_workers_report_the_loss_once_in_the_supervisors_metrics(
    redis_server, raw, gateway_process, tmp_path
):
    repo = tmp_path / "repo"
    onnx_models.save(onnx_models.classifier(), repo, "classifier", "1")
    gp = gateway_process(repo, "--workers", "2", "--redis-url", redis_server.url,
                         "--rules-poll-seconds", "0.2", "--heartbeat-seconds", "0.2")  # fmt: skip

    def missing() -> float | None:
        body = urllib.request.urlopen(f"http://127.0.0.1:{gp.metrics_port}/metrics",
                                      timeout=5).read().decode()  # fmt: skip
        prefix = 'onnxgate_registry_missing{model="classifier"} '
        values = [float(line[len(prefix) :]) for line in body.splitlines()
                  if line.startswith(prefix)]  # fmt: skip
        return values[0] if len(values) == 1 else None

    registry = RegistryClient.from_url(redis_server.url)

    def beats() -> list[dict[str, str]]:
        return list(registry.gateways().values())

    def serving_on_both() -> bool:
        return [json.loads(b.get("applied", "{}")).get("classifier") for b in beats()] == [1, 1]

    def flagged_by_both() -> bool:
        errors = [json.loads(b.get("errors", "{}")).get("classifier", "") for b in beats()]
        return len(errors) == 2 and all("rule gone" in e for e in errors)

    try:
        eventually(serving_on_both, 30)
        assert missing() == 0
        raw.flushall()
        eventually(flagged_by_both, 30)
        assert missing() == 1  # one series: the workers' maximum, not their sum
        registry.import_repository(repo, actor="ops")
        registry.ensure_default_rules(actor="ops")
    finally:
        registry.close()
    eventually(lambda: missing() == 0, 30)
    assert gp.terminate() == 0

"""The alert rules in deploy/prometheus against a real Prometheus scraping a real gateway (two
workers, as the supervisor exports every family): a healthy run raises nothing, a canary
that errs and a registry that goes away raise their alerts, and every metric the rules read
is one the gateway describes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import GatewayProcess, eventually
from tests.support.prometheus import ALERT_RULES, Prometheus
from tests.support.promql import metric_names
from tests.support.redis_server import RedisServer
from tests.support.traffic import Traffic

# Suffixes Prometheus' metadata leaves off: a family is described once, its samples are
# name_total (counters) or name_bucket/_sum/_count (histograms).
_SAMPLE_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def _credit(redis_url: str, directory: Path, canary: object) -> None:
    """credit 1 (a classifier) at 80%, 2 (`canary`) at 20%."""
    client = RegistryClient.from_url(redis_url)
    client.create_model("credit", actor="ops")
    for version, model in (("1", onnx_models.classifier(seed=1)), ("2", canary)):
        path = onnx_models.save(model, directory, "credit", version)  # type: ignore[arg-type]
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 80), Split("2", 20)], actor="ops")
    client.close()


@pytest.fixture
def watched(
    redis_server: RedisServer, tmp_path: Path, gateway_process: Callable[..., GatewayProcess]
) -> Iterator[Callable[..., tuple[list[GatewayProcess], Prometheus, list[Traffic]]]]:
    """A factory: credit with the given canary, a gateway following the registry per entry of
    `workers` (its --workers), a client sending to each without pause, and Prometheus
    scraping them all."""
    started: list[tuple[Prometheus, list[Traffic]]] = []

    def start(
        canary: object, workers: tuple[int, ...] = (2,)
    ) -> tuple[list[GatewayProcess], Prometheus, list[Traffic]]:
        _credit(redis_server.url, tmp_path / "models", canary)
        gateways = [
            gateway_process(tmp_path / "models", "--redis-url", redis_server.url,
                            "--workers", str(count), "--rules-poll-seconds", "0.2")
            for count in workers
        ]  # fmt: skip
        for address in [gateway.address for gateway in gateways]:
            # Each connection reaches one worker: ten ready in a row have seen them all.
            eventually(functools.partial(_all_ready, address), timeout=60)
        (tmp_path / "prometheus").mkdir()
        targets = [f"127.0.0.1:{gateway.metrics_port}" for gateway in gateways]
        prometheus = Prometheus(tmp_path / "prometheus", targets)
        traffic = [Traffic(gateway.address, "credit") for gateway in gateways]
        started.append((prometheus, traffic))
        return gateways, prometheus, traffic

    yield start
    for prometheus, traffic in started:
        for client in traffic:
            client.stop()
        prometheus.stop()


def _ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            return bool(stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready)
        except grpc.RpcError:
            return False


def _all_ready(address: str) -> bool:
    return all(_ready(address) for _ in range(10))


def _alerts(prometheus: Prometheus, name: str) -> list[dict[str, str]]:
    return [a["labels"] for a in prometheus.alerts() if a["labels"]["alertname"] == name]


def _scraped_both_versions(prometheus: Prometheus) -> bool:
    answered = prometheus.query(
        'sum by (version) (rate(onnxgate_requests_total{model="credit",code="OK"}[1m])) > 0'
    )
    return {row["metric"]["version"] for row in answered} == {"1", "2"}


def _rule_metric_names() -> set[str]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    return {name for rule in rules for name in metric_names(rule["expr"])} - recorded


def _family(name: str, described: set[str]) -> bool:
    return name in described or any(
        name.endswith(suffix) and name.removesuffix(suffix) in described
        for suffix in _SAMPLE_SUFFIXES
    )


@pytest.mark.timeout(180)
def test_a_healthy_run_raises_no_alert_and_the_rules_read_only_described_metrics(watched):
    # One process, and a supervisor with two workers: between them every family is described
    # (a supervisor shows only the families its workers have written samples of).
    _, prometheus, traffic = watched(onnx_models.classifier(seed=2), workers=(1, 2))
    eventually(lambda: _scraped_both_versions(prometheus), timeout=60)
    settled = time.time()
    # Two evaluations of every group after both versions' traffic reached Prometheus.
    eventually(lambda: prometheus.evaluations_since(settled + 2), timeout=30)
    assert prometheus.alerts() == []
    assert [set(client.codes) for client in traffic] == [{"OK"}, {"OK"}]

    described = prometheus.metadata_names() | {"up"}
    undescribed = {n for n in _rule_metric_names() if not _family(n, described)}
    assert undescribed == set()


@pytest.mark.timeout(180)
def test_an_erring_canary_and_a_lost_registry_raise_their_alerts(watched, redis_server):
    # The canary fails every request of the client's row (its first feature is above 0).
    (gateway,), prometheus, (traffic,) = watched(
        onnx_models.erring_classifier(seed=1, error_share=0.5)
    )
    eventually(lambda: _alerts(prometheus, "OnnxgateVersionErrorRatioHigh") != [], timeout=90)
    (alert,) = _alerts(prometheus, "OnnxgateVersionErrorRatioHigh")
    assert (alert["model"], alert["version"], alert["severity"]) == ("credit", "2", "page")
    assert traffic.codes["OK"] > 0 and sum(traffic.codes.values()) > traffic.codes["OK"]

    redis_server.stop()
    eventually(lambda: _alerts(prometheus, "OnnxgateRedisDisconnected") != [], timeout=60)
    (alert,) = _alerts(prometheus, "OnnxgateRedisDisconnected")
    assert alert["instance"] == f"127.0.0.1:{gateway.metrics_port}"
    # Version 1 never raised anything.
    assert all(a["labels"].get("version") != "1" for a in prometheus.alerts())

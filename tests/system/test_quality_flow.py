"""Quality across replicas and outages: three gateways' predictions and two joiners' states
merge into what one computation over every row gives; a registry outage while predictions and
labels flow loses none that can be kept and counts none twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score  # type: ignore[import-untyped]

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client import Label, RegistryClient
from registry_client.quality.metrics import metrics_of
from registry_client.quality.report import QualityRange, minutes_of, read_range
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import CONTROLLER_ACL, GATEWAY_ACL
from tests.support.wire import infer_request

CONFIG = QualityConfig("binary", "probabilities", 1, segments=("age_band",))
ROWS = np.random.default_rng(11).normal(size=(60, 4)).astype(np.float32)
LABELS = [int(y) for y in np.random.default_rng(12).integers(0, 2, len(ROWS))]
BANDS = ("18-25", "26-40", "41+")
QUICK = {"prediction_hold_seconds": 0.2, "prediction_flush_seconds": 0.1,
         "label_join_seconds": 0.1, "rules_poll_seconds": 0.2}  # fmt: skip


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops", quality=CONFIG)
    path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", "1")
    client.register_version("credit", "1", path, actor="ops")
    client.set_route("credit", [Split("1", 100)], actor="ops")
    yield client
    client.close()


def _ask(gateway: Gateway, index: int) -> float:
    request = infer_request("credit", {"input": ROWS[index : index + 1]}, request_id=f"r{index}")
    request.parameters["segment.age_band"].string_param = BANDS[index % 3]
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return float(np.frombuffer(response.raw_output_contents[0], np.float32)[1])


def _sample(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.registry.get_sample_value(name, {"model": "credit", **labels}) or 0.0


def _quality(registry: RegistryClient) -> QualityRange:
    return read_range(registry.quality, registry.predictions, "credit",
                      *minutes_of(900, time.time()))  # fmt: skip


def _assert_equals_one_computation(found: QualityRange, scores: dict[int, float]) -> None:
    """Overall and per age band, as sklearn computes it over every labelled row."""
    groups = {"": sorted(scores)} | {b: [i for i in sorted(scores) if BANDS[i % 3] == b]
                                     for b in BANDS}  # fmt: skip
    for band, rows in groups.items():
        state = found.state("1", "primary", "age_band" if band else "", band)
        assert state is not None and state.n == len(rows), band
        metrics = metrics_of(state)
        truth = [LABELS[i] for i in rows]
        given = [scores[i] for i in rows]
        predicted = [int(s >= 0.5) for s in given]
        assert metrics["precision"] == precision_score(truth, predicted, zero_division=0)
        assert metrics["recall"] == recall_score(truth, predicted, zero_division=0)
        assert metrics["f1"] == f1_score(truth, predicted, zero_division=0)
        assert abs(metrics["auc_roc"] - roc_auc_score(truth, given)) < 0.005, band


def test_three_gateways_and_two_joiners_merge_into_one_computation(redis_server, registry):
    gateways = [make_gateway(None, redis_url=redis_server.url, replica_id=f"gw-{n}", **QUICK)
                for n in range(3)]  # fmt: skip
    stopped: list[Gateway] = []
    try:
        scores = {i: _ask(gateways[i % 3], i) for i in range(40)}
        eventually(lambda: sum(_sample(g, "onnxgate_predictions_logged_total")
                               for g in gateways) == 40)  # fmt: skip
        registry.put_labels("credit", [Label(f"r{i}", LABELS[i]) for i in range(40)])
        joined = "onnxgate_labels_joined_total"
        eventually(lambda: sum(_sample(g, joined) for g in gateways) == 40)
        leader = next(g for g in gateways if g.quality.joining and g.quality.joining.leading)
        leader.stop(grace_seconds=1)  # hands the joiner lease over
        stopped.append(leader)
        serving = [g for g in gateways if g is not leader]
        logged = "onnxgate_predictions_logged_total"
        before = sum(_sample(g, logged) for g in serving)
        scores |= {i: _ask(serving[i % 2], i) for i in range(40, 60)}
        eventually(lambda: sum(_sample(g, logged) for g in serving) == before + 20)
        registry.put_labels("credit", [Label(f"r{i}", LABELS[i]) for i in range(40, 60)])
        eventually(lambda: sum(_sample(g, joined) for g in serving) == 20)
        found = _quality(registry)
        assert len(found.writers) == 2  # two joiners' fields, merged by the reader
        _assert_equals_one_computation(found, scores)
        assert registry.quality.counts("credit") == {"joined": 60}
    finally:
        for gateway in gateways:
            if gateway not in stopped:
                gateway.stop(grace_seconds=1)


def test_a_registry_outage_while_predictions_and_labels_flow_counts_nothing_twice(
    redis_server, registry
):
    proxy = FaultProxy("127.0.0.1", redis_server.port).start()
    gateway = make_gateway(None, redis_url=proxy.url, heartbeat_seconds=0.2, **QUICK)
    try:
        scores = {i: _ask(gateway, i) for i in range(20)}
        eventually(lambda: _sample(gateway, "onnxgate_predictions_logged_total") == 20)
        proxy.blackhole()
        scores |= {i: _ask(gateway, i) for i in range(20, 40)}  # served while Redis is away
        failures = "onnxgate_flush_failures_total"
        # A write held by the blackhole fails after the client's timeouts and retries.
        eventually(lambda: (gateway.registry.get_sample_value(
            failures, {"what": "predictions"}) or 0) >= 1, timeout=60)  # fmt: skip
        # Labels reach Redis from elsewhere meanwhile, one of them given twice (a correction).
        labels = [Label(f"r{i}", LABELS[i]) for i in range(40)]
        registry.put_labels("credit", [Label("r3", 1 - LABELS[3]), *labels])
        proxy.restore()
        eventually(lambda: _sample(gateway, "onnxgate_predictions_logged_total") == 40, 30)
        eventually(lambda: _sample(gateway, "onnxgate_labels_joined_total") == 41, 30)
        assert _sample(gateway, "onnxgate_labels_replaced_total") == 1
        assert registry.quality.counts("credit") == {"joined": 41, "replaced": 1}
        dropped = sum(_sample(gateway, "onnxgate_predictions_dropped_total", reason=r)
                      for r in ("buffer", "redis", "rate"))  # fmt: skip
        assert dropped == 0
        _assert_equals_one_computation(_quality(registry), scores)
    finally:
        proxy.restore()
        gateway.stop(grace_seconds=1)
        proxy.stop()


def test_under_least_privilege_a_serving_gateway_logs_and_a_controller_joins(
    redis_server, registry
):
    admin = redis.Redis.from_url(redis_server.url)
    admin.execute_command("ACL", "SETUSER", "controller", *CONTROLLER_ACL.split())
    admin.execute_command("ACL", "SETUSER", "gateway", *GATEWAY_ACL.split())
    admin.close()
    url = {user: redis_server.url.replace("redis://", f"redis://{user}:gateway-secret@")
           for user in ("gateway", "controller")}  # fmt: skip
    serving = make_gateway(None, redis_url=url["gateway"], replica_id="serving",
                           rollout_controller=False, **QUICK)  # fmt: skip
    controller = make_gateway(None, redis_url=url["controller"], replica_id="controller",
                              **QUICK)  # fmt: skip
    try:
        assert serving.quality.joining is None  # its Redis user may not write the state
        scores = {i: _ask(serving, i) for i in range(30)}
        eventually(lambda: _sample(serving, "onnxgate_predictions_logged_total") == 30)
        registry.put_labels("credit", [Label(f"r{i}", LABELS[i]) for i in range(30)])
        eventually(lambda: _sample(controller, "onnxgate_labels_joined_total") == 30)
        _assert_equals_one_computation(_quality(registry), scores)
    finally:
        serving.stop(grace_seconds=1)
        controller.stop(grace_seconds=1)

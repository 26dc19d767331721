"""The prediction log through a real gateway: predictions of a model with a quality config are
logged under their request ids with their segments (shadows' too), joined with labels given
later, and every prediction not logged is counted by reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score  # type: ignore[import-untyped]

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client import Label, RegistryClient
from registry_client.quality.metrics import metrics_of
from registry_client.quality.predictions import MISSING
from registry_client.quality.report import minutes_of, read_range
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Shadow, Split
from tests.support import onnx_models
from tests.support.gateways import eventually, make_gateway
from tests.support.wire import infer_request

CONFIG = QualityConfig("binary", "probabilities", 1, segments=("gender",))
ROWS = np.random.default_rng(7).normal(size=(40, 4)).astype(np.float32)


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops", quality=CONFIG)
    for version in ("1", "2"):
        model = onnx_models.classifier(seed=int(version))
        path = onnx_models.save(model, tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    yield client
    client.close()


def _gateway(redis_server, **settings: object) -> Gateway:
    quick = {"shadow_max_cpu_busy": 1.0, "prediction_hold_seconds": 0.2,
             "prediction_flush_seconds": 0.1, "label_join_seconds": 0.1,
             "quality_gauges_seconds": 0.2, **settings}  # fmt: skip
    return make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2, **quick)


def _value(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.registry.get_sample_value(name, labels) or 0.0


def _logged(gateway: Gateway) -> float:
    return _value(gateway, "onnxgate_predictions_logged_total", model="credit")


def _ask(gateway: Gateway, request_id: str, row: np.ndarray, gender: str | None,
         outputs: tuple[str, ...] = ()) -> dict[str, np.ndarray]:  # fmt: skip
    request = infer_request("credit", {"input": row}, request_id=request_id, outputs=outputs)
    if gender is not None:
        request.parameters["segment.gender"].string_param = gender
    request.parameters["segment.favourite_colour"].string_param = "green"  # not configured
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == request_id
    return {
        output.name: np.frombuffer(raw, np.float32).reshape(tuple(output.shape))
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def test_labelled_predictions_of_primary_and_shadow_are_scored_per_segment(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], [Shadow("2", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        genders = ["F" if i % 3 else "M" for i in range(len(ROWS))]
        scores = [
            float(_ask(gateway, f"req-{i}", ROWS[i : i + 1], genders[i])["probabilities"][0, 1])
            for i in range(len(ROWS))
        ]
        eventually(lambda: _logged(gateway) == 2 * len(ROWS))  # primary and shadow records
        labels = [int(x) for x in np.random.default_rng(8).integers(0, 2, len(ROWS))]
        registry.put_labels("credit", [Label(f"req-{i}", y) for i, y in enumerate(labels)])
        joined = "onnxgate_labels_joined_total"
        eventually(lambda: _value(gateway, joined, model="credit") == len(ROWS))
        quality = read_range(registry.quality, registry.predictions, "credit",
                             *minutes_of(600, time.time()))  # fmt: skip
        primary_state = quality.state("1", "primary")
        assert primary_state is not None
        primary = metrics_of(primary_state)
        predicted = [int(s >= 0.5) for s in scores]
        assert primary["precision"] == precision_score(labels, predicted)
        assert primary["recall"] == recall_score(labels, predicted)
        assert abs(primary["auc_roc"] - roc_auc_score(labels, scores)) < 0.005
        women = [i for i, g in enumerate(genders) if g == "F"]
        women_state = quality.state("1", "primary", "gender", "F")
        assert women_state is not None
        by_gender = metrics_of(women_state)
        assert by_gender["recall"] == recall_score([labels[i] for i in women],
                                                   [predicted[i] for i in women])  # fmt: skip
        shadow = quality.state("2", "shadow")
        assert shadow is not None and shadow.n == len(ROWS)  # scored on real labels
        assert quality.quality("1", "primary").coverage == 1.0
        auc = {"model": "credit", "version": "1", "role": "primary", "metric": "auc_roc"}
        eventually(lambda: _value(gateway, "onnxgate_quality", **auc) == primary["auc_roc"])
        unknown = _value(gateway, "onnxgate_prediction_unknown_segments_total", model="credit")
        assert unknown == len(ROWS)  # counted once per request, not per role
    finally:
        gateway.stop(grace_seconds=1)


def test_the_score_output_is_logged_when_the_caller_asks_only_for_another(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        answered = _ask(gateway, "only-logits", ROWS[:1], None, outputs=("logits",))
        assert set(answered) == {"logits"}
        eventually(lambda: _logged(gateway) == 1)
        record = registry.predictions.lookup("credit", ["only-logits"], 86400,
                                             time.time())["only-logits"][0]  # fmt: skip
        logits = answered["logits"][0].astype(np.float64)
        expected = np.exp(logits[1]) / np.exp(logits).sum()
        assert record.score == pytest.approx(expected, abs=1e-6)
        assert record.segments == (MISSING,)
    finally:
        gateway.stop(grace_seconds=1)


def test_each_row_of_a_batch_is_a_prediction_of_its_own(redis_server, registry):
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    gateway = _gateway(redis_server)
    try:
        _ask(gateway, "batch", ROWS[:8], "F")
        eventually(lambda: _logged(gateway) == 8)
        found = registry.predictions.lookup("credit", [f"batch:{i}" for i in range(8)], 86400,
                                            time.time())  # fmt: skip
        assert sorted(found) == [f"batch:{i}" for i in range(8)]
    finally:
        gateway.stop(grace_seconds=1)


def test_predictions_over_the_rate_cap_are_counted_not_logged(redis_server, registry):
    """The cap counts rows: a batch of 8 in one second under a cap of 3 logs 3."""
    registry.set_route("credit", [Split("1", 100)], actor="ops")
    gateway = _gateway(redis_server, prediction_log_max_per_second=3.0)
    try:
        _ask(gateway, "capped", ROWS[:8], "F")
        dropped = "onnxgate_predictions_dropped_total"
        eventually(lambda: _value(gateway, dropped, model="credit", reason="rate") == 5)
        eventually(lambda: _logged(gateway) == 3)
    finally:
        gateway.stop(grace_seconds=1)

"""Prometheus metrics after known traffic, read from the real /metrics endpoint."""

from __future__ import annotations

import os
import platform
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import grpc
import numpy as np
import onnxruntime
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import make_gateway
from tests.support.wire import infer_request

GOOD = {"input": np.ones((1, 4), np.float32)}
BAD_SHAPE = {"input": np.ones((1, 5), np.float32)}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A fresh gateway that served: 5 OK on v2, 2 OK on v1 (pinned), 3 bad shapes on v2,
    and 4 requests for models it does not have, under 4 different names."""
    repo: Path = tmp_path_factory.mktemp("metrics")
    onnx_models.save(onnx_models.classifier(seed=1), repo, "classifier", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "classifier", "2")
    gateway = make_gateway(repo)
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(5):
            stub.ModelInfer(infer_request("classifier", GOOD))
        for _ in range(2):
            stub.ModelInfer(infer_request("classifier", GOOD, version="1"))
        for name in ["classifier"] * 3 + ["nope-1", "nope-2", "nope-3", "../etc"]:
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(infer_request(name, BAD_SHAPE))
    yield gateway
    gateway.stop(grace_seconds=1)


def _scrape(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_requests_are_counted_by_model_version_role_and_code(traffic):
    samples = _scrape(traffic)
    count = "onnxgate_requests_total"
    assert _value(samples, count, model="classifier", version="2", role="primary", code="OK") == 5
    assert _value(samples, count, model="classifier", version="1", role="primary", code="OK") == 2
    invalid = {"model": "classifier", "version": "2", "role": "primary"}
    assert _value(samples, count, code="INVALID_ARGUMENT", **invalid) == 3


def test_unknown_model_names_collapse_into_one_label(traffic):
    samples = _scrape(traffic)
    models = {
        dict(labels)["model"] for (name, labels) in samples if name.startswith("onnxgate_req")
    }
    assert models == {"classifier", "_unknown"}
    unknown = {"model": "_unknown", "version": "_unknown", "role": "primary"}
    assert _value(samples, "onnxgate_requests_total", code="NOT_FOUND", **unknown) == 4


def test_duration_histograms_count_successful_requests(traffic):
    samples = _scrape(traffic)
    labels = {"model": "classifier", "version": "2", "role": "primary"}
    assert _value(samples, "onnxgate_request_duration_seconds_count", **labels) == 5
    assert _value(samples, "onnxgate_inference_duration_seconds_count", **labels) == 5
    assert _value(samples, "onnxgate_request_duration_seconds_sum", **labels) > 0
    fastest = _value(samples, "onnxgate_request_duration_seconds_bucket", le="0.0001", **labels)
    slowest = _value(samples, "onnxgate_request_duration_seconds_bucket", le="10.0", **labels)
    assert fastest <= slowest == 5


def test_nothing_is_in_flight_after_the_traffic(traffic):
    samples = _scrape(traffic)
    assert _value(samples, "onnxgate_inflight_requests", model="classifier") == 0


def test_loaded_versions_are_reported(traffic):
    samples = _scrape(traffic)
    assert _value(samples, "onnxgate_model_loaded", model="classifier", version="1") == 1
    assert _value(samples, "onnxgate_model_loaded", model="classifier", version="2") == 1
    assert _value(samples, "onnxgate_model_load_seconds_count", model="classifier") == 2


def test_failed_loads_are_counted(tmp_path):
    broken = tmp_path / "broken" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x00garbage")
    gateway = make_gateway(tmp_path)
    try:
        samples = _scrape(gateway)
        failures = {"model": "broken", "version": "1", "reason": "rejected"}  # not an ONNX file
        assert _value(samples, "onnxgate_model_load_failures_total", **failures) == 1
        assert _value(samples, "onnxgate_model_loaded", model="broken", version="1") == 0
    finally:
        gateway.stop(grace_seconds=1)


def test_the_process_and_its_build_are_described(traffic):
    samples = _scrape(traffic)
    assert samples[("process_resident_memory_bytes", frozenset())] > 10 * 2**20
    assert 0 < samples[("process_start_time_seconds", frozenset())] <= time.time()
    assert samples[("process_open_fds", frozenset())] > 0
    assert samples[("process_cpu_seconds_total", frozenset())] > 0
    limit = samples[("onnxgate_memory_limit_bytes", frozenset())]
    machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert samples[("process_resident_memory_bytes", frozenset())] < limit <= machine
    build = {
        "version": metadata.version("onnxgate"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
    }
    assert samples[("onnxgate_build_info", frozenset(build.items()))] == 1

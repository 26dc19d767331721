"""Log lines operators can join: UTC times with milliseconds and `Z` in both formats, and the
sampled access log (--access-log-sample) with one line per sampled request."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import REPO_ROOT, make_gateway, wait_until_ready
from tests.support.wire import infer_request

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
FEATURES = {"input": np.ones((1, 4), np.float32)}
ACCESS_FIELDS = {"model", "version", "role", "code", "latency_ms", "request_id"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("log_format")
    onnx_models.save(onnx_models.classifier(seed=1), repo, "classifier", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "classifier", "2")
    return repo


def _seconds_from_now(stamp: str) -> float:
    written = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return abs((datetime.now(UTC) - written).total_seconds())


def test_json_lines_carry_utc_milliseconds(repo, gateway_process):
    gp = gateway_process(repo)
    started = json.loads(next(line for line in gp.log if '"gateway started"' in line))
    assert TIME.fullmatch(started["time"]), started["time"]
    assert _seconds_from_now(started["time"]) < 10


def _text_gateway(repo: Path, tz: str) -> Iterator[str]:
    """Lines of a `--log-format text` gateway in time zone `tz` until it has started."""
    command = [sys.executable, "-m", "gateway", "serve", "--models", str(repo), "--no-registry",
               "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1",
               "--log-format", "text"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "TZ": tz}
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            yield line
            if " gateway started " in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


def test_text_lines_carry_utc_milliseconds_whatever_the_time_zone(repo):
    # UTC+14 (a POSIX TZ, no zone database needed): local time would be hours off.
    lines = list(_text_gateway(repo, "XYZ-14"))
    assert " gateway started " in lines[-1], lines
    stamp = lines[-1].split(" ", 1)[0]
    assert TIME.fullmatch(stamp), lines[-1]
    assert _seconds_from_now(stamp) < 10


def test_the_access_log_has_one_json_line_per_request_at_rate_1(repo, gateway_process):
    gp = gateway_process(repo, "--access-log-sample", "1")
    with grpc.insecure_channel(gp.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        wait_until_ready(stub)
        for n in range(3):
            stub.ModelInfer(infer_request("classifier", FEATURES),
                            metadata=(("x-request-id", f"acc-{n}"),))  # fmt: skip
    deadline = time.monotonic() + 5
    while sum('"onnxgate.access"' in line for line in gp.log) < 3:
        assert time.monotonic() < deadline, "".join(gp.log)
        time.sleep(0.02)
    entries = [json.loads(line) for line in gp.log if '"onnxgate.access"' in line]
    assert [e["request_id"] for e in entries] == ["acc-0", "acc-1", "acc-2"]
    for entry in entries:
        assert ACCESS_FIELDS <= set(entry)
        assert (entry["model"], entry["version"], entry["role"], entry["code"]) == (
            "classifier", "2", "primary", "OK"
        )  # fmt: skip
        assert 0 < entry["latency_ms"] < 10_000
        assert TIME.fullmatch(entry["time"])


@pytest.fixture
def sampled_gateway(repo: Path, request: pytest.FixtureRequest) -> Iterator[Gateway]:
    gateway = make_gateway(repo, access_log_sample=request.param)
    yield gateway
    gateway.stop(grace_seconds=1)


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="onnxgate.access"):
        yield caplog


@contextmanager
def _stub(gateway: Gateway) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access-log lines of the test's call phase, as {field: value}."""
    return [
        {field: getattr(r, field) for field in ACCESS_FIELDS}
        for r in caplog.records
        if r.name == "onnxgate.access"
    ]


@pytest.mark.parametrize("sampled_gateway", [1.0], indirect=True)
def test_at_rate_1_every_answer_and_every_failure_is_logged(sampled_gateway, access_log):
    with _stub(sampled_gateway) as stub:
        stub.ModelInfer(infer_request("classifier", FEATURES, version="1"),
                        metadata=(("x-request-id", "ok-1"),))  # fmt: skip
        for model, version, request_id in (("absent", "", "nf-1"), ("classifier", "9", "nf-2")):
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(infer_request(model, FEATURES, version=version),
                                metadata=(("x-request-id", request_id),))  # fmt: skip
        with pytest.raises(grpc.RpcError) as invalid:
            stub.ModelInfer(infer_request("classifier", {"input": np.ones((1, 5), np.float32)}))
        stream = [infer_request("classifier", FEATURES)] * 2
        assert len(list(stub.ModelStreamInfer(iter(stream), metadata=(("x-request-id", "s"),))))
    trailers: Iterable[Any] = invalid.value.trailing_metadata() or ()  # (key, value) pairs
    generated = dict(trailers)["x-request-id"]
    lines = {(e["request_id"], e["code"], e["model"], e["version"]) for e in _access(access_log)}
    assert lines == {
        ("ok-1", "OK", "classifier", "1"),
        ("nf-1", "NOT_FOUND", "absent", None),  # no version was known
        ("nf-2", "NOT_FOUND", "classifier", "9"),  # the pinned one, absent as it is
        (generated, "INVALID_ARGUMENT", "classifier", "2"),  # routed to 2, refused there
        ("s", "OK", "classifier", "2"),  # each request of the stream
    }
    assert len(_access(access_log)) == 6
    assert {e["role"] for e in _access(access_log)} == {"primary"}


@pytest.mark.parametrize("sampled_gateway", [1.0], indirect=True)
def test_a_logged_answer_names_its_lines_request_id_in_the_trailer(sampled_gateway, access_log):
    """The line's id is the call's, not the request's own `id` (the response's): the trailer
    is how the caller finds the line."""
    with _stub(sampled_gateway) as stub:
        request = infer_request("classifier", FEATURES, request_id="body-9")
        response, call = stub.ModelInfer.with_call(request)
    trailers: Iterable[Any] = call.trailing_metadata() or ()  # (key, value) pairs
    [logged] = _access(access_log)
    assert response.id == "body-9"
    assert re.fullmatch(r"[0-9a-f]{32}", dict(trailers)["x-request-id"])
    assert logged["request_id"] == dict(trailers)["x-request-id"]


@pytest.mark.parametrize("sampled_gateway", [0.0], indirect=True)
def test_at_rate_0_nothing_is_logged(sampled_gateway, access_log):
    with _stub(sampled_gateway) as stub:
        for _ in range(20):
            stub.ModelInfer(infer_request("classifier", FEATURES))
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(infer_request("absent", FEATURES))
    assert _access(access_log) == []


@pytest.mark.parametrize("sampled_gateway", [0.5], indirect=True)
def test_a_rate_logs_about_that_share_of_requests(sampled_gateway, access_log):
    with _stub(sampled_gateway) as stub:
        for _ in range(400):
            stub.ModelInfer(infer_request("classifier", FEATURES))
    # Binomial(400, 0.5): 200 +- 10; outside 120-280 is 8 standard deviations out.
    assert 120 <= len(_access(access_log)) <= 280

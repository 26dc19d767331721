"""Fixtures: model repositories built with onnx.helper, real gateways on 127.0.0.1:0."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from tests.support import onnx_models
from tests.support.gateways import GatewayProcess, make_gateway, start_gateway_process
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with a two-version classifier, identity models per datatype and more."""
    repo = tmp_path_factory.mktemp("models")
    onnx_models.save(onnx_models.classifier(seed=1), repo, "classifier", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "classifier", "2")
    onnx_models.save(onnx_models.two_inputs(), repo, "two_inputs", "1")
    for name, elem_type, _ in onnx_models.SERVED_TYPES:
        onnx_models.save(onnx_models.identity(elem_type), repo, f"identity_{name.lower()}", "1")
    return repo


@pytest.fixture(scope="module")
def gateway(model_repo: Path) -> Iterator[Gateway]:
    """One gateway over model_repo for a test module."""
    gw = make_gateway(model_repo)
    yield gw
    gw.stop(grace_seconds=1)


@pytest.fixture(scope="module")
def channel(gateway: Gateway) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def gateway_process() -> Iterator[Callable[..., GatewayProcess]]:
    """Factory for gateway subprocesses; every one is killed at the end of the test."""
    started: list[GatewayProcess] = []

    def start(repo: Path, *args: str) -> GatewayProcess:
        gp = start_gateway_process(repo, *args)
        started.append(gp)
        return gp

    yield start
    for gp in started:
        if gp.process.poll() is None:
            gp.process.terminate()  # a graceful stop also stops a private redis-server
            try:
                gp.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gp.process.kill()
                gp.process.wait(timeout=10)
        if gp.process.stderr is not None:
            gp.process.stderr.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for one test."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()

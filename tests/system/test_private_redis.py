"""One command on one machine: `onnxgate serve` runs and owns a private redis-server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.cli.main import main as gatectl
from tests.support import onnx_models
from tests.support.gateways import REPO_ROOT, wait_until_ready
from tests.support.wire import infer_request


def _served(stub: pb_grpc.GRPCInferenceServiceStub) -> str:
    features = {"input": np.ones((1, 4), np.float32)}
    return stub.ModelInfer(infer_request("credit", features)).model_version


def _until_served(stub: pb_grpc.GRPCInferenceServiceStub, version: str) -> None:
    deadline = time.monotonic() + 10
    while _served(stub) != version:
        assert time.monotonic() < deadline, f"version {version} never served"
        time.sleep(0.01)


@pytest.mark.timeout(120)
def test_private_redis_is_found_by_gatectl_and_keeps_rules_across_restarts(
    tmp_path, gateway_process
):
    repo, data = tmp_path / "repo", tmp_path / "data"
    onnx_models.save(onnx_models.classifier(seed=1), repo, "credit", "1")
    onnx_models.save(onnx_models.classifier(seed=2), repo, "credit", "2")
    gp = gateway_process(repo, "--data-dir", str(data), "--rules-poll-seconds", "0.2")
    with grpc.insecure_channel(gp.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        wait_until_ready(stub)
        assert _served(stub) == "2"  # imported, default rule: highest version
        out, err = io.StringIO(), io.StringIO()
        code = gatectl(["--data-dir", str(data), "--actor", "ops", "route", "set", "credit",
                        "--split", "1=100"], {}, out, err)  # fmt: skip
        assert code == 0, err.getvalue()
        _until_served(stub, "1")
    assert gp.terminate() == 0
    assert not (data / "redis.sock").exists()  # its redis-server stopped with it

    again = gateway_process(repo, "--data-dir", str(data))
    with grpc.insecure_channel(again.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        wait_until_ready(stub)
        assert _served(stub) == "1"  # the rule survived the restart (append-only file)
    assert again.terminate() == 0
    assert not (data / "redis.sock").exists()


def test_missing_redis_server_is_a_clear_error(tmp_path):
    onnx_models.save(onnx_models.classifier(), tmp_path / "repo", "credit", "1")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no redis-server on it
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--models", str(tmp_path / "repo"),
         "--data-dir", str(tmp_path / "data"), "--grpc-port", "0", "--metrics-port", "-1",
         "--host", "127.0.0.1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "apt-get install -y redis-server" in result.stderr
    assert "--redis-url" in result.stderr

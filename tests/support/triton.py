"""The unmodified tritonclient, run in its own virtualenv against gateway subprocesses.

tritonclient's generated `inference` protos clash with ours in one process and it pins
protobuf<5 and numpy<2, so triton_client_script.py runs in the virtualenv named by
ONNXGATE_TRITON_VENV (default <repo>/.venv-triton) and prints what it observed as JSON.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.gateways import (
    REPO_ROOT,
    GatewayProcess,
    start_gateway_process,
    wait_until_ready,
)

TRITON_VENV_VARIABLE = "ONNXGATE_TRITON_VENV"
SCRIPT = Path(__file__).with_name("triton_client_script.py")
SCRIPT_TIMEOUT_SECONDS = 45

Json = Any  # what json.loads returns: dicts, lists, str, int, float, bool, None


def triton_venv(env: Mapping[str, str]) -> Path:
    """The tritonclient virtualenv; fails (never skips) when it is missing."""
    venv = Path(env.get(TRITON_VENV_VARIABLE, str(REPO_ROOT / ".venv-triton")))
    if not (venv / "bin" / "python").is_file():
        pytest.fail(
            f"the tritonclient virtualenv is missing: no {venv / 'bin' / 'python'}"
            f" ({TRITON_VENV_VARIABLE}, default <repo>/.venv-triton). Create it with"
            " `bash .ci/run`, or by hand: `python3.11 -m venv .venv-triton &&"
            " .venv-triton/bin/pip install 'tritonclient[grpc]==2.51.0'"
            " nvidia-cuda-runtime-cu12` and `apt-get install -y libb64-0d` for perf_analyzer.",
            pytrace=False,
        )
    return venv


@contextmanager
def running_gateway(repo: Path) -> Iterator[GatewayProcess]:
    """A `python -m gateway serve` subprocess over repo, ready to serve; stopped on exit.

    For module-scoped fixtures, which cannot use the function-scoped `gateway_process`.
    """
    gateway = start_gateway_process(repo)
    try:
        with grpc.insecure_channel(gateway.address) as channel:
            wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channel))
        yield gateway
    finally:
        try:
            gateway.terminate()
        except subprocess.TimeoutExpired:
            gateway.process.kill()
            gateway.process.wait(timeout=10)
        if gateway.process.stderr is not None:
            gateway.process.stderr.close()


def run_script(python: Path, address: str, checks: tuple[str, ...]) -> Json:
    """Run triton_client_script.py isolated (-I: nothing from this repo on its path)."""
    command = [str(python), "-I", str(SCRIPT), "--url", address, "--checks", ",".join(checks)]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_SECONDS, check=False
    )
    assert completed.returncode == 0, (
        f"{' '.join(command)} exited {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return json.loads(completed.stdout)


def ok(observation: Json) -> Json:
    """The value a tritonclient call returned; fails with the server's error if it raised."""
    assert "error" not in observation, f"tritonclient raised {observation['error']}"
    return observation["ok"]


def error(observation: Json) -> Json:
    """The {"status", "message"} of the InferenceServerException a call raised."""
    assert "error" in observation, f"expected an InferenceServerException, got {observation}"
    return observation["error"]

"""Rule propagation: from `set_route` returning to every gateway serving the new rule.

Starts a private redis-server and N gateway processes (`onnxgate serve --redis-url ...`) on
loopback, registers a model with two versions, then flips the rule between them `--changes`
times. After each change it probes every gateway with ModelInfer until each answers from the
new version, and records the time from the write's return to the last gateway switching.

    python -m benchmarks.propagation [--gateways 3] [--changes 100] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import onnx

from benchmarks.models import build_tiny, tiny_request
from benchmarks.servers import free_port, start_redis, stop_all
from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split

PROBE_TIMEOUT_SECONDS = 10.0


def _wait_ready(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.05)
    raise SystemExit("a gateway did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=3)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="onnxgate-propagation-"))
    redis_server, url = start_redis(work)
    processes = [redis_server]
    try:
        time.sleep(0.3)
        registry = RegistryClient.from_url(url)
        registry.create_model("tiny", actor="bench")
        for version in ("1", "2"):
            path = work / version / "model.onnx"
            path.parent.mkdir()
            build_tiny(path)
            model = onnx.load(path)
            model.doc_string = f"version {version}"  # distinct bytes, same network
            onnx.save(model, path)
            registry.register_version("tiny", version, path, actor="bench")
        registry.set_route("tiny", [Split("1", 100), Split("2", 0)], actor="bench")
        stubs = []
        for _ in range(args.gateways):
            grpc_port = free_port()
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--redis-url", url, "--host",
                 "127.0.0.1", "--grpc-port", str(grpc_port), "--metrics-port", "-1",
                 "--log-level", "WARNING"],
            ))  # fmt: skip
            stubs.append(pb_grpc.GRPCInferenceServiceStub(
                grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            ))  # fmt: skip
        for stub in stubs:
            _wait_ready(stub)
        request = tiny_request()
        delays_ms = []
        for change in range(args.changes):
            target = "2" if change % 2 == 0 else "1"
            split = [
                Split("1", 0 if target == "2" else 100),
                Split("2", 100 if target == "2" else 0),
            ]
            registry.set_route("tiny", split, actor="bench", reason=f"flip {change}")
            written = time.perf_counter()
            for stub in stubs:
                while (
                    stub.ModelInfer(request, timeout=PROBE_TIMEOUT_SECONDS).model_version != target
                ):
                    if time.perf_counter() - written > PROBE_TIMEOUT_SECONDS:
                        raise SystemExit(f"change {change} did not reach every gateway")
            delays_ms.append((time.perf_counter() - written) * 1e3)
        delays_ms.sort()
        result = {
            "gateways": args.gateways,
            "changes": args.changes,
            "p50_ms": round(statistics.median(delays_ms), 2),
            "p99_ms": round(delays_ms[max(0, int(len(delays_ms) * 0.99) - 1)], 2),
            "max_ms": round(delays_ms[-1], 2),
        }
        print(json.dumps(result))
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        registry.close()
    finally:
        stop_all(processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

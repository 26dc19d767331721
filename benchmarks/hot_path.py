"""Per-request cost of the gateway's own code, without the gRPC framework.

Times the servicer's ModelInfer (decode -> route -> bind -> run -> encode -> metrics) in a
loop in-process on the tiny model, next to onnxruntime's session.run alone, and optionally
prints a cProfile of the loop: what the gateway adds per request and where it goes.

    python -m benchmarks.hot_path [--seconds 5] [--profile] [--registry]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import CollectorRegistry

from benchmarks.models import build_tiny, tiny_request
from gateway._proto import grpc_service_pb2 as pb
from gateway.app import Gateway
from gateway.settings import Settings


class _Context:
    """What ModelInfer asks of its gRPC context."""

    def time_remaining(self) -> float | None:
        return None

    def is_active(self) -> bool:
        return True

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        # A successful ModelInfer has no trailer; its request id is the call's (a fresh one
        # here, as error mapping would choose).
        return ()


CHUNK = 250


def _per_call_us(fn, seconds: float) -> tuple[float, float]:
    """(median over chunks of the wall time per call, process CPU time per call), in us.

    The median resists the shared host's stalls; process CPU time also counts what the
    calls leave to background threads (folding statistics and sketches)."""
    chunks: list[float] = []
    cpu_started, started = time.process_time(), time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk_started = time.perf_counter()
        for _ in range(CHUNK):
            fn()
        chunks.append((time.perf_counter() - chunk_started) / CHUNK * 1e6)
    cpu = (time.process_time() - cpu_started) / (len(chunks) * CHUNK) * 1e6
    return statistics.median(chunks), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--registry", action="store_true",
        help="with a private registry: routing rules, statistics windows and drift sketches on",
    )  # fmt: skip
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp())
    (repo / "tiny" / "1").mkdir(parents=True)
    build_tiny(repo / "tiny" / "1" / "model.onnx")
    data_dir = repo.parent / f"{repo.name}-data" if args.registry else None
    gateway = Gateway(
        Settings(models=repo, host="127.0.0.1", grpc_port=0, metrics_port=-1, data_dir=data_dir),
        CollectorRegistry(),
    )
    gateway.start()
    try:  # stopped whatever happens: it owns a private redis-server
        gateway.loaded.wait(30)
        servicer = gateway.servicer
        request, context = tiny_request(), _Context()
        wire = request.SerializeToString()

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(repo / "tiny" / "1" / "model.onnx"), options)
        feeds = {"input": np.ones((1, 32), np.float32)}

        def full() -> None:
            parsed = pb.ModelInferRequest.FromString(wire)
            servicer.ModelInfer(parsed, context).SerializeToString()

        model_us, _ = _per_call_us(lambda: session.run(None, feeds), args.seconds)
        gateway_us, gateway_cpu_us = _per_call_us(full, args.seconds)
        print(f"onnxruntime session.run: {model_us:.1f} us per request")
        print(
            f"gateway ModelInfer incl. protobuf parse + serialise: {gateway_us:.1f} us per request"
        )
        print(f"gateway's own work: {gateway_us - model_us:.1f} us")
        print(f"process CPU per request, background threads included: {gateway_cpu_us:.1f} us")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(lambda: [full() for _ in range(20000)])
            pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    finally:
        gateway.stop(grace_seconds=0)


if __name__ == "__main__":
    main()

"""How long a label takes to be counted: from RegistryClient.put_labels to the joined count in
the registry (what `gatectl accuracy` reads), with a gateway's default join settings.

One gateway (`onnxgate serve --data-dir`, its private Redis) serves the tiny model with a
quality config; predictions are made with known ids, and after they are logged one label at a
time is given, at a random moment, and the registry polled every 10 ms until it counts it.

    python benchmarks/label_latency.py --labels 30

Prints each latency and their median, 90th percentile and maximum; docs/quality.md states
the bound (settle time + one join interval: 5 s with the defaults).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from models import build_repository, tiny_request
from servers import HOST, port_pair, start_server

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client import Label, RegistryClient
from registry_client.connection import private_redis_url
from registry_client.quality.task import QualityConfig

MODEL = "tiny"


def _joined(client: RegistryClient) -> int:
    return client.quality.counts(MODEL).get("joined", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=30)
    parser.add_argument("--executable", default=str(Path(sys.executable).parent / "onnxgate"))
    args = parser.parse_args()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory(prefix="label-latency-") as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        work = Path(tmp)
        build_repository(work / "repo", [MODEL])
        port, metrics_port = port_pair()
        data = work / "data"
        command = [args.executable, "serve", "--models", str(work / "repo"), "--grpc-port",
                   str(port), "--metrics-port", str(metrics_port), "--host", HOST,
                   "--data-dir", str(data)]  # fmt: skip
        start_server(stack, "gateway", command, work / "gateway.log", port, MODEL, 90.0)
        client = stack.enter_context(contextlib.closing(RegistryClient.from_url(
            private_redis_url(data))))  # fmt: skip
        client.create_model(MODEL, actor="benchmark",
                            quality=QualityConfig("binary", "probabilities", 1))  # fmt: skip
        time.sleep(6)  # the gateway follows configs every 5 s
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(args.labels):
                request = tiny_request()
                request.id = f"latency-{i}"
                stub.ModelInfer(request, timeout=10)
        deadline = time.monotonic() + 30
        while len(client.predictions.lookup(MODEL, [f"latency-{args.labels - 1}"], 86400,
                                            time.time())) == 0:  # fmt: skip
            if time.monotonic() > deadline:
                raise SystemExit("the predictions were not logged")
            time.sleep(0.05)
        rng = random.Random(0)
        for i in range(args.labels):
            time.sleep(rng.uniform(0.0, 1.0))  # a moment anywhere in the join interval
            before = _joined(client)
            given = time.monotonic()
            client.put_labels(MODEL, [Label(f"latency-{i}", i % 2)])
            while _joined(client) == before:
                time.sleep(0.01)
            latencies.append(time.monotonic() - given)
            print(f"label {i}: counted after {latencies[-1]:.2f} s", flush=True)
    ordered = sorted(latencies)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(f"labels {len(latencies)}: median {statistics.median(latencies):.2f} s,"
          f" p90 {p90:.2f} s, max {max(latencies):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()

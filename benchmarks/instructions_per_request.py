"""Instructions per ModelInfer request under callgrind: a CPU cost that the shared machine's
load does not move, for changes too small for the timing A/B to resolve.

One gateway (`python -m gateway serve`, against a redis-server of this script's, so that
Redis' own work is not counted) runs under `valgrind --tool=callgrind`; once it serves, the
counters are zeroed, `--requests` ModelInfer calls are made from one client, the background
work they cause is given `--settle` seconds, and the counters are dumped. Every thread of the
gateway process is counted: the request threads and the background ones alike.

    python benchmarks/instructions_per_request.py --requests 2000
    python benchmarks/instructions_per_request.py --requests 2000 --log-predictions

With `--log-predictions`, the tiny model has a quality config, so every prediction is logged
(the cap raised past the rate reached here): the difference is the prediction log's cost per
request, on the request path and in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from models import build_repository, tiny_request
from servers import HOST, port_pair, start_redis, wait_ready

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from registry_client import RegistryClient
from registry_client.quality.task import QualityConfig

MODEL = "tiny"


def _total(dump_dir: Path) -> int:
    """The instructions of the last dump (callgrind's `summary:` line)."""
    dumps = sorted(dump_dir.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
    text = dumps[-1].read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no totals in {dumps[-1]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--log-predictions", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as tmp, \
            contextlib.ExitStack() as stack:  # fmt: skip
        work = Path(tmp)
        build_repository(work / "repo", [MODEL])
        redis_proc, url = start_redis(work)
        stack.callback(redis_proc.terminate)
        time.sleep(0.5)
        client = stack.enter_context(contextlib.closing(RegistryClient.from_url(url)))
        client.import_repository(work / "repo", actor="benchmark")
        client.ensure_default_rules(actor="benchmark")
        if args.log_predictions:
            client.create_model(MODEL, actor="benchmark",
                                quality=QualityConfig("binary", "probabilities", 1))  # fmt: skip
        port, metrics_port = port_pair()
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out.%p",
                   sys.executable, "-m", "gateway", "serve", "--redis-url", url, "--host", HOST,
                   "--grpc-port", str(port), "--metrics-port", str(metrics_port),
                   "--prediction-log-max-per-second", "1000000",
                   # Work done at a fixed rate, not per request, is left out: under callgrind a
                   # request takes a hundred times longer, so the quality gauges' refresh and
                   # the label join's ticks would weigh a hundred times more per request.
                   "--quality-gauges-seconds", "3600", "--no-rollout-controller",
                   # For the same reason the log is written every 10 s, not every second.
                   "--prediction-flush-seconds", "10"]  # fmt: skip
        log = (work / "gateway.log").open("wb")
        gateway = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(gateway.wait)
        stack.callback(gateway.terminate)
        wait_ready(port, MODEL, gateway, 600.0, work / "gateway.log")
        time.sleep(args.settle)  # the quality configs followed, first flushes done
        subprocess.run(["callgrind_control", "--zero", str(gateway.pid)], check=True,
                       capture_output=True)  # fmt: skip
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i in range(args.requests):
                request = tiny_request()
                request.id = f"callgrind-{i}"
                stub.ModelInfer(request, timeout=60)
        time.sleep(args.settle)  # the background work the requests caused
        subprocess.run(["callgrind_control", "--dump", str(gateway.pid)], check=True,
                       capture_output=True)  # fmt: skip
        total = _total(work)
        if args.log_predictions:
            logged = len(
                client.predictions.lookup(
                    MODEL, [f"callgrind-{i}" for i in range(args.requests)], 86400, time.time()
                )
            )
            print(f"predictions logged: {logged} of {args.requests}")
    print(
        f"instructions per request: {total / args.requests:,.0f}"
        f" ({total:,} over {args.requests} requests)"
    )


if __name__ == "__main__":
    main()

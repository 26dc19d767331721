"""What the gRPC server's executor costs per call: ThreadPoolExecutor against CallThreads,
with work items shaped as grpcio's server submits them (so the receive deadline is armed).

Each round submits `calls` work items from `clients` threads, each waiting for its result
before submitting the next (as grpcio's polling thread does not, but as a closed-loop client
sees it), alternating which executor goes first; reports microseconds per call per round.

    python benchmarks/call_threads_cost.py --rounds 7 --calls 20000
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from bench_report import joined
from driver import alternate, run_rounds
from grpc._server import _unary_response_in_pool
from round_stats import paired_ratios

from gateway.api.call_threads import CallThreads

THREADS = 20  # --grpc-threads 4 + --max-streams 16


class _Event:
    call = None


def _runner(runner: object, event: object, state: object, behaviour: object,
            read_request: Callable[[], Any]) -> Any:  # fmt: skip
    return read_request()


def _submit_one(executor: Executor) -> None:
    # fn, then grpcio's positional shape: runner, rpc event, state, behaviour, request thunk
    executor.submit(_runner, _unary_response_in_pool, _Event(), None, None, lambda: 1).result()


def _round(executor: Executor, calls: int, clients: int) -> float:
    per_client = calls // clients

    def client() -> None:
        for _ in range(per_client):
            _submit_one(executor)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / (per_client * clients) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    executors: dict[str, Executor] = {
        "ThreadPoolExecutor": ThreadPoolExecutor(THREADS),
        "CallThreads": CallThreads(THREADS, 1000, receive_timeout=10.0),
    }

    def timed(rnd: int, pos: int, name: str) -> tuple[str, float]:
        return name, _round(executors[name], args.calls, args.clients)

    rounds: list[tuple[str, float]] = []
    run_rounds(args.rounds, lambda rnd: alternate(list(executors), rnd), timed, rounds)
    results = {name: [us for done, us in rounds if done == name] for name in executors}
    for name, values in results.items():
        print(f"{name}: median {statistics.median(values):.1f} us/call ({joined(values, '.1f')})")
    ratios = paired_ratios(results["ThreadPoolExecutor"], results["CallThreads"])
    print(
        f"CallThreads / ThreadPoolExecutor per round: median {statistics.median(ratios):.3f}"
        f" ({joined(ratios, '.3f')})"
    )
    for executor in executors.values():
        executor.shutdown()


if __name__ == "__main__":
    main()

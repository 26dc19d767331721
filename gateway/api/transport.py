"""gRPC's transport for the gateway's server, chosen before grpcio loads.

By default grpcio (1.85) accepts connections and moves their bytes on EventEngine threads of
its own, which hand each call's events over to the thread polling the completion queue. With
the EventEngine listener off, grpc core's epoll poller does that socket work on the polling
thread itself, and a request costs fewer hand-overs between threads: measured on one server
core (benchmarks/RESULTS.md, "Fourth pass"), 15 context switches a request instead of 25 at
concurrency 1, and 1.13x / 1.16x the requests served at concurrency 8 / 32; a bare grpcio
server gains as much.

grpc core reads GRPC_EXPERIMENTS once, as grpcio is imported, so the `onnxgate` command makes
this choice first (gateway/command.py). An operator's own GRPC_EXPERIMENTS is left as it is:
it is how gRPC's transport is configured anywhere else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["GRPC_EXPERIMENTS", "POLLER_OWNS_SOCKETS", "choose_transport"]

GRPC_EXPERIMENTS = "GRPC_EXPERIMENTS"
POLLER_OWNS_SOCKETS = "-event_engine_listener"


def choose_transport(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set the gateway's transport in `environ` unless the operator chose one; whether it
    applies to this process, which it cannot once grpcio is loaded. Workers started later
    inherit it from the environment."""
    if "grpc" in sys.modules:
        return False
    environ.setdefault(GRPC_EXPERIMENTS, POLLER_OWNS_SOCKETS)
    return True

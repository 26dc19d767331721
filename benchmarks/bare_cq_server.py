"""The bare server's handlers answered straight from gRPC core's completion queue: the
ceiling for the gateway's ModelInfer lane (gateway/api/infer_lane.py), as bare_server.py is
for grpcio's server.

grpcio's thread-pool server runs a few hundred lines of Python per call around a handler
(its call state, conditions, the call thread waiting for its request message, four events
per call on the polling thread). This server asks grpc core for the request message at once
and sends the response, status and the close in one batch:

- `--workers 0`: the handler runs on the polling thread itself, no hand-over at all;
- `--workers N` (default 4, as the gateway's call threads): the polling thread queues the
  call with its message for N threads.

A measuring stick, not a server: no deadlines, cancellation, metadata, errors or graceful
stop.

    python benchmarks/bare_cq_server.py --model-path MODEL --model-name tiny --port 8001
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
from typing import Any

from bare_server import (
    SERVER_OPTIONS,
    SERVICE,
    STOP_SIGNALS,
    BareModel,
    handlers,
    server_arguments,
)
from grpc._cython import cygrpc  # grpcio's binding of grpc core, which its servers use

_NEW_CALL = object()
_FINISHED = object()
_NO_FLAGS = 0


def method_table(model: BareModel) -> dict[bytes, tuple[Any, Any]]:
    """Full method path -> (handler, request class)."""
    return {
        f"/{SERVICE}/{name}".encode(): (fn, request_cls)
        for name, (fn, request_cls, _) in handlers(model).items()
    }


def answer(table: dict[bytes, tuple[Any, Any]], call: Any, method: bytes, data: bytes) -> None:
    """Run the handler and send metadata, response, status and the close in one batch."""
    entry = table.get(method)
    if entry is None or data is None:
        status = cygrpc.SendStatusFromServerOperation(
            None, cygrpc.StatusCode.unimplemented, b"method not found", _NO_FLAGS
        )
        operations: tuple[Any, ...] = (
            cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
            status,
            cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),
        )
    else:
        handler, request_cls = entry
        response = handler(request_cls.FromString(data), None).SerializeToString()
        operations = (
            cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
            cygrpc.SendMessageOperation(response, _NO_FLAGS),
            cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", _NO_FLAGS),
            cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),
        )
    call.start_server_batch(operations, _FINISHED)


def poll(server: Any, completion_queue: Any, table: dict[bytes, tuple[Any, Any]],
         work: queue.SimpleQueue[tuple[Any, bytes, bytes]] | None) -> None:  # fmt: skip
    """The polling loop: a new call asks for its message; a message is answered or queued."""
    server.request_call(completion_queue, completion_queue, _NEW_CALL)
    while True:
        event = completion_queue.poll()
        tag = event.tag
        if tag is _NEW_CALL:
            server.request_call(completion_queue, completion_queue, _NEW_CALL)
            call = event.call
            receive = (cygrpc.ReceiveMessageOperation(_NO_FLAGS),)
            call.start_server_batch(receive, (call, event.call_details.method))
        elif tag is _FINISHED or tag is None:
            continue
        else:
            call, method = tag
            data = event.batch_operations[0].message()
            if work is None:
                answer(table, call, method, data)
            else:
                work.put((call, method, data))


def serve(model: BareModel, host: str, port: int, workers: int) -> None:
    """Serve until SIGTERM or SIGINT (blocked by main(), taken with sigwait)."""
    completion_queue = cygrpc.CompletionQueue()
    server = cygrpc.Server(tuple(SERVER_OPTIONS), False)
    server.register_completion_queue(completion_queue)
    server.add_http2_port(f"{host}:{port}".encode())
    server.start()
    table = method_table(model)
    work: queue.SimpleQueue[tuple[Any, bytes, bytes]] | None = None
    if workers:
        work = queue.SimpleQueue()

        def worker() -> None:
            assert work is not None
            while True:
                answer(table, *work.get())

        for _ in range(workers):
            threading.Thread(target=worker, daemon=True).start()
    threading.Thread(target=poll, args=(server, completion_queue, table, work), daemon=True).start()
    print(f"completion-queue server ({workers} workers) on {host}:{port}", flush=True)
    signal.sigwait(STOP_SIGNALS)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = server_arguments(__doc__)
    parser.add_argument("--workers", type=int, default=4, help="0: answer on the polling thread")
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    serve(BareModel(args.model_name, args.model_path), args.host, args.port, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

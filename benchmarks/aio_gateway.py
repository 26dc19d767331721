"""The gateway's full request path served by grpc.aio instead of the thread pool.

Only for the server-model measurement (which server model runs the full path fastest): the
same codec, pipeline, binder and metrics as `onnxgate serve`, with the sync servicer's methods
called inline from async handlers (onnxruntime's run takes ~10 us for the tiny model).

    python benchmarks/aio_gateway.py --models REPO --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.api.health import HealthService, ServingState
from gateway.api.servicer import InferenceServicer
from gateway.api.status import code_name, status_for
from gateway.errors import GatewayError
from gateway.metrics.gateway_metrics import GatewayMetrics
from gateway.models.store import VersionStore
from gateway.pipeline.inference import InferencePipeline
from gateway.routing.default_routes import routes_for_ready_versions
from gateway.routing.table import RouteTableHolder
from gateway.settings import Settings
from registry_client.repository import scan_repository

METHODS = ["ServerLive", "ServerReady", "ServerMetadata", "ModelMetadata", "ModelConfig",
           "ModelReady", "ModelInfer"]  # fmt: skip


class AioServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Async front over the thread-pool servicer's methods."""

    def __init__(self, inner: InferenceServicer) -> None:
        for name in METHODS:
            setattr(self, name, self._inline(getattr(inner, name)))

    @staticmethod
    def _inline(method: Any) -> Any:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return method(request, context)
            except GatewayError as exc:
                await context.abort(status_for(exc), exc.message)

        return call


async def serve(models: Path, port: int) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    versions = VersionStore(Settings(load_threads=1, max_version_memory_bytes=0), metrics)
    routes = RouteTableHolder()
    pipeline = InferencePipeline(routes, versions, metrics, code_name)
    state = ServingState(HealthService([]))
    loaded = asyncio.Event()
    loop = asyncio.get_running_loop()
    versions.load_all(scan_repository(models), lambda: loop.call_soon_threadsafe(loaded.set))
    await loaded.wait()
    routes.replace(routes_for_ready_versions(versions.ready_versions()))
    state.mark_ready(True)
    inner = InferenceServicer(pipeline, versions, state, "aio", max_batch_size=1024)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(AioServicer(inner), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    versions.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    asyncio.run(serve(args.models, args.port))


if __name__ == "__main__":
    main()

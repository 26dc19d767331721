"""The Python ceiling: the smallest gRPC server on our proto that runs an ONNX model."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from driver import csv_list
from google.protobuf.message import Message
from load import V2_TO_NUMPY

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import model_config_pb2 as mc
from gateway.api.call_threads import CallThreads
from gateway.api.error_mapping import ErrorMappedRegistry
from gateway.pipeline.cpu_turns import RequestTurns

SERVICE = "inference.GRPCInferenceService"
VERSION = "1"
MAX_BATCH_SIZE = 1024
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# The gateway's layers around grpcio, each addable to the bare server to weigh its cost: its
# call-thread executor (with the receive deadline), its CPU turns (as many requests at once
# as the pool has threads) and its error mapping (each handler wrapped as it is registered;
# it also chooses the request id a failure's trailer carries).
LAYERS = ("call-threads", "turns", "error-mapping")
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
V2_TO_TRITON: dict[str, int] = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}
SERVER_OPTIONS: list[tuple[str, Any]] = [
    # gRPC's default receive limit is 4 MiB; Triton accepts up to INT32_MAX.
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # Linux gRPC sets SO_REUSEPORT by default: a second server on a busy port would silently
    # share it and split the benchmark traffic. Fail to bind instead.
    ("grpc.so_reuseport", 0),
]

Context = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Context], Message]


def make_session(model_path: str | Path, intra_op_threads: int = 1) -> ort.InferenceSession:
    """Open an ORT CPU session with 1 inter-op thread and sequential execution."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def v2_shape(shape: list[Any]) -> list[int]:
    """Map an ORT shape (ints, symbolic names or None) to v2 metadata (-1 = variable)."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


@dataclass(frozen=True)
class Tensor:
    """Name, v2 datatype and v2 shape of a model input or output."""

    name: str
    datatype: str
    shape: list[int]


class BareModel:
    """One ORT session plus the static answers the metadata RPCs need."""

    def __init__(self, name: str, model_path: str | Path) -> None:
        """Load the model and precompute metadata and config responses."""
        self.name = name
        self.session = make_session(model_path)
        self.inputs = [self._tensor(t) for t in self.session.get_inputs()]
        self.outputs = [self._tensor(t) for t in self.session.get_outputs()]
        self.output_names = [t.name for t in self.outputs]
        self.output_datatypes = [t.datatype for t in self.outputs]
        self.metadata = self._metadata()
        self.config = self._config()

    @staticmethod
    def _tensor(node: Any) -> Tensor:
        """Describe an ORT NodeArg in v2 terms."""
        return Tensor(node.name, ORT_TO_V2[node.type], v2_shape(node.shape))

    def _metadata(self) -> pb.ModelMetadataResponse:
        """Build the ModelMetadata answer."""
        meta = pb.ModelMetadataResponse(
            name=self.name, versions=[VERSION], platform="onnxruntime_onnx"
        )
        for src, dst in ((self.inputs, meta.inputs), (self.outputs, meta.outputs)):
            for t in src:
                dst.add(name=t.name, datatype=t.datatype, shape=t.shape)
        return meta

    def _config(self) -> pb.ModelConfigResponse:
        """Build the Triton ModelConfig answer: dims leave the batch dim out."""
        config = mc.ModelConfig(
            name=self.name,
            platform="onnxruntime_onnx",
            backend="onnxruntime",
            max_batch_size=MAX_BATCH_SIZE,
        )
        for t in self.inputs:
            config.input.add(name=t.name, data_type=V2_TO_TRITON[t.datatype], dims=t.shape[1:])
        for t in self.outputs:
            config.output.add(name=t.name, data_type=V2_TO_TRITON[t.datatype], dims=t.shape[1:])
        return pb.ModelConfigResponse(config=config)

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """Run the model on raw inputs; no validation by design (this is the ceiling)."""
        feeds = {
            t.name: np.frombuffer(raw, dtype=V2_TO_NUMPY[t.datatype]).reshape(t.shape)
            for t, raw in zip(request.inputs, request.raw_input_contents, strict=False)
        }
        results = self.session.run(self.output_names, feeds)
        response = pb.ModelInferResponse(model_name=self.name, model_version=VERSION, id=request.id)
        for name, datatype, arr in zip(
            self.output_names, self.output_datatypes, results, strict=True
        ):
            response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
            response.raw_output_contents.append(arr.tobytes())
        return response

    def known(self, name: str, context: Context) -> bool:
        """Return whether name is this model; otherwise set NOT_FOUND on the context."""
        if name == self.name:
            return True
        context.set_code(grpc.StatusCode.NOT_FOUND)
        context.set_details(f"Request for unknown model: '{name}' has no available versions")
        return False


SERVER_METADATA = pb.ServerMetadataResponse(name="bare_server", version="0.1.0", extensions=[])


def handlers(
    model: BareModel, turns: RequestTurns | None = None
) -> dict[str, tuple[Handler, type[Message], type[Message]]]:
    """Map RPC name -> (handler, request, response class); others answer UNIMPLEMENTED. With
    `turns`, an inference holds a turn while it runs and its response is built."""

    def server_live(request: Any, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def server_ready(request: Any, context: Context) -> pb.ServerReadyResponse:
        # The model is loaded before the port opens, so serving means ready.
        return pb.ServerReadyResponse(ready=True)

    def model_ready(request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == model.name)

    def server_metadata(request: Any, context: Context) -> pb.ServerMetadataResponse:
        # No "statistics" extension: perf_analyzer would then call ModelStatistics.
        return SERVER_METADATA

    def model_metadata(
        request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        return model.metadata if model.known(request.name, context) else pb.ModelMetadataResponse()

    def model_config(request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return model.config if model.known(request.name, context) else pb.ModelConfigResponse()

    def model_infer(request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return model.infer(request)

    def model_infer_in_turn(
        request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        assert turns is not None
        turn = turns.take(None)
        try:
            return model.infer(request)
        finally:
            turns.give_back(turn)

    return {
        "ServerLive": (server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelConfig": (model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
        "ModelInfer": (
            model_infer if turns is None else model_infer_in_turn,
            pb.ModelInferRequest,
            pb.ModelInferResponse,
        ),
    }


def as_coroutine(handler: Handler) -> Callable[[Any, Context], Awaitable[Message]]:
    """Wrap a handler for grpc.aio; it runs inline on the loop (session.run takes ~10 us)."""

    async def wrapper(request: Any, context: Context) -> Message:
        return handler(request, context)

    return wrapper


def generic_handler(
    model: BareModel, aio: bool, turns: RequestTurns | None = None
) -> grpc.GenericRpcHandler[Any, Any]:
    """Build the service's generic handler, with coroutine handlers for grpc.aio."""
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            as_coroutine(fn) if aio else fn,
            request_deserializer=request_cls.FromString,
            # The class's own method: the base Message.SerializeToString is abstract under upb.
            response_serializer=response_cls.SerializeToString,
        )
        for name, (fn, request_cls, response_cls) in handlers(model, turns).items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, methods)


def bind(server: grpc.Server | grpc.aio.Server, host: str, port: int) -> None:
    """Bind the insecure port or exit with a one-line reason."""
    try:
        server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as err:
        # grpc raises a bare RuntimeError on bind failure; the traceback adds nothing.
        raise SystemExit(f"cannot bind {host}:{port}: {err}") from err


def serve_threads(
    model: BareModel, host: str, port: int, threads: int, layers: tuple[str, ...] = ()
) -> None:
    """Run the thread-pool server until SIGTERM or SIGINT (which main() has blocked), with
    the gateway's own `layers` (see LAYERS) in place of grpcio's defaults."""
    executor: Executor = ThreadPoolExecutor(max_workers=threads)
    if "call-threads" in layers:  # as the gateway's: one per request thread, up to max_calls
        executor = CallThreads(threads, 1000, receive_timeout=10.0)
    turns = RequestTurns(threads) if "turns" in layers else None
    server = grpc.server(
        executor,  # type: ignore[arg-type]  # grpcio takes any Executor; its stubs say less
        options=SERVER_OPTIONS,
    )
    services = ErrorMappedRegistry(server).as_server() if "error-mapping" in layers else server
    services.add_generic_rpc_handlers((generic_handler(model, aio=False, turns=turns),))
    bind(server, host, port)
    server.start()
    with_layers = f" with {', '.join(layers)}" if layers else ""
    print(f"bare thread-pool server ({threads} threads{with_layers}) on {host}:{port}", flush=True)
    signal.sigwait(STOP_SIGNALS)
    server.stop(grace=1.0).wait()


async def serve_aio(model: BareModel, host: str, port: int) -> None:
    """Run the grpc.aio server until SIGTERM or SIGINT."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((generic_handler(model, aio=True),))
    bind(server, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        # The loop's wakeup fd sees the signal whichever thread the kernel delivers it to.
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"bare aio server on {host}:{port}", flush=True)
    await stop.wait()
    await server.stop(grace=1.0)


def server_arguments(description: str | None) -> argparse.ArgumentParser:
    """A parser with the model and address flags of every bare server."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--model-name", default="tiny")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = server_arguments(__doc__)
    parser.add_argument("--threads", type=int, default=4, help="thread-pool size")
    parser.add_argument("--aio", action="store_true", help="grpc.aio server instead of threads")
    parser.add_argument(
        "--layers", type=csv_list(str, LAYERS), default=(),
        help="the gateway's own layers, to weigh each: " + ", ".join(LAYERS),
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not args.aio:
        # A signal handler may run on a gRPC thread while the main thread sleeps in a lock and
        # never notices. Block the stop signals before any thread exists (threads inherit the
        # mask) and take them synchronously with sigwait instead.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    model = BareModel(args.model_name, args.model_path)
    if args.aio:
        asyncio.run(serve_aio(model, args.host, args.port))
    else:
        serve_threads(model, args.host, args.port, args.threads, tuple(args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())

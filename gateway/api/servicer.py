"""The GRPCInferenceService servicer: it only translates between protobuf and the pipeline."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from random import random

import grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.api.access_log import log_access
from gateway.api.codec import decode_infer_request, encode_infer_response
from gateway.api.error_mapping import (
    answer_for,
    answer_with_request_id,
    new_request_id,
    request_id_of,
)
from gateway.api.health import ServingState
from gateway.api.metadata import model_config, model_metadata
from gateway.api.status import status_for
from gateway.errors import GatewayError, TooManyStreams, Unsupported
from gateway.models.store import VersionState, VersionStore
from gateway.pipeline.inference import InferencePipeline

__all__ = ["SERVER_NAME", "InferenceServicer"]

SERVER_NAME = "onnxgate"
_STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
_Metadata = Sequence[tuple[str, str | bytes]]
_MODEL_CONTROL = (
    "loading and unloading through the API is not supported: versions come from the"
    " registry's routing rules (set with gatectl) or, without a registry, from the model"
    " directory given with --models"
)
# Only what is really implemented: perf_analyzer and tritonclient read this list.
EXTENSIONS = ("model_configuration", "parameters")


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol RPCs over the pipeline and the version store."""

    def __init__(
        self,
        pipeline: InferencePipeline,
        versions: VersionStore,
        state: ServingState,
        server_version: str,
        max_batch_size: int,
        max_streams: int = 16,
        request_timeout: float = 60.0,
        access_log_sample: float = 0.0,
        hold_thread: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`hold_thread()` is entered while a stream is open (CallThreads.holding)."""
        self._hold_thread = hold_thread
        self._pipeline = pipeline
        self._versions = versions
        self._state = state
        self._server_version = server_version
        self._max_batch_size = max_batch_size
        self._max_streams = max_streams
        self._request_timeout = request_timeout
        self._access_log_sample = access_log_sample
        self._open_streams = 0
        self._streams_lock = threading.Lock()

    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._state.is_ready())

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._pipeline.resolve(request.name, request.version)
        except GatewayError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=self._server_version, extensions=EXTENSIONS
        )

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        loaded, _ = self._pipeline.resolve(request.name, request.version)
        return model_metadata(loaded.model, loaded.version, loaded.signature)

    def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.ServicerContext
    ) -> pb.ModelConfigResponse:
        loaded, _ = self._pipeline.resolve(request.name, request.version)
        config = model_config(loaded.model, loaded.signature, self._max_batch_size)
        return pb.ModelConfigResponse(config=config)

    def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=s.model, version=s.version, state=s.state.value, reason=s.reason
                )
                for s in self._versions.statuses()
                if not request.ready or s.state is VersionState.READY
            ]
        )

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        """The response's `id` is the prediction's: the request's `id` when it has one, else
        the call's request id (the caller's x-request-id, or a generated one), which the
        trailer x-request-id carries when a log line names it (see error_mapping.py)."""
        return self._serve(request, context, context.invocation_metadata(), in_stream=False)

    def _serve(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext, metadata: _Metadata,
        in_stream: bool,
    ) -> pb.ModelInferResponse:  # fmt: skip
        """One request, of ModelInfer or of a stream; with no access log, the only cost of
        it is the comparison with 0."""
        sample = self._access_log_sample
        if sample > 0.0 and random() < sample:
            return self._serve_logged(request, context, metadata, in_stream)
        return self._infer(request, context, metadata, in_stream)

    def _serve_logged(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext, metadata: _Metadata,
        in_stream: bool,
    ) -> pb.ModelInferResponse:  # fmt: skip
        """_infer, then one access-log line with the status the caller gets; a ModelInfer
        answer names the line's request id in its trailer."""
        started = time.perf_counter()
        # A request that fails before routing knows only the version it pinned, if any.
        version: str | None = request.model_version or None
        code = grpc.StatusCode.INTERNAL.name  # anything unexpected is answered INTERNAL
        try:
            response = self._infer(request, context, metadata, in_stream)
            version, code = response.model_version, grpc.StatusCode.OK.name
            return response
        except GatewayError as exc:
            code, version = status_for(exc).name, exc.version or version
            raise
        finally:
            request_id = request_id_of(context)
            if not in_stream:  # a stream's trailer names the stream already
                answer_with_request_id(context, request_id)
            log_access(request.model_name, version, code, started, request_id)

    def _infer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext, metadata: _Metadata,
        in_stream: bool,
    ) -> pb.ModelInferResponse:  # fmt: skip
        """Decode, infer and encode in one `serving` block: the pipeline counts what fails in
        it, and the response is encoded before the request gives back its CPU turn.

        The prediction's id: the request's `id`, else the call's request id (trailer); in a
        stream, whose one trailer names the stream, a message without an `id` gets a fresh
        one, so that no two predictions share an id."""
        remaining = context.time_remaining()
        if remaining is None or remaining > self._request_timeout:
            remaining = self._request_timeout
        request_id = request.id or (new_request_id() if in_stream else request_id_of(context))
        with self._pipeline.serving(request.model_name) as serving:
            decoded = decode_infer_request(
                request, remaining, metadata, context.is_active, request_id
            )
            return encode_infer_response(serving.infer(decoded), request_id)

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        """Triton's streaming shape: a failed request answers error_message, the stream goes on.

        The stream holds its thread until it ends, so at most max_streams are open at once;
        one more is refused at once rather than left waiting for a thread. A stream has one
        trailer, so one x-request-id that its requests' log lines share; each response's `id`
        echoes its own request's."""
        metadata = context.invocation_metadata()
        with self._streams_lock:
            if self._open_streams >= self._max_streams:
                raise TooManyStreams(
                    f"this gateway already has {self._max_streams} ModelStreamInfer streams open"
                    " (--max-streams); close one, use ModelInfer, or try another replica"
                )
            self._open_streams += 1
        try:
            with self._hold_thread():
                yield from self._answer(request_iterator, context, metadata)
        finally:
            with self._streams_lock:
                self._open_streams -= 1

    def _answer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext,
        metadata: _Metadata,
    ) -> Iterator[pb.ModelStreamInferResponse]:  # fmt: skip
        """A stream's responses, one per request."""
        for request in request_iterator:
            try:
                response = self._serve(request, context, metadata, in_stream=True)
            except GatewayError as exc:  # answered in-band, as Triton does; the stream goes on
                message = answer_for(exc, _STREAM_METHOD, context)
                yield pb.ModelStreamInferResponse(error_message=message)
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        raise Unsupported(_MODEL_CONTROL)

    def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        raise Unsupported(_MODEL_CONTROL)

"""The gRPC server: its thread pool, authentication, transport options and services."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway._proto import feedback_pb2 as fb
from gateway._proto import feedback_pb2_grpc as fb_grpc
from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.api.auth import AuthInterceptor
from gateway.api.call_threads import CallThreads
from gateway.api.error_mapping import ErrorMappedRegistry
from gateway.api.feedback import FeedbackServicer
from gateway.api.infer_lane import InferLane
from gateway.api.servicer import InferenceServicer
from gateway.security.material import Security
from gateway.settings import Settings
from registry_client.client import RegistryClient

__all__ = [
    "FEEDBACK_SERVICE",
    "INFERENCE_SERVICE",
    "MODEL_INFER",
    "BuiltServer",
    "bind",
    "build_server",
    "call_threads",
]

_log = logging.getLogger(__name__)
INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MODEL_INFER = f"/{INFERENCE_SERVICE}/ModelInfer"
FEEDBACK_SERVICE = fb.DESCRIPTOR.services_by_name["Feedback"].full_name


def _milliseconds(seconds: float) -> int:
    return int(seconds * 1000)


def _options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Two gateways must never share a port by accident; a supervisor's workers do.
        ("grpc.so_reuseport", int(settings.workers > 1)),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_connection_idle_ms", _milliseconds(settings.idle_connection_seconds)),
        ("grpc.server_handshake_timeout_ms", _milliseconds(settings.handshake_timeout_seconds)),
        ("grpc.keepalive_time_ms", _milliseconds(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _milliseconds(settings.keepalive_timeout_seconds)),
        ("grpc.http2.ping_timeout_ms", _milliseconds(settings.keepalive_timeout_seconds)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging an idle stream: after gRPC's default of 2 pings without data, a client
        # that vanished later would never be noticed.
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms",
         _milliseconds(settings.min_client_ping_seconds)),
        ("grpc.http2.max_ping_strikes", 2),
    ]  # fmt: skip


def call_threads(settings: Settings, on_receive_expired: Callable[[], None]) -> CallThreads:
    """The server's call threads: --grpc-threads for the calls' Python work, and one more for
    each open stream and each PutLabels call while it runs (the servicers hold theirs in
    `holding()`: streams while open, PutLabels while it waits on Redis, so neither takes a
    request's), up to max_calls."""
    return CallThreads(
        settings.grpc_threads,
        settings.max_calls,
        settings.receive_timeout_seconds,
        on_receive_expired,
    )


@dataclass(frozen=True)
class BuiltServer:
    """The gRPC server and, unless it is off or this grpcio cannot host it, the lane that
    answers ModelInfer (infer_lane.py); start the lane after the server, stop it after."""

    server: grpc.Server
    lane: InferLane | None


def build_server(
    settings: Settings,
    security: Security,
    servicer: InferenceServicer,
    health_servicer: health.HealthServicer,
    threads: CallThreads,
    registry_client: RegistryClient | None,
    on_receive_expired: Callable[[], None],
) -> BuiltServer:
    """A server with the inference, feedback, health and reflection services, not yet bound;
    without a registry client the feedback service says labels need one. Every method's
    errors are mapped to statuses (error_mapping.py); with tokens, AuthInterceptor checks each
    call first (the lane asks it too)."""
    auth = None if security.tokens is None else AuthInterceptor(security.tokens)
    interceptors: list[grpc.ServerInterceptor[Any, Any]] | None = None
    if auth is not None:
        interceptors = [auth]
    server = grpc.server(
        threads,  # type: ignore[arg-type]  # grpcio takes any Executor; its stubs say less
        interceptors=interceptors,
        options=_options(settings),
        # Refused on grpcio's polling thread, before any call thread is taken.
        maximum_concurrent_rpcs=settings.max_calls,
    )
    lane = None
    if settings.infer_lane:
        refusal = None if auth is None else partial(auth.refusal, MODEL_INFER)
        lane = InferLane(MODEL_INFER, threads.execute, settings.max_calls,
                         settings.receive_timeout_seconds, on_receive_expired, refusal)  # fmt: skip
        if not lane.attach(server):
            _log.warning(
                "this grpcio's server is not built as the ModelInfer lane expects: grpcio's"
                " server answers ModelInfer, at a higher cost per request"
            )
            lane = None
    elsewhere = None if lane is None else {lane.method: lane.serve_with}
    services = ErrorMappedRegistry(server, elsewhere).as_server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, services)
    feedback = FeedbackServicer(registry_client, settings.feedback_max_calls, threads.holding)
    fb_grpc.add_FeedbackServicer_to_server(feedback, services)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    names = [INFERENCE_SERVICE, FEEDBACK_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, services)
    return BuiltServer(server, lane)


def bind(server: grpc.Server, settings: Settings, security: Security) -> int:
    """Listen on the configured address, over TLS when configured; returns the port."""
    address = f"{settings.host}:{settings.grpc_port}"
    if security.tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, security.tls.grpc_credentials())

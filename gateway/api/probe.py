"""`onnxgate probe`: exit 0 when a gateway's gRPC health is SERVING (for container probes).

Without flags it probes the gateway its environment configures, as the image's HEALTHCHECK
runs it: ONNXGATE_HOST and ONNXGATE_GRPC_PORT, over TLS when ONNXGATE_TLS_CERT_FILE is set.
It imports grpc and the health stubs only: a probe every few seconds must not pay for
onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["ProbeTls", "default_address", "probe", "tls_from_env"]

_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True, slots=True)
class ProbeTls:
    """How the probe speaks TLS: the CA it trusts (None: the system's), a client certificate
    and key for mutual TLS, and the name to check in the server's certificate (None: the
    address' host)."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_name: str | None = None


def default_address(env: Mapping[str, str]) -> str:
    """The gRPC address of the gateway this environment configures: its host (127.0.0.1 when
    it binds every address) and port."""
    host = env.get("ONNXGATE_HOST", "").strip()
    host = "127.0.0.1" if host in _ANY_ADDRESS else host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{env.get('ONNXGATE_GRPC_PORT', '').strip() or '8001'}"


def tls_from_env(env: Mapping[str, str]) -> ProbeTls | None:
    """TLS when the environment serves it: trusting the gateway's own certificate file (a
    self-signed certificate, or a chain that ends with its CA) unless told another CA."""
    certificate = env.get("ONNXGATE_TLS_CERT_FILE", "").strip()
    return ProbeTls(ca=Path(certificate)) if certificate else None


def _channel(address: str, tls: ProbeTls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    ca, cert, key = (None if p is None else p.read_bytes()
                     for p in (tls.ca, tls.client_cert, tls.client_key))  # fmt: skip
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    options = [] if tls.server_name is None else [("grpc.ssl_target_name_override",
                                                   tls.server_name)]  # fmt: skip
    return grpc.secure_channel(address, credentials, options)


def probe(address: str, service: str, timeout: float, tls: ProbeTls | None = None) -> int:
    """0 when SERVING, 1 when not serving or unreachable; prints the status either way.
    OSError when a TLS file cannot be read."""
    with _channel(address, tls) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name}: {exc.details()}")
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{address}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1

"""`onnxgate probe`: exit 0 when a gateway's gRPC health is SERVING (for container probes)."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["TlsClientFiles", "probe"]

TlsClientFiles = tuple[Path | None, Path | None, Path | None]


def _channel(address: str, tls: TlsClientFiles | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address)
    ca, cert, key = (None if path is None else path.read_bytes() for path in tls)
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    return grpc.secure_channel(address, credentials)


def probe(address: str, service: str, timeout: float, tls: TlsClientFiles | None = None) -> int:
    """0 when SERVING, 1 when not serving or unreachable; prints the status either way.
    With `tls` (CA, client certificate, client key; each may be None) it speaks TLS."""
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

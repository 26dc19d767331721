"""The `onnxgate` command: gRPC's transport is chosen before anything loads grpcio (see
gateway/api/transport.py), then the CLI runs."""

from __future__ import annotations

from gateway.api.transport import choose_transport

__all__ = ["main"]


def main() -> int:
    choose_transport()
    from gateway.cli import main as run  # imported only now: it loads grpcio

    return run()

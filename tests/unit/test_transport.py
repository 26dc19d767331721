"""gRPC's transport: chosen by the `onnxgate` command before grpcio loads, unless the
operator's environment chose one."""

from __future__ import annotations

import os
import subprocess
import sys

from gateway.api.transport import GRPC_EXPERIMENTS, POLLER_OWNS_SOCKETS, choose_transport

# Whether importing the command loads grpcio, then what `onnxgate --version` leaves in the
# environment: the command as a user runs it, in a fresh interpreter.
_PROBE = (
    "import os, sys; from gateway import command; loaded = 'grpc' in sys.modules;"
    " sys.argv = ['onnxgate', '--version'];\n"
    "try: command.main()\nexcept SystemExit: pass\n"
    "print(loaded, os.environ.get('GRPC_EXPERIMENTS'))"
)


def _run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != GRPC_EXPERIMENTS}
    env.update(env_extra)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.splitlines()[-1].strip()  # after the version line


def test_the_command_chooses_the_transport_before_grpcio_is_loaded() -> None:
    assert _run({}) == f"False {POLLER_OWNS_SOCKETS}"


def test_an_operators_own_grpc_experiments_are_kept() -> None:
    assert _run({GRPC_EXPERIMENTS: "event_engine_listener"}) == "False event_engine_listener"
    # Set empty: grpcio's default transport, as the operations guide says.
    assert _run({GRPC_EXPERIMENTS: ""}) == "False"


def test_nothing_is_set_once_grpcio_is_loaded() -> None:
    import grpc  # noqa: F401  loaded in this process already, as in any embedding

    environ: dict[str, str] = {}
    assert choose_transport(environ) is False
    assert environ == {}

"""One worker of `onnxgate serve --workers N`, started by the supervisor as
`python -m gateway.process.worker SUPERVISOR_PID` with its settings in ONNXGATE_* variables
(Settings.to_env)."""

from __future__ import annotations

import os
import sys

from gateway.app import serve
from gateway.settings import Settings


def main() -> int:
    """Serve until SIGTERM, or until the supervisor that started this worker is gone.

    The supervisor's pid comes from it, not from getppid() here: it may already have died
    while this interpreter was still importing."""
    return serve(Settings.from_env(os.environ), parent_pid=int(sys.argv[1]))


if __name__ == "__main__":
    raise SystemExit(main())

"""The child process of artifact_check.py: onnxruntime's check of an artifact too large to
be checked in gatectl's own process (artifact_check.answer, run here).

    python -m registry_client.records.onnx_signature PATH SHA256 NAME

prints one JSON line: {"signature": ..., "facts": ...}, or {"rejected": MESSAGE} with the
message a Rejected carries (NAME is the artifact as the operator named it). Nothing imports
this module: it runs only as the child.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from registry_client.records.artifact_check import answer

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Ask the kernel to end this process when gatectl ends, should it die first."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 4:
        print(f"usage: python -m {__name__} PATH SHA256 NAME", file=sys.stderr)
        return 2
    if sys.platform == "linux":
        _die_with_parent()
    # The answer goes to the original stdout; anything a library prints there meanwhile goes
    # to stderr instead, so that it cannot be mistaken for the answer.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    outcome = answer(Path(argv[1]), argv[2], Path(argv[3]))
    out.write(json.dumps(outcome) + "\n")
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

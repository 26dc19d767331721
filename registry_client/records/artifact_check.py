"""onnxruntime's check of an artifact being registered: the signature onnxruntime reads
(artifacts.signature) and the file's own facts (cards.onnx_facts), from bytes read again and
checked to be the ones hashed, so what is checked is what is registered.

Loading a model takes memory a few times its size. A file over IN_PROCESS_MAX_BYTES is
checked in a short-lived child process (onnx_signature.py), so gatectl (and a gateway
importing a directory) stays small however large the file is, and a model that crashes
onnxruntime ends the child, not the caller. A smaller file is checked in this process: a child
costs a Python start and the imports of onnx and onnxruntime, a second or more each time (a
directory of many versions, a test suite), while such a file's check takes tens of MB."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from registry_client.errors import Rejected

__all__ = ["CHILD_MODULE", "IN_PROCESS_MAX_BYTES", "answer", "check_artifact", "child_command"]

CHILD_MODULE = "registry_client.records.onnx_signature"
IN_PROCESS_MAX_BYTES = 16 << 20
_STDERR_SHOWN = 500  # characters of a dead child's last stderr line put in the message


def child_command(path: Path, sha256: str, name: str) -> list[str]:
    """The command line of the child that checks `path`."""
    return [sys.executable, "-m", CHILD_MODULE, os.fspath(path), sha256, name]


def check_artifact(
    path: Path, sha256: str, name: Path, size: int, command: Sequence[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(signature, facts) of the file at `path`, which must be `size` bytes hashing to
    `sha256`, read by onnxruntime and onnx: in this process up to IN_PROCESS_MAX_BYTES, else
    (or given a `command`) in a child process (by default child_command()). Rejected with the
    check's message when they refuse it, the file changed, or the child died (killed, or
    onnxruntime crashed) without an answer."""
    if command is None and size <= IN_PROCESS_MAX_BYTES:
        return _answered(answer(path, sha256, name))
    try:
        done = subprocess.run(
            list(command or child_command(path, sha256, str(name))),
            stdin=subprocess.DEVNULL, capture_output=True, env=_child_environment(), check=False,
        )  # fmt: skip
    except OSError as exc:
        raise Rejected(f"artifact {name}: cannot start the onnxruntime check: {exc}") from exc
    outcome = _outcome(done.stdout)
    if outcome is None:
        raise Rejected(_death(name, done.returncode, done.stderr))
    return _answered(outcome)


def answer(path: Path, sha256: str, name: Path) -> dict[str, Any]:
    """The check's answer, as JSON: {"signature", "facts"} or {"rejected": MESSAGE} (NAME:
    the artifact as the operator named it, for the message)."""
    # Imported here: onnx is slow to import, and only a registration needs it.
    from registry_client.cards.onnx_facts import onnx_facts
    from registry_client.records.artifacts import signature

    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"rejected": f"artifact {name}: cannot read it ({exc.strerror or exc})"}
    if hashlib.sha256(data).hexdigest() != sha256:
        return {"rejected": f"artifact {name} changed while it was registered: it no longer"
                            f" hashes to {sha256[:12]}...; register it again"}  # fmt: skip
    try:
        described = signature(data, name)
        facts = onnx_facts(data)
    except Rejected as exc:
        return {"rejected": str(exc)}
    return {"signature": described, "facts": facts}


def _answered(outcome: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if "rejected" in outcome:
        raise Rejected(str(outcome["rejected"]))
    return outcome["signature"], outcome["facts"]


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # The child imports this same package, wherever this process imported it from.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # numpy's OpenBLAS would start a thread per core at import, for nothing here.
    env["OPENBLAS_NUM_THREADS"] = "1"
    return env


def _outcome(stdout: bytes) -> dict[str, Any] | None:
    lines = [line for line in stdout.decode(errors="replace").splitlines() if line.strip()]
    try:
        outcome = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    if isinstance(outcome, dict) and ("rejected" in outcome or
                                      {"signature", "facts"} <= outcome.keys()):  # fmt: skip
        return outcome
    return None


def _death(name: Path, returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
        if returncode == -signal.SIGKILL:
            how += " (out of memory?)"
    else:
        how = f"exited with code {returncode} without an answer"
    said = stderr.decode(errors="replace").strip().splitlines()
    last = f": {said[-1][-_STDERR_SHOWN:]}" if said else ""
    return f"artifact {name}: the onnxruntime check (a child process) {how}{last}"

"""Load and warm a version up first in a short-lived child process held to a memory budget.

A version whose load or warm-up needs more than the budget fails inside the child (its
allocation is refused under an address-space limit, see memory_probe_child), so the gateway
refuses it without growing, and without the machine running out of memory and the kernel's
OOM killer choosing a victim: the child, not the gateway, if it comes to that (the child's
OOM score is the highest). The child dies with the gateway (PR_SET_PDEATHSIG), is killed at
the timeout or on cancellation, and is always reaped here.

The gateway does not also watch the child's RSS from outside: RSS counts the pages of the
child's address space that are in memory, and the address space is what the limit caps, so
an RSS watch could only fire after the limit had (the one gap, pages mapped before the limit
was set and first touched after, is the interpreter's and onnxruntime's own code and data,
about 90 MiB). Polling would add a thread's wake-ups for no protection.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.models.memory_probe_child import ALLOCATION_FAILURES
from gateway.models.ort_errors import rejection_reason, without_source_locations
from gateway.process.cgroups import CGROUP_ROOT, OWN_CGROUPS, memory_limits

__all__ = [
    "ProbeFailed",
    "ProbeResult",
    "default_memory_budget",
    "memory_limit_bytes",
    "probe_version",
]

_CHILD_MODULE = "gateway.models.memory_probe_child"
_POLL_SECONDS = 0.05  # how soon `cancelled` is noticed
_GIB = 1 << 30
_MIB = 1 << 20
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # onnxruntime colours its log lines on stderr
_MAX_DETAIL = 300


class ProbeFailed(Exception):
    """The probe refused the version: the message is its FAILED reason; `kind` labels the
    load-failure metric: artifact, memory, timeout, rejected or cancelled."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a version that passed needed."""

    # Peak RSS of the child during session creation and warm-up, above its RSS just before.
    peak_rss_bytes: int
    seconds: float  # the whole probe: the child's start and imports included


def default_memory_budget() -> int:
    """A quarter of the memory this process may use: the tightest memory cgroup limit over
    it (cgroup v2 or v1), else the machine's memory.

    A quarter, because one budget must fit several times at once: versions load on several
    threads, each probe runs next to the serving process (which holds every version already
    loaded), and a version that passes is then loaded once more, in the serving process, while
    its probe is still giving its memory back.
    """
    return memory_limit_bytes() // 4


def memory_limit_bytes() -> int:
    """The memory this process may use: the tightest cgroup limit over it, else the machine's."""
    return _available_memory(Path("/proc/meminfo"), OWN_CGROUPS, CGROUP_ROOT)


def _available_memory(meminfo: Path, own_cgroups: Path, cgroup_root: Path) -> int:
    """The least of the machine's memory and the memory limits of this process's cgroups."""
    return min([_mem_total(meminfo), *memory_limits(own_cgroups, cgroup_root)])


def _mem_total(meminfo: Path) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def probe_version(
    path: Path,
    sha256: str,
    budget_bytes: int,
    timeout_seconds: float,
    intra_op_threads: int,
    inter_op_threads: int,
    cancelled: threading.Event | None = None,
) -> ProbeResult:
    """Load `path` and run one warm-up in a child process allowed `budget_bytes` of memory.

    Raises ProbeFailed when the artifact's sha256 is not `sha256` (empty: not checked), when
    onnxruntime rejects the model or fails its warm-up, when the version needs more than the
    budget, when the probe has not finished `timeout_seconds` after it started (the child's
    start included), or within 50 ms of `cancelled` being set. The child is gone when this
    returns or raises, whatever happened.
    """
    if budget_bytes <= 0:
        raise ValueError(f"budget_bytes must be > 0, not {budget_bytes}")
    request = {
        "path": os.fspath(path),
        "sha256": sha256,
        "budget_bytes": budget_bytes,
        "intra_op_threads": intra_op_threads,
        "inter_op_threads": inter_op_threads,
        "parent_pid": os.getpid(),
    }
    started = time.monotonic()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", _CHILD_MODULE, json.dumps(request)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_environment(),
            # A group of its own: killed as a whole, and out of reach of signals sent to the
            # gateway's group (a terminal's Ctrl-C); the gateway decides when it ends.
            start_new_session=True,
        )
    except OSError as exc:  # no process, nothing to clean up
        raise ProbeFailed(
            f"memory probe: cannot start the probe process: {exc}", "rejected"
        ) from exc
    with child:
        try:
            stdout, stderr = _communicate(child, started, timeout_seconds, cancelled)
        finally:
            if child.returncode is None:  # not reaped: its pid is still its group's id
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Leaving the block closes the pipes and reaps the child.
    seconds = time.monotonic() - started
    outcome = _outcome(stdout)
    if outcome is None:
        raise _died(child.returncode, stderr)
    return _result(outcome, sha256, budget_bytes, seconds)


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    # No per-thread malloc arenas in the child: each reserves 64 MiB of address space that the
    # limit would count as memory (see memory_probe_child._limit_address_space).
    env["MALLOC_ARENA_MAX"] = "1"
    # numpy's OpenBLAS would start a thread per core at import, for nothing: the child does no
    # linear algebra in numpy. On a busy machine that is a good part of the child's start.
    env["OPENBLAS_NUM_THREADS"] = "1"
    # The child imports this same gateway package, wherever this process imported it from.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _communicate(
    child: subprocess.Popen[bytes],
    started: float,
    timeout_seconds: float,
    cancelled: threading.Event | None,
) -> tuple[bytes, bytes]:
    """The child's stdout and stderr once it has exited; ProbeFailed at the timeout or when
    cancelled (the caller kills it)."""
    while True:
        if cancelled is not None and cancelled.is_set():
            raise ProbeFailed("memory probe: cancelled", "cancelled")
        remaining = started + timeout_seconds - time.monotonic()
        if remaining <= 0:
            raise ProbeFailed(
                f"memory probe: did not finish within {timeout_seconds:.1f} s", "timeout"
            )
        try:
            # Both pipes are drained as the child writes, so it never blocks on a full one.
            stdout, stderr = child.communicate(
                timeout=remaining if cancelled is None else min(remaining, _POLL_SECONDS)
            )
        except subprocess.TimeoutExpired:
            continue  # communicate() keeps what it has read for the next call
        return stdout, stderr


def _outcome(stdout: bytes) -> dict[str, Any] | None:
    lines = stdout.decode(errors="replace").split("\n")
    try:
        outcome = json.loads(next((line for line in reversed(lines) if line.strip()), ""))
    except ValueError:
        return None
    return outcome if isinstance(outcome, dict) else None


def _size(num_bytes: int) -> str:
    return f"{num_bytes / _GIB:.1f} GiB" if num_bytes >= _GIB else f"{num_bytes / _MIB:.0f} MiB"


def _result(outcome: dict[str, Any], sha256: str, budget_bytes: int, seconds: float) -> ProbeResult:
    error = outcome.get("error")
    message = str(outcome.get("message", ""))
    if error is None:
        return ProbeResult(int(outcome["peak_rss_bytes"]), seconds)
    if error == "memory":
        raise ProbeFailed(
            f"memory probe: {outcome['stage']} needs more than the version memory budget of"
            f" {_size(budget_bytes)} (--max-version-memory-bytes); not loaded",
            "memory",
        )
    if error == "read":
        raise ProbeFailed(f"memory probe: cannot read artifact: {message}", "artifact")
    if error == "sha256":
        raise ProbeFailed(
            f"memory probe: sha256 mismatch: the registry has {sha256[:12]}..., the artifact"
            f" has {str(outcome['sha256'])[:12]}...; the file changed after it was registered",
            "artifact",
        )
    # onnxruntime's own refusals read as they would without the probe: they are the model's.
    if error == "rejected":
        raise ProbeFailed(rejection_reason(message), "rejected")
    if error == "warm-up":
        raise ProbeFailed(f"warm-up run failed: {without_source_locations(message)}", "rejected")
    raise ProbeFailed(f"memory probe: {message or error}", "rejected")  # e.g. its signature


def _died(returncode: int | None, stderr: bytes) -> ProbeFailed:
    """The failure for a child that ended without an outcome (a crash, a kill from outside)."""
    lines = _COLOURS.sub("", stderr.decode(errors="replace")).strip().splitlines()
    detail = without_source_locations(lines[-1].strip())[:_MAX_DETAIL] if lines else ""
    kind = "rejected"
    if returncode is not None and returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown"
        reason = f"memory probe: the probe process died (signal {number}, {name})"
        if number == signal.SIGKILL:  # not from here: this process kills only after giving up
            reason += ", killed from outside, most likely by the kernel's OOM killer"
            kind = "memory"
    else:
        reason = f"memory probe: the probe process exited with status {returncode}"
    # A child that could not unwind from a refused allocation (the C++ runtime aborts).
    if any(marker in detail.lower() for marker in ALLOCATION_FAILURES):
        kind = "memory"
    return ProbeFailed(f"{reason}: {detail}" if detail else reason, kind)

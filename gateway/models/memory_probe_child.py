"""The memory probe's child process: load and warm one version up under a memory limit.

Started by gateway.models.memory_probe as `python -m gateway.models.memory_probe_child REQUEST`,
REQUEST a JSON object (path, sha256, budget_bytes, intra_op_threads, inter_op_threads,
parent_pid). It prints one JSON line: {"peak_rss_bytes": N} when the version loaded and ran,
else {"error": KIND, ...} with the raw details; the parent turns those into the FAILED reason.
Its imports are kept to onnxruntime, numpy and two import-light gateway modules, so that the
probe costs a Python start and an onnxruntime import, not the gateway's.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort

from gateway.models.ort_errors import ORT_ERRORS, session_options
from gateway.models.signature import SignatureError, read_signature, warmup_feeds

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LOAD_ERRORS: tuple[type[Exception], ...] = (MemoryError, *ORT_ERRORS)
# What onnxruntime, the C++ runtime, Python and the kernel say when an allocation is refused:
# under the address-space limit that is the budget running out.
ALLOCATION_FAILURES = ("failed to allocate", "bad_alloc", "bad allocation", "cannot allocate",
                       "memoryerror")  # fmt: skip
# glibc gives a thread this much stack when RLIMIT_STACK is unlimited (2 MiB on most
# architectures, 4 MiB on POWER and SPARC64).
_UNLIMITED_STACK_DEFAULT = 4 << 20


def _die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL this process when the gateway dies; False if it already has.

    The signal is sent when the thread that started this process exits: that thread waits in
    probe_version until this process ends, so it only exits with the gateway.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Another parent: the gateway died before the request was made, and no signal will come.
    return os.getppid() == parent_pid


def _prefer_as_oom_victim() -> None:
    """Should the machine run out of memory anyway, the kernel's OOM killer takes this process
    (the highest score there is) before the gateway. Raising one's own score needs no privilege."""
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:
        pass


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmRSS, VmSize, ...), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024
    raise LookupError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Make the peak RSS (VmHWM) start again from the current RSS, so that the peak measured is
    the version's, not the imports' before it (Linux >= 4.0); without it, the peak since the
    process started is an upper bound."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _thread_headroom(intra_op_threads: int) -> int:
    """Address space the session's thread pool reserves for stacks, not memory it uses: the
    intra-op pool starts one thread fewer than its size (0: one per core), the calling thread
    being one of them; sequential execution has no inter-op pool."""
    threads = (intra_op_threads or os.cpu_count() or 1) - 1
    stack, _ = resource.getrlimit(resource.RLIMIT_STACK)
    return threads * (_UNLIMITED_STACK_DEFAULT if stack == resource.RLIM_INFINITY else stack)


def _limit_address_space(budget_bytes: int, headroom: int) -> None:
    """Let this process map at most `budget_bytes` (plus `headroom`) more than it has mapped.

    Address space (RLIMIT_AS), not RSS: the kernel checks it when memory is mapped, so an
    allocation beyond the budget fails inside onnxruntime, which reports it and unwinds, before
    a page of it is touched. Nothing checks RSS as it grows; only the OOM killer acts, once the
    machine is out of memory, and then it may pick any process. Address space counts memory
    mapped but never touched as well, so glibc's per-thread malloc arenas (64 MiB of address
    space each, little of it used) are turned off in this process (MALLOC_ARENA_MAX=1, set by
    the parent), and thread stacks are allowed for in `headroom`. The hard limit is set too, so
    nothing in this process can raise it.
    """
    limit = _status_bytes("VmSize") + budget_bytes + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _failure(stage: str, exc: Exception) -> dict[str, Any]:
    message = str(exc)
    if isinstance(exc, MemoryError) or any(m in message.lower() for m in ALLOCATION_FAILURES):
        return {"error": "memory", "stage": stage, "message": message}
    return {"error": "rejected" if stage == "session creation" else "warm-up",
            "stage": stage, "message": message}  # fmt: skip


def probe(request: dict[str, Any]) -> dict[str, Any]:
    """Read, verify, create the session and run it once under the budget; the JSON outcome."""
    try:
        data = Path(request["path"]).read_bytes()
    except OSError as exc:
        return {"error": "read", "message": exc.strerror or str(exc)}
    digest = hashlib.sha256(data).hexdigest()
    if request["sha256"] and digest != request["sha256"]:
        return {"error": "sha256", "sha256": digest}
    intra, inter = request["intra_op_threads"], request["inter_op_threads"]
    baseline = _status_bytes("VmRSS")
    _reset_peak_rss()
    _limit_address_space(request["budget_bytes"], _thread_headroom(intra))
    try:
        session = ort.InferenceSession(
            data, sess_options=session_options(intra, inter), providers=["CPUExecutionProvider"]
        )
    except _LOAD_ERRORS as exc:
        return _failure("session creation", exc)
    try:
        signature = read_signature(session.get_inputs(), session.get_outputs())
    except SignatureError as exc:
        return {"error": "signature", "message": str(exc)}
    try:
        session.run(None, warmup_feeds(signature))
    except _LOAD_ERRORS as exc:
        return _failure("warm-up", exc)
    # VmHWM, not ru_maxrss: exec hands the parent's peak RSS on to ru_maxrss (the kernel keeps
    # the larger of the two), and the parent is the gateway, with its versions loaded.
    return {"peak_rss_bytes": max(_status_bytes("VmHWM") - baseline, 0)}


def main(argv: list[str]) -> int:
    request = json.loads(argv[1])
    if not _die_with_parent(request["parent_pid"]):
        return 1
    _prefer_as_oom_victim()
    # The outcome goes to the original stdout; anything a library prints there meanwhile goes
    # to stderr instead, so that it cannot be mistaken for the outcome.
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    outcome = probe(request)
    result.write(json.dumps(outcome) + "\n")
    result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

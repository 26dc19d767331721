"""Opt-in memory probes inside a running gateway, for benchmarks/memory_growth.py.

The driver loads this into the gateway through a generated sitecustomize.py on PYTHONPATH, so
the gateway still runs its own unmodified `onnxgate serve` command. With HOOK_DIR_ENV set,
install() starts a daemon thread that watches that directory: for each `<name>.request` file
the driver writes, it writes `<name>.json` with glibc's malloc totals (mallinfo2: bytes in use
vs free inside malloc, which tells a leak from fragmentation), CPython's small-object
allocator totals (arenas of 1 MiB, bytes in live blocks; from sys._debugmallocstats, which
writes to fd 2: that fd points to a file for those few milliseconds, so a gateway log line
written meanwhile lands there) and, when TRACE_FRAMES_ENV is above 0 (tracemalloc started at
install), a tracemalloc snapshot to `<name>.snapshot`. Files
appear under a temporary name and are renamed when complete, so the driver never reads half a
file. Standard library only: it must not change what the gateway imports or allocates beyond
its own small cost (and tracemalloc's large one, when asked for).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

# Not ONNXGATE_*: the gateway reads every variable with that prefix as one of its settings.
HOOK_DIR_ENV = "MEMORY_GROWTH_HOOK_DIR"
TRACE_FRAMES_ENV = "MEMORY_GROWTH_TRACEMALLOC_FRAMES"
POLL_S = 0.1
# sys._debugmallocstats lines kept, by the name they are stored under.
PYMALLOC_LINES = {
    "# arenas allocated current": "arenas_current",
    "# arenas highwater mark": "arenas_highwater",
    "# bytes in allocated blocks": "allocated_bytes",
    "# bytes in available blocks": "available_bytes",
}
MALLINFO2_FIELDS = (
    "arena",  # bytes obtained with sbrk and in thread arena heaps (not mmap'd chunks)
    "ordblks",  # free chunks
    "smblks",
    "hblks",  # chunks mmap'd on their own (large allocations)
    "hblkhd",  # bytes in those
    "usmblks",
    "fsmblks",
    "uordblks",  # bytes in use, arenas only
    "fordblks",  # bytes free inside arenas: fragmentation when it grows
    "keepcost",
)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


def sitecustomize_source() -> str:
    """The sitecustomize.py that loads this file into another interpreter, then takes this
    directory off sys.path again (it holds modules named like common ones: models, load)."""
    here = str(Path(__file__).resolve().parent)
    return (
        "import sys\n"
        f"sys.path.insert(0, {here!r})\n"
        "import memory_hook\n"
        f"sys.path.remove({here!r})\n"
        "memory_hook.install()\n"
    )


def mallinfo2() -> dict[str, int]:
    """glibc's malloc totals over every arena (glibc 2.33+); empty elsewhere."""
    try:
        call = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return {}
    call.restype = _Mallinfo2
    info = call()
    return {name: int(getattr(info, name)) for name in MALLINFO2_FIELDS}


def pymalloc() -> dict[str, int]:
    """CPython obmalloc totals: its 1 MiB arenas are only returned to the system when every
    block in them is free, so arenas growing while live bytes do not is fragmentation. While
    tracemalloc wraps the allocator, CPython prints no obmalloc figures: blocks only then."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    stats = {"allocated_blocks": sys.getallocatedblocks()}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in PYMALLOC_LINES:
            stats[PYMALLOC_LINES[key.strip()]] = int(value.strip().replace(",", ""))
    return stats


def dump(directory: Path, name: str) -> None:
    """Answer the request `name`: malloc totals, plus a snapshot when tracing."""
    totals: dict[str, object] = {"mallinfo2": mallinfo2(), "pymalloc": pymalloc()}
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        totals |= {
            "traced_bytes": current,
            "traced_peak_bytes": peak,
            "tracemalloc_overhead_bytes": tracemalloc.get_tracemalloc_memory(),
        }
        partial = directory / f"{name}.snapshot.partial"
        snapshot.dump(str(partial))
        partial.rename(directory / f"{name}.snapshot")
    partial = directory / f"{name}.json.partial"
    partial.write_text(json.dumps(totals))
    partial.rename(directory / f"{name}.json")  # last: the driver waits for this one


def watch(directory: Path) -> None:
    """Serve requests forever; a failure is written where the driver looks."""
    while True:
        for request in sorted(directory.glob("*.request")):
            try:
                dump(directory, request.stem)
            except Exception as err:  # report any failure to the driver instead of dying
                (directory / f"{request.stem}.error").write_text(repr(err))
            request.unlink(missing_ok=True)
        time.sleep(POLL_S)


def install() -> None:
    """Start the watcher (and tracing, if asked) when HOOK_DIR_ENV names a directory."""
    directory = os.environ.get(HOOK_DIR_ENV)
    if not directory:
        return
    frames = int(os.environ.get(TRACE_FRAMES_ENV, "0"))
    if frames > 0:
        tracemalloc.start(frames)
    thread = threading.Thread(
        target=watch, args=(Path(directory),), name="memory-hook", daemon=True
    )
    thread.start()

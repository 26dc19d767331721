"""What the memory probe adds to a version's load, on the tiny classifier.

- probe: probe_version() as the loader calls it (child start, imports, sha256, session
  creation, warm-up, exit and reap), wall time, and the child's CPU time (user + system),
  which a busy machine changes less.
- of which start and imports: a child (with the probe child's environment) that only starts
  Python and imports what the probe's child imports (onnxruntime, numpy, two gateway
  modules), wall time.
- for comparison: session creation and warm-up in this process, as the loader does them.

Each is the median of --runs runs (5), after one unmeasured run to warm the page cache.

    python -m benchmarks.memory_probe_cost [--runs 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from benchmarks.models import build_tiny
from gateway.models import memory_probe
from gateway.models.memory_probe import default_memory_budget, probe_version
from gateway.models.signature import read_signature, warmup_feeds

CHILD_IMPORTS = "import onnxruntime, numpy, gateway.models.signature, gateway.models.ort_errors"


def median_seconds(runs: int, work: Callable[[], object]) -> float:
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_process(data: bytes, threads: int) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, ["CPUExecutionProvider"])
    session.run(None, warmup_feeds(read_signature(session.get_inputs(), session.get_outputs())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny(Path(tmp) / "model.onnx")
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        budget = default_memory_budget()
        peaks: list[int] = []
        cpu: list[float] = []

        def probe() -> None:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = probe_version(path, sha256, budget, 120.0, args.threads, 1)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child is reaped
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            peaks.append(result.peak_rss_bytes)

        probe_s = median_seconds(args.runs, probe)
        env = memory_probe._child_environment()  # the probe's child's, to compare like with like
        start_s = median_seconds(
            args.runs,
            lambda: subprocess.run([sys.executable, "-c", CHILD_IMPORTS], env=env, check=True),
        )
        load_s = median_seconds(args.runs, lambda: in_process(data, args.threads))
    print(f"tiny classifier ({len(data):,} B),"
          f" {args.threads} intra-op thread(s), budget {budget / 2**30:.1f} GiB,"
          f" median of {args.runs}")  # fmt: skip
    print(f"probe: {probe_s * 1000:.0f} ms, the child's CPU time"
          f" {statistics.median(cpu[1:]) * 1000:.0f} ms (peak RSS above its baseline:"
          f" {statistics.median(peaks) / 2**20:.1f} MiB)")  # fmt: skip
    print(f"  of which start and imports: {start_s * 1000:.0f} ms")
    print(f"in-process session creation and warm-up: {load_s * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

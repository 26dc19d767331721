"""The memory probe on real onnxruntime child processes: what passes, what it refuses and why,
and that no probe process outlives its call or grows the gateway."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from gateway.models import memory_probe
from gateway.models.memory_probe import ProbeFailed, ProbeResult, probe_version
from tests.support import onnx_models

REPO_ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
MIB = 1 << 20
# Generous bounds for a busy 2-core machine: a probe starts a Python and imports onnxruntime.
STARTS_WITHIN = 30.0
ENDS_WITHIN = 5.0  # after its timeout or cancellation: the child is killed, not waited for


def artifact(tmp_path: Path, model: onnx.ModelProto, name: str = "model.onnx") -> tuple[Path, str]:
    path = tmp_path / name
    onnx.save(model, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def probe(path: Path, sha256: str, budget: int = GIB, timeout: float = 60.0, threads: int = 1,
          cancelled: threading.Event | None = None) -> ProbeResult:  # fmt: skip
    return probe_version(path, sha256, budget, timeout, threads, 1, cancelled)


def processes_probing(path: Path) -> list[int]:
    """Processes anywhere on the machine whose command line names `path`: a probe's child,
    an orphan included, until it has exited."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.fsencode(path) in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return found


def children() -> set[int]:
    """This process's children, running or zombies (not yet reaped)."""
    own, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == own:  # field 4, after "(comm)"
                found.add(int(entry.name))
    return found


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def no_process_left(tmp_path: Path) -> Iterator[None]:
    """After the test: no probe process under tmp_path alive, and no child left unreaped."""
    before = children()
    yield
    assert processes_probing(tmp_path) == []
    assert children() <= before


def started_child(path: Path) -> int:
    """The probe child's pid, once it has set itself up to die with its parent and to be the
    OOM killer's first choice (its oom_score_adj is then 1000); checked every 10 ms."""
    waiting = threading.Event()
    deadline = time.monotonic() + STARTS_WITHIN
    while time.monotonic() < deadline:
        for pid in processes_probing(path):
            try:
                if Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000":
                    return pid
            except OSError:
                pass
        waiting.wait(0.01)
    raise AssertionError("the probe's child did not start")


def failing_warm_up() -> onnx.ModelProto:
    """index INT64 [N] -> Gather from an empty table: loads, and fails on the warm-up's zero."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "index"], ["value"], axis=0)],
        "failing_warm_up",
        [helper.make_tensor_value_info("index", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("table", TensorProto.FLOAT, [0], [])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "model",
    [onnx_models.memory_bomb(1 / 1024), onnx_models.looping_classifier(seed=0, fixed_trips=1000)],
    ids=["bomb", "loop"],
)
def test_the_test_models_answer_as_the_classifier(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    expected = ort.InferenceSession(
        onnx_models.classifier().SerializeToString(), options, ["CPUExecutionProvider"]
    ).run(None, {"input": x})
    got = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-6)


def test_a_classifier_passes_with_a_plausible_peak(tmp_path: Path, no_process_left):
    result = probe(*artifact(tmp_path, onnx_models.classifier()))
    assert 0 < result.peak_rss_bytes < 200 * MIB
    assert 0 < result.seconds < STARTS_WITHIN


def test_the_peak_is_what_the_warm_up_allocates(tmp_path: Path, no_process_left):
    result = probe(*artifact(tmp_path, onnx_models.memory_bomb(0.25)))
    assert 256 * MIB <= result.peak_rss_bytes < 256 * MIB + 100 * MIB


def test_thread_stacks_are_not_counted_as_memory(tmp_path: Path, no_process_left):
    # 4 intra-op threads reserve 24 MiB of stacks and, with glibc's default per-thread malloc
    # arenas, 64 MiB of address space each: far more than this budget, none of it used.
    result = probe(*artifact(tmp_path, onnx_models.classifier()), budget=48 * MIB, threads=4)
    assert 0 < result.peak_rss_bytes < 48 * MIB


def test_a_version_over_the_budget_is_refused_quickly_without_growing_the_gateway(
    tmp_path: Path, no_process_left
):
    path, sha256 = artifact(tmp_path, onnx_models.memory_bomb(8))
    before = rss_bytes()
    started = time.monotonic()
    with pytest.raises(ProbeFailed) as failed:
        probe(path, sha256, budget=GIB)
    assert time.monotonic() - started < STARTS_WITHIN
    assert rss_bytes() - before < 8 * MIB
    assert failed.value.kind == "memory"
    assert str(failed.value) == (
        "memory probe: warm-up needs more than the version memory budget of 1.0 GiB"
        " (--max-version-memory-bytes); not loaded"
    )


def test_a_probe_that_runs_too_long_is_killed_at_its_timeout(tmp_path: Path, no_process_left):
    path, sha256 = artifact(tmp_path, onnx_models.looping_classifier(seed=0, fixed_trips=10**9))
    started = time.monotonic()
    with pytest.raises(ProbeFailed) as failed:
        probe(path, sha256, timeout=2.0)
    assert 2.0 <= time.monotonic() - started < 2.0 + ENDS_WITHIN
    assert failed.value.kind == "timeout"
    assert str(failed.value) == "memory probe: did not finish within 2.0 s"


def test_cancelling_ends_a_running_probe_promptly(tmp_path: Path, no_process_left):
    path, sha256 = artifact(tmp_path, onnx_models.looping_classifier(seed=0, fixed_trips=10**9))
    cancelled = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future: Future[ProbeResult] = pool.submit(probe, path, sha256, GIB, 120.0, 1, cancelled)
        child = started_child(path)
        started = time.monotonic()
        cancelled.set()
        with pytest.raises(ProbeFailed) as failed:
            future.result(timeout=ENDS_WITHIN)
        assert time.monotonic() - started < ENDS_WITHIN
    assert failed.value.kind == "cancelled"
    assert str(failed.value) == "memory probe: cancelled"
    assert not Path(f"/proc/{child}").exists()


def test_a_probe_cancelled_before_it_starts_does_not_run(tmp_path: Path, no_process_left):
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(ProbeFailed, match=r"^memory probe: cancelled$"):
        probe(
            *artifact(tmp_path, onnx_models.looping_classifier(seed=0, fixed_trips=10**9)),
            timeout=120.0,
            cancelled=cancelled,
        )


def test_a_probe_killed_from_outside_is_reported_as_memory(tmp_path: Path, no_process_left):
    # As the kernel's OOM killer would: SIGKILL, which the probe itself sends only after it has
    # given up on the child.
    path, sha256 = artifact(tmp_path, onnx_models.looping_classifier(seed=0, fixed_trips=10**9))
    with ThreadPoolExecutor(1) as pool:
        future: Future[ProbeResult] = pool.submit(probe, path, sha256, GIB, 120.0)
        os.kill(started_child(path), signal.SIGKILL)
        with pytest.raises(ProbeFailed) as failed:
            future.result(timeout=ENDS_WITHIN)
    assert failed.value.kind == "memory"
    assert str(failed.value).startswith(
        "memory probe: the probe process died (signal 9, SIGKILL), killed from outside"
    )


def test_the_probe_dies_with_the_gateway(tmp_path: Path, no_process_left):
    path, sha256 = artifact(tmp_path, onnx_models.looping_classifier(seed=0, fixed_trips=10**9))
    gateway = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path;"
         " from gateway.models.memory_probe import probe_version;"
         " probe_version(Path(sys.argv[1]), sys.argv[2], 2**30, 120.0, 1, 1)",
         str(path), sha256],
        cwd=REPO_ROOT, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        child = started_child(path)
    finally:
        gateway.kill()  # as the OOM killer would: no chance to clean up
        gateway.wait()
    waiting, deadline = threading.Event(), time.monotonic() + ENDS_WITHIN
    while processes_probing(path) and time.monotonic() < deadline:
        waiting.wait(0.01)
    assert processes_probing(path) == [], f"probe process {child} outlived its gateway"


def test_a_sha256_mismatch_is_refused(tmp_path: Path, no_process_left):
    path, sha256 = artifact(tmp_path, onnx_models.classifier())
    with pytest.raises(ProbeFailed) as failed:
        probe(path, hashlib.sha256(b"another model").hexdigest())
    assert failed.value.kind == "artifact"
    assert str(failed.value).startswith("memory probe: sha256 mismatch: the registry has ")
    assert f"the artifact has {sha256[:12]}..." in str(failed.value)


def test_an_empty_sha256_is_not_checked(tmp_path: Path, no_process_left):
    path, _ = artifact(tmp_path, onnx_models.classifier())
    assert probe(path, "").peak_rss_bytes > 0


def test_a_missing_artifact_is_refused(tmp_path: Path, no_process_left):
    with pytest.raises(ProbeFailed) as failed:
        probe(tmp_path / "missing.onnx", "")
    assert failed.value.kind == "artifact"
    assert str(failed.value) == "memory probe: cannot read artifact: No such file or directory"


def test_an_unparsable_file_gives_onnxruntimes_rejection(tmp_path: Path, no_process_left):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an ONNX model")
    with pytest.raises(ProbeFailed) as failed:
        probe(path, hashlib.sha256(path.read_bytes()).hexdigest())
    assert failed.value.kind == "rejected"
    reason = str(failed.value)
    assert reason.startswith("onnxruntime rejected the model: ")  # as without the probe
    assert "protobuf parsing failed" in reason


def test_a_failing_warm_up_is_refused_without_source_locations(tmp_path: Path, no_process_left):
    with pytest.raises(ProbeFailed) as failed:
        probe(*artifact(tmp_path, failing_warm_up()))
    assert failed.value.kind == "rejected"
    reason = str(failed.value)
    assert reason.startswith("warm-up run failed: ")
    assert "Gather" in reason
    assert "onnxruntime_src" not in reason


def test_a_budget_must_be_positive(tmp_path: Path):
    with pytest.raises(ValueError, match="budget_bytes"):
        probe(*artifact(tmp_path, onnx_models.classifier()), budget=0)


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def _own_cgroup_limits() -> list[int]:
    """The memory limits on this process's own cgroups (v2 and v1), where there are any."""
    limits = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, cgroup = line.split(":", 2)
        if controllers == "":
            files = [Path("/sys/fs/cgroup", cgroup.lstrip("/"), "memory.max")]
        elif "memory" in controllers.split(","):
            files = [Path("/sys/fs/cgroup/memory", cgroup.lstrip("/"), "memory.limit_in_bytes")]
        else:
            continue
        for file in files:
            if file.exists() and file.read_text().strip().isdigit():
                limits.append(int(file.read_text()))
    return limits


def test_the_default_budget_is_a_quarter_of_this_machines_memory():
    # On the machine this was written on no cgroup limits memory (v1 memory cgroup at
    # 9223372036854771712, no v2 memory.max): the budget is MemTotal / 4. Where a cgroup
    # limit below the machine's memory applies, it is that limit / 4.
    expected = min([_mem_total(), *_own_cgroup_limits()]) // 4
    assert memory_probe.default_memory_budget() == expected


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("own_cgroups", "files", "expected"),
    [
        # cgroup v2: no limit here, a limit on an ancestor
        ("0::/a/b\n", {"fs/a/b/memory.max": "max\n", "fs/a/memory.max": f"{GIB}\n"}, GIB),
        # cgroup v2 in a container: its own cgroup is the mount's root
        ("0::/\n", {"fs/memory.max": f"{2 * GIB}\n"}, 2 * GIB),
        ("0::/\n", {"fs/memory.max": "max\n"}, 16 * GIB),
        # cgroup v1: "unlimited" is a huge number; the tightest of the path's limits counts
        ("4:memory:/x/y\n0::/\n",
         {"fs/memory/x/y/memory.limit_in_bytes": "9223372036854771712\n",
          "fs/memory/x/memory.limit_in_bytes": f"{3 * GIB}\n"}, 3 * GIB),
        # a container that sees a deeper path than its mount holds: the mount's root counts
        ("4:cpu,memory:/docker/abc\n", {"fs/memory/memory.limit_in_bytes": f"{GIB}\n"}, GIB),
        ("", {}, 16 * GIB),
    ],
)  # fmt: skip
def test_the_tightest_cgroup_limit_counts(tmp_path: Path, own_cgroups, files, expected):
    _tree(tmp_path, {"meminfo": f"MemTotal:       {16 * GIB // 1024} kB\n", "cgroup": own_cgroups,
                     **files})  # fmt: skip
    (tmp_path / "fs").mkdir(exist_ok=True)
    available = memory_probe._available_memory(
        tmp_path / "meminfo", tmp_path / "cgroup", tmp_path / "fs"
    )
    assert available == expected

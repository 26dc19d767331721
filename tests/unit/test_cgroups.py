"""How many CPUs `--workers auto` counts: affinity, capped by the tightest cgroup CPU quota."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.process.cgroups import available_cpus, cpu_capacity, cpu_quota


def _tree(root: Path, own_cgroups: str, files: dict[str, str]) -> tuple[Path, Path]:
    (root / "fs").mkdir()
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "cgroup").write_text(own_cgroups)
    return root / "cgroup", root / "fs"


@pytest.mark.parametrize(
    ("own_cgroups", "files", "quota"),
    [
        # cgroup v2 in a container: its own cgroup is the mount's root (Kubernetes 1500m)
        ("0::/\n", {"fs/cpu.max": "150000 100000\n"}, 1.5),
        ("0::/\n", {"fs/cpu.max": "max 100000\n"}, None),
        # v2: no quota of its own, a quota on an ancestor; the tightest level counts
        ("0::/pod/app\n", {"fs/pod/app/cpu.max": "max 100000\n",
                            "fs/pod/cpu.max": "300000 100000\n", "fs/cpu.max": "400000 100000\n"},
         3.0),
        # cgroup v1, as Docker mounts it: "-1" is no quota
        ("4:cpu,cpuacct:/docker/abc\n", {"fs/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
                                         "fs/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 0.5),
        ("4:cpu,cpuacct:/\n", {"fs/cpu/cpu.cfs_quota_us": "-1\n",
                               "fs/cpu/cpu.cfs_period_us": "100000\n"}, None),
        # unreadable or missing files and no cgroups at all: no quota
        ("0::/\n", {}, None),
        ("", {}, None),
        ("0::/\n", {"fs/cpu.max": "garbage\n"}, None),
    ],
)  # fmt: skip
def test_the_tightest_cpu_quota_over_the_process_counts(tmp_path, own_cgroups, files, quota):
    own, root = _tree(tmp_path, own_cgroups, files)
    assert cpu_quota(own, root) == quota


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("250000 100000", 2), ("150000 100000", 1), ("50000 100000", 1), ("max 100000", None)],
)
def test_available_cpus_rounds_a_quota_down_and_never_below_one(tmp_path, cpu_max, expected):
    own, root = _tree(tmp_path, "0::/\n", {"fs/cpu.max": cpu_max})
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(own, root) == (affinity if expected is None else min(affinity, expected))


def test_a_quota_above_the_cpus_it_may_run_on_counts_the_cpus(tmp_path):
    own, root = _tree(tmp_path, "0::/\n", {"fs/cpu.max": "6400000 100000"})  # 64 CPUs
    assert available_cpus(own, root) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cpu_max", "quota"), [("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_cpu_capacity_is_a_fractional_quota_under_the_cpus(tmp_path, cpu_max, quota):
    """What the shadows' CPU headroom divides by: a quota of 1.5 CPUs is busy at 1.5, not 1."""
    own, root = _tree(tmp_path, "0::/\n", {"fs/cpu.max": cpu_max})
    assert cpu_capacity(own, root) == min(float(len(os.sched_getaffinity(0))), quota)


def test_a_quota_of_zero_is_no_quota(tmp_path):
    own, root = _tree(tmp_path, "0::/\n", {"fs/cpu.max": "0 100000"})
    assert cpu_quota(own, root) is None

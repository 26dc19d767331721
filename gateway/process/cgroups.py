"""What this process's cgroups allow it: memory, and CPUs for `--workers auto`.

A container often sees its own cgroup at the mount's root while /proc/self/cgroup names a
deeper path; walking up to the root reads the container's limits either way. Each level
caps the levels under it, so the tightest wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["available_cpus", "cgroup_files", "cpu_capacity", "cpu_quota", "memory_limits"]

OWN_CGROUPS = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_files(
    own_cgroups: Path,
    cgroup_root: Path,
    v2_name: str,
    v1_controller: str,
    v1_names: tuple[str, ...],
) -> Iterator[list[str]]:
    """The contents of a controller's files in this process's cgroup and each ancestor: for
    cgroup v2 `v2_name` (one file), for v1 `v1_names` of `v1_controller`; "" for a file that
    cannot be read."""
    try:
        lines = own_cgroups.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names: tuple[str, ...]
        if controllers == "":  # cgroup v2
            base, names = cgroup_root, (v2_name,)
        elif v1_controller in controllers.split(","):
            base, names = cgroup_root / controllers, v1_names
            if not base.is_dir():  # "cpu,cpuacct" is mounted as such, or under "cpu"
                base = cgroup_root / v1_controller
        else:
            continue
        directory = base / path.lstrip("/")
        for candidate in (directory, *directory.parents):
            yield [_read(candidate / name) for name in names]
            if candidate == base:
                break


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def memory_limits(own_cgroups: Path = OWN_CGROUPS, cgroup_root: Path = CGROUP_ROOT) -> list[int]:
    """Memory limits of this process's cgroup and of its ancestors. cgroup v1 writes "no
    limit" as a huge number, which the machine's memory then undercuts."""
    found = cgroup_files(own_cgroups, cgroup_root, "memory.max", "memory",
                         ("memory.limit_in_bytes",))  # fmt: skip
    return [int(value) for (value,) in found if value.isdigit()]


def cpu_quota(own_cgroups: Path = OWN_CGROUPS, cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota over this process, in CPUs (a Kubernetes CPU limit of 1500m
    is 1.5), or None when no cgroup sets one."""
    quotas = []
    found = cgroup_files(own_cgroups, cgroup_root, "cpu.max", "cpu",
                         ("cpu.cfs_quota_us", "cpu.cfs_period_us"))  # fmt: skip
    for values in found:
        # v2: "QUOTA PERIOD" or "max PERIOD"; v1: QUOTA (-1: none) and PERIOD, two files.
        parts = values[0].split() if len(values) == 1 else values
        if len(parts) != 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            continue  # "max", "-1" or unreadable: no quota here
        quota, period = int(parts[0]), int(parts[1])
        if quota > 0 and period > 0:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def cpu_capacity(own_cgroups: Path = OWN_CGROUPS, cgroup_root: Path = CGROUP_ROOT) -> float:
    """How many CPUs' worth of time this process may use: the CPUs it may run on (taskset,
    cpusets), capped by its cgroups' CPU quota (1.5 under a Kubernetes limit of 1500m)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(own_cgroups, cgroup_root)
    return float(cpus) if quota is None else min(float(cpus), quota)


def available_cpus(own_cgroups: Path = OWN_CGROUPS, cgroup_root: Path = CGROUP_ROOT) -> int:
    """How many CPUs this process may keep busy: its cpu_capacity() rounded down, as Go's
    automaxprocs does (a worker beyond the quota is throttled, in pauses its requests feel),
    and at least one."""
    return max(1, math.floor(cpu_capacity(own_cgroups, cgroup_root)))

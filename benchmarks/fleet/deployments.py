"""The Redis under test, pinned to the server CPU: one redis-server, or a Redis Cluster of
three shards without replicas; and what INFO says of each node, before and after.

Every node runs with nothing saved (`--save ""`, no AOF): persistence is a cost of its own,
not the gateways'. All shards of the Cluster share the one server CPU here, so the Cluster
shows how the work spreads over shards, not what three machines would carry.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from benchmarks.servers import HOST, free_port

__all__ = ["Deployment", "NodeInfo", "deployment", "snapshot"]

KINDS = ("single", "cluster")
SHARDS = 3


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node's INFO at one moment: counters to subtract, gauges to read."""

    port: int
    cpu_seconds: float
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)
    processed: int
    net_in: int
    net_out: int
    used_memory: int
    clients: int
    keys: int


@dataclass
class Deployment:
    """A running deployment: its kind, the URL gateways use and its nodes' ports."""

    kind: str
    url: str
    ports: list[int]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, socket_timeout=30)


def _start_node(home: Path, cpu: str | None, *flags: str) -> tuple[int, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", HOST, "--dir", str(home), "--save", "",
               "--appendonly", "no", "--maxclients", "10000", *flags]  # fmt: skip
    pinned = ["taskset", "-c", cpu, *command] if cpu is not None else command
    process = subprocess.Popen(pinned, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis(host=HOST, port=port, socket_timeout=1).ping():
                return port, process
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server on port {port} did not start") from None
            time.sleep(0.05)


@contextmanager
def deployment(kind: str, work: Path, cpu: str | None) -> Iterator[Deployment]:
    """Start a deployment of `kind` ("single" or "cluster") under `work`; stopped on exit."""
    running = Deployment(kind, "", [])
    try:
        if kind == "single":
            port, process = _start_node(work / "single", cpu)
            running.ports, running.processes = [port], [process]
            running.url = f"redis://{HOST}:{port}/0"
        else:
            for shard in range(SHARDS):
                port, process = _start_node(
                    work / f"shard{shard}", cpu, "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()),
                )  # fmt: skip
                running.ports.append(port)
                running.processes.append(process)
            _create_cluster(running)
            running.url = "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in running.ports)
        yield running
    finally:
        for process in running.processes:
            process.terminate()
        for process in running.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _create_cluster(running: Deployment) -> None:
    cli = shutil.which("redis-cli") or "redis-cli"
    subprocess.run([cli, "--cluster", "create", *(f"{HOST}:{p}" for p in running.ports),
                    "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        states = [running.node(p).cluster("INFO") for p in running.ports]
        if all(_cluster_ok(state) for state in states):
            return
        if time.monotonic() > deadline:
            raise SystemExit("the Redis Cluster did not become ok within 30 s")
        time.sleep(0.1)


def _cluster_ok(state: Any) -> bool:
    if isinstance(state, bytes | str):  # redis-py may hand CLUSTER INFO back unparsed
        text = state.decode() if isinstance(state, bytes) else state
        return "cluster_state:ok" in text
    return bool(state.get("cluster_state") == "ok")


def snapshot(running: Deployment) -> list[NodeInfo]:
    """Every node's INFO now."""
    found = []
    for port in running.ports:
        info = running.node(port).info("all")
        commands = {
            name.removeprefix("cmdstat_"): (int(stats["calls"]), int(stats["usec"]))
            for name, stats in info.items()
            if name.startswith("cmdstat_")
        }
        keys = sum(int(v["keys"]) for k, v in info.items() if k.startswith("db") and
                   isinstance(v, dict))  # fmt: skip
        found.append(NodeInfo(
            port, float(info["used_cpu_sys"]) + float(info["used_cpu_user"]), commands,
            int(info["total_commands_processed"]), int(info["total_net_input_bytes"]),
            int(info["total_net_output_bytes"]), int(info["used_memory"]),
            int(info["connected_clients"]), keys,
        ))  # fmt: skip
    return found

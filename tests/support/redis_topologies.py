"""Real Redis deployments for tests beyond one server: a Redis Cluster made with
`redis-cli --cluster create`, and a primary with a replica watched by three Debian
`redis-sentinel` processes. Each on free ports under its own directory, stopped afterwards."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from tests.support.redis_server import free_port

SENTINEL_SERVICE = "registry"
DOWN_AFTER_MS = 1000  # how long a primary may not answer before the sentinels fail it over


def _binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: apt-get install -y {package}")
    return found


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.05)


class _Process:
    """One redis-server (or redis-sentinel) on a port of its own."""

    def __init__(self, command: list[str], port: int) -> None:
        self.port = port
        self._command = command
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def answers() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self._command[0]} on port {self.port} exited")
            return bool(self.client().ping())

        _wait(answers, f"port {self.port} answers")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=0.5)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown, no final save, sockets reset."""
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def _server(directory: Path, *args: str) -> _Process:
    port = free_port()
    home = directory / str(port)
    home.mkdir(parents=True)
    command = [
        _binary("redis-server", "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(home), "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not 5 s later
        *args,
    ]  # fmt: skip
    return _Process(command, port)


class RedisClusterDeployment:
    """A Redis Cluster of `masters` shards, each with `replicas` replicas, on 127.0.0.1;
    `url` to connect (redis+cluster://)."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1) -> None:
        # The bus port is the data port + 10000 unless given: free ports may be higher.
        cluster_flags = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", str(DOWN_AFTER_MS))  # fmt: skip
        self.nodes = [
            _server(directory, *cluster_flags, "--cluster-port", str(free_port()))
            for _ in range(masters * (1 + replicas))
        ]
        subprocess.run(
            [_binary("redis-cli", "redis-tools"), "--cluster", "create",
             *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.masters = masters
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        """Every live node sees the cluster ok, with a primary for each shard and each
        primary's replicas in sync."""

        def ready() -> bool:
            for node in self.live_nodes():
                if node.client().execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                    return False
            return len(self.primaries()) == self.masters and all(
                self._replicas_in_sync(primary) for primary in self.primaries()
            )

        _wait(ready, "the cluster is ok")

    def flush(self) -> None:
        """Empty every shard (replicas follow)."""
        for primary in self.primaries():
            primary.client().flushall()

    def live_nodes(self) -> list[_Process]:
        return [node for node in self.nodes if node.alive()]

    def primaries(self) -> list[_Process]:
        return [n for n in self.live_nodes() if n.client().execute_command("ROLE")[0] == b"master"]

    def primary_of(self, key: str) -> _Process:
        """The node serving the hash slot of `key` now."""
        any_node = self.live_nodes()[0].client()
        slot = int(any_node.execute_command("CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in any_node.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise RuntimeError(f"no node serves slot {slot}")

    def wait_until_promoted(self, key: str, old: _Process, timeout: float = 30.0) -> _Process:
        """Wait until another node serves the slot of `key` as primary, and every live node
        sees the cluster ok."""

        def promoted() -> bool:
            node = self.primary_of(key)
            ok = all(n.client().execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                     for n in self.live_nodes())  # fmt: skip
            return node is not old and ok and node.client().execute_command("ROLE")[0] == b"master"

        _wait(promoted, f"a replica serves the slot of {key}", timeout)
        return self.primary_of(key)

    def _replicas_in_sync(self, primary: _Process) -> bool:
        role = primary.client().execute_command("ROLE")
        replicas = role[2]
        return bool(replicas) and all(int(r[2]) == int(role[1]) for r in replicas)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelDeployment:
    """A primary and `replicas` replicas watched by three sentinels (quorum 2) on
    127.0.0.1; `url` to connect (redis+sentinel://.../SERVICE)."""

    def __init__(self, directory: Path, replicas: int = 1) -> None:
        self.servers = [_server(directory)]
        primary = self.servers[0].port
        for _ in range(replicas):
            self.servers.append(_server(directory, "--replicaof", "127.0.0.1", str(primary)))
        self.sentinels = [self._sentinel(directory, primary) for _ in range(3)]
        self.url = "redis+sentinel://" + ",".join(
            f"127.0.0.1:{s.port}" for s in self.sentinels
        ) + f"/{SENTINEL_SERVICE}"  # fmt: skip
        _wait(self._watched_whole, "every sentinel sees the replicas and the other sentinels")

    def _sentinel(self, directory: Path, primary: int) -> _Process:
        port = free_port()
        home = directory / f"sentinel-{port}"
        home.mkdir(parents=True)
        config = home / "sentinel.conf"  # the sentinel rewrites it: its own file
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {home}\n"
            f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
        )
        return _Process([_binary("redis-sentinel", "redis-sentinel"), str(config)], port)

    def _watched_whole(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            others = client.execute_command("SENTINEL", "SENTINELS", SENTINEL_SERVICE)
            replicas = client.execute_command("SENTINEL", "REPLICAS", SENTINEL_SERVICE)
            if len(others) != len(self.sentinels) - 1 or len(replicas) != len(self.servers) - 1:
                return False
        return all(self._in_sync(server) for server in self.servers if self._is_primary(server))

    def flush(self) -> None:
        """Empty the primary (its replicas follow)."""
        self.primary().client().flushall()

    def primary(self) -> _Process:
        """The server the sentinels name as primary now."""
        _, port = (
            self.sentinels[0]
            .client()
            .execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
        )
        return next(server for server in self.servers if server.port == int(port))

    def wait_for_new_primary(self, old: _Process, timeout: float = 30.0) -> _Process:
        """Wait until every sentinel names another primary, which answers as one."""

        def promoted() -> bool:
            named = {
                int(s.client().execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)[1])
                for s in self.sentinels
            }  # fmt: skip
            return len(named) == 1 and old.port not in named and self._is_primary(self.primary())

        _wait(promoted, "the sentinels promote a replica", timeout)
        return self.primary()

    def replicas_in_sync(self) -> bool:
        """Every replica has all the primary has written."""
        return self._in_sync(self.primary())

    def _is_primary(self, server: _Process) -> bool:
        return bool(server.alive() and server.client().execute_command("ROLE")[0] == b"master")

    def _in_sync(self, primary: _Process) -> bool:
        role = primary.client().execute_command("ROLE")
        return len(role[2]) == len(self.servers) - 1 and all(
            int(r[2]) == int(role[1]) for r in role[2]
        )

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop()

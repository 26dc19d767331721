"""Which worker process holds a client's TCP connection, read from Linux's /proc.

SO_REUSEPORT gives each new connection to one worker chosen by a hash; tests that need a
connection to a particular worker open channels until one lands there.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from tests.support.gateways import wait_until_ready

ESTABLISHED = "01"
# A channel of its own connection: by default channels with the same target share one.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _tcp_table() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every IPv4/IPv6 TCP socket."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                            state)  # fmt: skip
    return table


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def peer_ports(pid: int, server_port: int) -> set[int]:
    """Client ports of the established connections process `pid` accepted on server_port."""
    table = _tcp_table()
    return {
        table[i][1]
        for i in _socket_inodes(pid)
        if i in table and table[i][0] == server_port and table[i][2] == ESTABLISHED
    }


def own_client_ports(server_port: int) -> set[int]:
    """This process's local ports of its established connections to server_port."""
    table = _tcp_table()
    return {
        table[i][0]
        for i in _socket_inodes(os.getpid())
        if i in table and table[i][1] == server_port and table[i][2] == ESTABLISHED
    }


def connect_to_worker(address: str, port: int, workers: list[int]) -> tuple[grpc.Channel, int]:
    """A new channel with its own connection, and the pid of the worker that accepted it."""
    before = own_client_ports(port)
    channel = grpc.insecure_channel(address, options=OWN_CONNECTION)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    stub.ServerLive(pb.ServerLiveRequest(), timeout=10, wait_for_ready=True)
    (mine,) = own_client_ports(port) - before
    for pid in workers:
        if mine in peer_ports(pid, port):
            return channel, pid
    channel.close()
    raise AssertionError(f"no worker of {workers} holds the connection from port {mine}")


def channels_per_worker(
    address: str, port: int, workers: list[int], each: int, attempts: int = 60
) -> dict[int, list[grpc.Channel]]:
    """At least `each` channels connected to every worker (extra ones are closed), each
    worker ready (its versions loaded)."""
    by_worker: dict[int, list[grpc.Channel]] = {pid: [] for pid in workers}
    for _ in range(attempts):
        if all(len(c) >= each for c in by_worker.values()):
            for channels in by_worker.values():
                wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channels[0]))
            return by_worker
        channel, pid = connect_to_worker(address, port, workers)
        if len(by_worker[pid]) < each:
            by_worker[pid].append(channel)
        else:
            channel.close()
    raise AssertionError(f"connections did not reach every worker: {by_worker}")

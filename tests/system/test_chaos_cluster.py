"""Chaos across several gateways: the registry's Redis killed and restarted, or
blackholed for 20 s, under load on 3 gateways; subscriber connections reset during 20 rule
changes; SIGTERM to one of 3 gateway processes under load.

Each test prints its figures on one `CHAOS <case>: ...` line (`pytest -s`) for docs/reliability.md.
"""

from __future__ import annotations

import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.fault_proxy import FaultProxy
from tests.support.gateways import (
    GatewayProcess,
    eventually,
    make_gateway,
    register_credit,
    wait_until_ready,
)
from tests.support.redis_server import RedisServer
from tests.support.wire import infer_request

REQUEST = infer_request("credit", {"input": np.ones((1, 4), np.float32)})
GATEWAYS = 3
RESYNC_BOUND_SECONDS = 5.0  # the promised bound, from the moment Redis is reachable again
FAST = {"rules_poll_seconds": 0.2, "heartbeat_seconds": 0.2, "stats_flush_seconds": 0.2,
        "drift_flush_seconds": 0.2}  # fmt: skip
STATS_RANGE_SECONDS = 900  # covers the whole test, however the minute windows fall


class _ClientThreads:
    """Client threads over one channel per address; a context manager that stops them."""

    def __init__(self, addresses: list[str], threads: int, name: str) -> None:
        self._stop = threading.Event()
        self._channels = [grpc.insecure_channel(address) for address in addresses]
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}")
                         for i in range(threads)]  # fmt: skip

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for channel in self._channels:
            channel.close()


class _Load(_ClientThreads):
    """One client thread per address, each on its own channel, sending ModelInfer in a loop
    with a short pause; every answer is counted."""

    def __init__(self, addresses: list[str], pause_seconds: float = 0.01) -> None:
        self.ok = [0] * len(addresses)
        self.last_version = [""] * len(addresses)
        self.failures: list[tuple[int, str]] = []
        self._pause = pause_seconds
        super().__init__(addresses, len(addresses), "chaos-client")

    def _run(self, index: int) -> None:
        stub = pb_grpc.GRPCInferenceServiceStub(self._channels[index])
        while not self._stop.is_set():
            try:
                self.last_version[index] = stub.ModelInfer(REQUEST, timeout=10).model_version
                self.ok[index] += 1
            except grpc.RpcError as exc:
                self.failures.append((index, exc.code().name))
            self._stop.wait(self._pause)


@dataclass
class _Cluster:
    """One redis-server, a FaultProxy per gateway in front of it, and the gateways."""

    redis: RedisServer
    registry: RegistryClient  # connected to Redis directly, never through a proxy
    proxies: list[FaultProxy]
    gateways: list[Gateway]
    stopped: set[int] = field(default_factory=set)

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{g.grpc_port}" for g in self.gateways]

    def stop_gateways(self) -> None:
        """Drain every gateway; its flushers write what is left as they stop."""
        for index, gateway in enumerate(self.gateways):
            if index not in self.stopped:
                self.stopped.add(index)
                gateway.stop(grace_seconds=1)


@contextmanager
def _cluster(
    tmp_path: Path, settings: Mapping[str, object], *, persistent: bool = False
) -> Iterator[_Cluster]:
    data = tmp_path / "redis-data"
    data.mkdir()
    redis_server = RedisServer(data, persistent=persistent)
    registry = RegistryClient.from_url(redis_server.url)
    proxies: list[FaultProxy] = []
    cluster = _Cluster(redis_server, registry, proxies, [])
    try:
        register_credit(registry, tmp_path)
        for index in range(GATEWAYS):
            proxy = FaultProxy("127.0.0.1", redis_server.port).start()
            proxies.append(proxy)
            # In-process gateways share a hostname and pid: each needs its own replica id.
            cluster.gateways.append(
                make_gateway(None, redis_url=proxy.url, replica_id=f"gw{index}", **settings)
            )
        yield cluster
    finally:
        for proxy in proxies:
            proxy.restore()
        cluster.stop_gateways()
        for proxy in proxies:
            proxy.stop()
        registry.close()
        redis_server.stop()


def _seconds_until(checks: list[Callable[[], bool]], since: float, timeout: float) -> list[float]:
    """For each check, the seconds from `since` until it first held (polled every 5 ms);
    inf for one that did not hold within `timeout`."""
    found: list[float | None] = [None] * len(checks)
    deadline = time.monotonic() + timeout
    while None in found and time.monotonic() < deadline:
        for index, check in enumerate(checks):
            if found[index] is None and check():
                found[index] = time.monotonic() - since
        time.sleep(0.005)
    return [math.inf if f is None else round(f, 3) for f in found]


def _metric(gateway: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    return gateway.registry.get_sample_value(name, labels or {}) or 0.0


def _serves(gateway: Gateway, revision: int) -> Callable[[], bool]:
    def check() -> bool:
        route = gateway.routes.current().routes.get("credit")
        return route is not None and route.revision == revision

    return check


def _connected(gateway: Gateway) -> Callable[[], bool]:
    return lambda: _metric(gateway, "onnxgate_redis_connected") == 1


def _disconnected(gateway: Gateway) -> Callable[[], bool]:
    return lambda: _metric(gateway, "onnxgate_redis_connected") == 0


@dataclass(frozen=True)
class _Accounting:
    """What the clients were answered against what reached Redis, and what the gateways say
    they dropped."""

    ok: int
    stats_requests: int
    stats_errors: int
    sketch_rows: int
    sketch_dropped: int
    flush_failures: dict[str, int]
    replicas: int

    def line(self) -> str:
        return (f"ok={self.ok} stats_requests={self.stats_requests} sketch_rows="
                f"{self.sketch_rows} sketch_dropped={self.sketch_dropped} flush_failures="
                f"{self.flush_failures}")  # fmt: skip


def _total(gateways: list[Gateway], name: str, labels: dict[str, str]) -> int:
    """A counter summed over the gateways."""
    return int(sum(_metric(g, name, labels) for g in gateways))


def _account(cluster: _Cluster, load: _Load) -> _Accounting:
    """After every gateway stopped (and so flushed): the per-version statistics and sketch
    rows in Redis, summed over replicas, and the gateways' drop counters."""
    merged = cluster.registry.stats.read("credit", STATS_RANGE_SECONDS)
    primary = [s for (_, role), s in merged.by_version.items() if role == "primary"]
    drift = cluster.registry.drift
    rows = sum(drift.read("credit", v, STATS_RANGE_SECONDS).rows for v in ("1", "2"))
    gateways = cluster.gateways
    failures = {what: _total(gateways, "onnxgate_flush_failures_total", {"what": what})
                for what in ("statistics", "sketches")}  # fmt: skip
    dropped = _total(gateways, "onnxgate_sketch_dropped_total", {"model": "credit"})
    served = sum(_total(gateways, "onnxgate_requests_total", {"model": "credit", "version": v,
                                                              "role": "primary", "code": "OK"})
                 for v in ("1", "2"))  # fmt: skip
    assert served == sum(load.ok)  # the gateways' own count of what the clients were answered
    return _Accounting(
        sum(load.ok), sum(s.requests for s in primary), sum(s.error_count for s in primary),
        rows, dropped, failures, len(merged.replicas),
    )  # fmt: skip


def _assert_exact(accounting: _Accounting) -> None:
    # Statistics: windows are cumulative per replica and retried until written (kept 60
    # minutes in memory), so nothing may be missing; sketches: rows = answered - dropped.
    assert accounting.replicas == GATEWAYS
    assert accounting.stats_errors == 0
    assert accounting.stats_requests == accounting.ok
    assert accounting.sketch_rows == accounting.ok - accounting.sketch_dropped
    assert accounting.sketch_dropped == 0


@pytest.mark.timeout(90)
def test_redis_killed_and_restarted_under_load_on_3_gateways_loses_nothing(tmp_path):
    with _cluster(tmp_path, FAST, persistent=True) as cluster, _Load(cluster.addresses) as load:
        eventually(lambda: min(load.ok) > 20)
        cluster.redis.kill()
        killed = time.monotonic()
        noticed = _seconds_until([_disconnected(g) for g in cluster.gateways], killed, 10)
        during = sum(load.ok)
        time.sleep(2)  # serving on the last good rules
        served_blind = sum(load.ok) - during
        assert set(load.last_version) == {"1"}
        cluster.redis.start()  # same port, same data (append-only file)
        recovered = time.monotonic()
        outage = recovered - killed
        rule = cluster.registry.set_route("credit", [Split("1", 0), Split("2", 100)],
                                          actor="ops")  # fmt: skip
        written = time.monotonic() - recovered
        unaware = sum(not _connected(g)() for g in cluster.gateways)
        resync = _seconds_until([_serves(g, rule.revision) for g in cluster.gateways],
                                recovered, 15)  # fmt: skip
        reconnect = _seconds_until([_connected(g) for g in cluster.gateways], recovered, 15)
        eventually(lambda: set(load.last_version) == {"2"}, 5)
        time.sleep(0.5)  # answered on the new rule for a while
        load.stop()
        cluster.stop_gateways()
        accounting = _account(cluster, load)
    print(f"\nCHAOS redis-kill: failed={len(load.failures)} outage_s={outage:.2f}"
          f" disconnect_seen_s={noticed} served_during_outage={served_blind}"
          f" rule_written_after_s={written:.3f} gateways_disconnected_then={unaware}"
          f" resync_s={resync} reconnect_s={reconnect} {accounting.line()}")  # fmt: skip
    assert load.failures == []
    assert rule.revision == 2  # the restarted server kept the registry (revision 1)
    assert served_blind > 20
    assert max(resync) < RESYNC_BOUND_SECONDS
    assert max(reconnect) < RESYNC_BOUND_SECONDS
    _assert_exact(accounting)


@pytest.mark.timeout(120)
def test_redis_blackholed_20s_under_load_on_3_gateways_loses_nothing(tmp_path):
    with _cluster(tmp_path, FAST) as cluster, _Load(cluster.addresses) as load:
        eventually(lambda: min(load.ok) > 20)
        for proxy in cluster.proxies:
            proxy.blackhole()
        # Changed while no gateway can see Redis: each keeps serving the last good rule.
        rule = cluster.registry.set_route("credit", [Split("1", 0), Split("2", 100)],
                                          actor="ops")  # fmt: skip
        during = sum(load.ok)
        blackholed = time.monotonic()
        # A blackhole raises no error: a command waits out its socket timeout, then retries.
        noticed = _seconds_until([_disconnected(g) for g in cluster.gateways],
                                 blackholed, 20)  # fmt: skip
        time.sleep(max(0.0, blackholed + 20 - time.monotonic()))
        served_blind = sum(load.ok) - during
        assert set(load.last_version) == {"1"}
        for proxy in cluster.proxies:
            proxy.restore()
        recovered = time.monotonic()
        resync = _seconds_until([_serves(g, rule.revision) for g in cluster.gateways],
                                recovered, 15)  # fmt: skip
        reconnect = _seconds_until([_connected(g) for g in cluster.gateways], recovered, 15)
        eventually(lambda: set(load.last_version) == {"2"}, 5)
        time.sleep(0.5)
        load.stop()
        cluster.stop_gateways()
        accounting = _account(cluster, load)
    print(f"\nCHAOS redis-blackhole-20s: failed={len(load.failures)}"
          f" served_during_outage={served_blind} disconnect_seen_s={noticed}"
          f" resync_s={resync} reconnect_s={reconnect}"
          f" {accounting.line()}")  # fmt: skip
    assert load.failures == []
    assert served_blind > 100
    assert max(noticed) < RESYNC_BOUND_SECONDS  # onnxgate_redis_connected 0 while away
    assert max(resync) < RESYNC_BOUND_SECONDS
    assert max(reconnect) < RESYNC_BOUND_SECONDS
    _assert_exact(accounting)


@pytest.mark.timeout(60)
def test_subscriber_resets_during_20_rule_changes_converge_within_poll_plus_1s(tmp_path):
    poll = 1.5
    settings = {"rules_poll_seconds": poll, "heartbeat_seconds": 0.2}
    with _cluster(tmp_path, settings) as cluster, _Load(cluster.addresses, 0.02) as load:
        eventually(lambda: min(load.ok) > 5)
        resets = 0
        for step in range(1, 21):
            if step % 4 == 0 or step == 20:  # hints published around a reset are lost
                for proxy in cluster.proxies:
                    proxy.reset()
                resets += 1
            rule = cluster.registry.set_route(
                "credit", [Split("1", 100 - step), Split("2", step)], actor="ops",
                reason=f"step {step}",
            )  # fmt: skip
            last_change = time.monotonic()
            if step < 20:
                time.sleep(0.05)
        converged = _seconds_until([_serves(g, rule.revision) for g in cluster.gateways],
                                   last_change, 10)  # fmt: skip
        gauges = [_metric(g, "onnxgate_route_revision", {"model": "credit"})
                  for g in cluster.gateways]  # fmt: skip
        load.stop()
    print(f"\nCHAOS subscriber-reset: failed={len(load.failures)} changes=20 resets={resets}"
          f" last_revision={rule.revision} converge_s={converged} bound_s={poll + 1}"
          f" ok={sum(load.ok)}")  # fmt: skip
    assert load.failures == []
    assert rule.revision == 21
    assert max(converged) <= poll + 1
    # The hint of the last change is lost when it races the reset; a resubscribed gateway
    # resyncs at once instead of waiting for its next epoch poll.
    assert max(converged) < poll / 2
    assert gauges == [rule.revision] * GATEWAYS


class _HealthWatch:
    """A grpc.health.v1 Watch on one replica, on its own thread: whether it last said
    SERVING, and every status with when it arrived (the stream's end counts as not serving)."""

    def __init__(self, address: str) -> None:
        self.seen: list[tuple[str, float]] = []
        self.serving = False
        self._channel = grpc.insecure_channel(address)
        self._thread = threading.Thread(target=self._run, name=f"chaos-health-{address}")
        self._thread.start()

    def _run(self) -> None:
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            for response in stub.Watch(health_pb2.HealthCheckRequest(), timeout=60):
                self.serving = response.status == health_pb2.HealthCheckResponse.SERVING
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                self.seen.append((name, time.monotonic()))
        except grpc.RpcError as exc:
            self.seen.append((exc.code().name, time.monotonic()))
        self.serving = False
        self.seen.append(("ENDED", time.monotonic()))

    def statuses(self) -> list[str]:
        return [status for status, _ in self.seen]

    def first(self, status: str) -> float:
        return next((at for seen, at in self.seen if seen == status), math.inf)

    def close(self) -> None:
        self._channel.close()  # ends the stream if the server has not
        self._thread.join(timeout=10)


class _RetryingClient(_ClientThreads):
    """Client threads that send each request to the next replica in turn, skipping those
    whose health Watch does not say SERVING (client-side health checking), and on
    UNAVAILABLE retry it on the next replica; any other failure, or UNAVAILABLE everywhere,
    loses the request."""

    def __init__(self, addresses: list[str], health: list[_HealthWatch], threads: int = 3) -> None:
        self.ok_by_replica = [0] * len(addresses)
        self.retries = 0
        self.lost: list[str] = []
        self._health = health
        self._lock = threading.Lock()
        super().__init__(addresses, threads, "chaos-rr")

    def _run(self, offset: int) -> None:
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        turn = offset
        while not self._stop.is_set():
            turn += 1
            self._send(stubs, turn)
            self._stop.wait(0.005)

    def _send(self, stubs: list[pb_grpc.GRPCInferenceServiceStub], turn: int) -> None:
        order = [(turn + step) % len(stubs) for step in range(len(stubs))]
        healthy = [r for r in order if self._health[r].serving]
        code = "NO_REPLICA"
        for replica in (healthy or order) * 2:  # each replica at most twice
            try:
                stubs[replica].ModelInfer(REQUEST, timeout=10)
            except grpc.RpcError as exc:
                code = exc.code().name
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    break
                with self._lock:
                    self.retries += 1
                continue
            with self._lock:
                self.ok_by_replica[replica] += 1
            return
        with self._lock:
            self.lost.append(code)


def _first_refusal(port: int, stop: threading.Event, refused: list[float]) -> None:
    """Connect to the port over and over; record when a connection is first refused (or
    reset: the listener closed with it in the backlog)."""
    while not stop.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            refused.append(time.monotonic())
            return
        time.sleep(0.001)


@pytest.mark.timeout(90)
def test_sigterm_to_one_of_3_gateway_processes_loses_no_request_of_a_retrying_client(
    tmp_path, gateway_process
):
    grace = 5.0
    onnx_models.save(onnx_models.classifier(seed=1), tmp_path / "models", "credit", "1")
    gateways: list[GatewayProcess] = [
        gateway_process(tmp_path / "models", "--shutdown-grace-seconds", str(grace))
        for _ in range(GATEWAYS)
    ]
    for gp in gateways:
        with grpc.insecure_channel(gp.address) as channel:
            wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channel))
    health = [_HealthWatch(gp.address) for gp in gateways]
    victim, victim_health = gateways[0], health[0]
    refused: list[float] = []
    probing = threading.Event()
    prober = threading.Thread(target=_first_refusal, args=(victim.grpc_port, probing, refused))
    try:
        eventually(lambda: all(h.serving for h in health))
        with _RetryingClient([g.address for g in gateways], health) as client:
            eventually(lambda: min(client.ok_by_replica) > 50)
            before = list(client.ok_by_replica)
            prober.start()
            signalled = time.monotonic()
            victim.process.send_signal(signal.SIGTERM)
            code = victim.process.wait(timeout=grace + 10)
            exited = time.monotonic() - signalled
            time.sleep(0.5)  # the others carry the load
    finally:
        probing.set()
        if prober.is_alive():
            prober.join(timeout=10)
        for watch in health:
            watch.close()
    after = [n - b for n, b in zip(client.ok_by_replica, before, strict=True)]
    not_serving = victim_health.first("NOT_SERVING") - signalled
    refused_after = (refused[0] if refused else math.inf) - signalled
    print(f"\nCHAOS sigterm: lost={len(client.lost)} lost_codes={sorted(set(client.lost))}"
          f" ok={sum(client.ok_by_replica)} ok_after_signal_by_replica={after}"
          f" retried_unavailable={client.retries} not_serving_after_s={not_serving:.4f}"
          f" refused_after_s={refused_after:.4f} exit_code={code} exit_after_s={exited:.3f}"
          f" grace_s={grace} victim_health={victim_health.statuses()}")  # fmt: skip
    assert code == 0
    assert exited <= grace + 1
    assert victim_health.statuses()[:2] == ["SERVING", "NOT_SERVING"]
    assert refused_after < math.inf
    assert min(after[1:]) > 20  # the others kept answering
    assert client.lost == []  # UNAVAILABLE is retried elsewhere; nothing is cut off (CANCELLED)
    # NOT_SERVING first, then --drain-notice-seconds (1 s) of serving, then the port closes.
    assert not_serving < 0.5 < 0.9 < refused_after

"""One live gateway per replica id, against real redis-servers: a second gateway under a live
id is refused at start (exit 2, naming the id and the other gateway), a restart after a
graceful stop or a kill takes the id, workers under a supervisor each have their own, a
conflict found while running is reported, and the rollout leader lease is held by one
process even when two share a replica id."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.metrics.rollout import RolloutMetrics
from gateway.rollout.controller import RolloutController
from gateway.routing.replica_identity import ReplicaIdInUse
from gateway.settings import Settings
from registry_client.client import RegistryClient
from registry_client.connection import private_redis_url
from registry_client.records.leases import Lease
from registry_client.rollout.store import LeaseLost, RolloutStore
from tests.support.fault_proxy import FaultProxy
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.gateways import (
    REPO_ROOT,
    GatewayProcess,
    eventually,
    make_gateway,
    register_credit,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)
StartGateway = Callable[..., GatewayProcess]
CONFLICT = "onnxgate_replica_id_conflict"


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """A model directory with nothing in it: the gateways serve what the registry says."""
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.fixture
def registry(redis_server: RedisServer) -> Iterator[RegistryClient]:
    client = RegistryClient.from_url(redis_server.url)
    yield client
    client.close()


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    """`onnxgate serve` expected to exit by itself (refused)."""
    command = [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--grpc-port",
               "0", "--metrics-port", "-1", "--log-format", "json", *args]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
                          check=False)  # fmt: skip


def _refusal(stderr: str) -> str:
    """The reason of the `cannot start` line a refused gateway logs."""
    for line in stderr.splitlines():
        if line.startswith("{") and json.loads(line).get("message") == "cannot start":
            return str(json.loads(line)["reason"])
    raise AssertionError("no 'cannot start' line:\n" + stderr)


def _pid_in_heartbeat(registry: RegistryClient, replica: str) -> str:
    return registry.read_heartbeat(replica).get("pid", "")


# -- at start -------------------------------------------------------------------------------


def test_a_second_gateway_under_a_live_replica_id_exits_2_naming_it(
    redis_server: RedisServer, registry: RegistryClient, empty: Path, gateway_process: StartGateway
) -> None:
    flags = ("--redis-url", redis_server.url, "--replica-id", "r1", "--heartbeat-seconds", "1")
    first = gateway_process(empty, *flags)
    refused = _serve(*flags)
    assert refused.returncode == 2, refused.stderr
    reason = _refusal(refused.stderr)
    assert reason.startswith("replica id 'r1' is in use: another gateway heartbeated ")
    assert f"pid {first.process.pid}" in reason
    assert "give this one another --replica-id" in reason
    assert "gateway started" not in refused.stderr
    # The first one was not disturbed: it runs, and the heartbeat is still its own.
    assert first.process.poll() is None
    assert _pid_in_heartbeat(registry, "r1") == str(first.process.pid)


def test_a_gateway_under_the_id_of_one_stopped_gracefully_starts_at_once(
    redis_server: RedisServer, registry: RegistryClient, empty: Path, gateway_process: StartGateway
) -> None:
    flags = ("--redis-url", redis_server.url, "--replica-id", "r1", "--drain-notice-seconds", "0")
    first = gateway_process(empty, *flags)
    assert first.terminate() == 0
    assert registry.read_heartbeat("r1") == {}  # removed at stop: the id is free
    second = gateway_process(empty, *flags)
    assert _pid_in_heartbeat(registry, "r1") == str(second.process.pid)
    assert not any("waiting to see it renewed" in line for line in second.log)


def test_a_gateway_restarted_after_its_predecessor_was_killed_takes_the_id_over(
    redis_server: RedisServer, registry: RegistryClient, empty: Path, gateway_process: StartGateway
) -> None:
    # As a container restarted at once under its pod name: the dead one's heartbeat is fresh.
    flags = ("--redis-url", redis_server.url, "--replica-id", "r1", "--heartbeat-seconds", "2")
    first = gateway_process(empty, *flags)
    first.process.kill()
    first.process.wait(timeout=10)
    assert _pid_in_heartbeat(registry, "r1") == str(first.process.pid)  # outlives it (6 s)
    second = gateway_process(empty, *flags)
    assert _pid_in_heartbeat(registry, "r1") == str(second.process.pid)
    assert second.process.poll() is None


def test_gateways_sharing_a_private_redis_are_refused_a_live_id_too(
    tmp_path: Path, empty: Path, gateway_process: StartGateway
) -> None:
    data = tmp_path / "data"
    flags = ("--data-dir", str(data), "--replica-id", "r1", "--heartbeat-seconds", "1")
    first = gateway_process(empty, *flags)
    refused = _serve(*flags)
    assert refused.returncode == 2, refused.stderr
    assert _refusal(refused.stderr).startswith("replica id 'r1' is in use")
    private = RegistryClient.from_url(private_redis_url(data))
    try:
        assert _pid_in_heartbeat(private, "r1") == str(first.process.pid)
    finally:
        private.close()


def test_workers_under_a_supervisor_each_take_an_id_of_their_own(
    redis_server: RedisServer, registry: RegistryClient, empty: Path, gateway_process: StartGateway
) -> None:
    supervisor = gateway_process(empty, "--redis-url", redis_server.url, "--replica-id", "r1",
                                 "--workers", "2", "--heartbeat-seconds", "1")  # fmt: skip
    eventually(lambda: {"r1-w0", "r1-w1"} <= set(registry.gateways()), timeout=60)
    pids = {_pid_in_heartbeat(registry, r) for r in ("r1-w0", "r1-w1")}
    assert len(pids) == 2 and str(supervisor.process.pid) not in pids
    assert not any('"cannot start"' in line for line in supervisor.log)
    assert supervisor.terminate() == 0


def test_a_second_supervisor_under_a_live_replica_id_exits_2(
    redis_server: RedisServer, registry: RegistryClient, empty: Path, gateway_process: StartGateway
) -> None:
    flags = ("--redis-url", redis_server.url, "--replica-id", "r1", "--workers", "2",
             "--heartbeat-seconds", "1")  # fmt: skip
    first = gateway_process(empty, *flags)
    eventually(lambda: {"r1-w0", "r1-w1"} <= set(registry.gateways()), timeout=60)
    refused = _serve(*flags)
    assert refused.returncode == 2, refused.stderr
    assert "replica id 'r1-w" in refused.stderr and "is in use" in refused.stderr
    assert first.process.poll() is None


def test_an_in_process_gateway_under_a_live_id_is_refused(redis_server: RedisServer) -> None:
    first = make_gateway(None, redis_url=redis_server.url, replica_id="r1", heartbeat_seconds=0.5)
    try:
        with pytest.raises(ReplicaIdInUse, match="replica id 'r1' is in use"):
            make_gateway(None, redis_url=redis_server.url, replica_id="r1", heartbeat_seconds=0.5)
    finally:
        first.stop(grace_seconds=1)


def test_a_heartbeat_no_longer_renewed_is_taken_over_after_two_of_its_intervals(
    redis_server: RedisServer, registry: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    # What a killed gateway leaves: its last beat, with a TTL far from running out.
    dead = {"instance": "dead", "interval": "0.3", "host": "elsewhere", "pid": "7",
            "updated_at": str(time.time()), "versions": "[]"}  # fmt: skip
    registry.heartbeat("r1", dead, ttl_seconds=60)
    with caplog.at_level(logging.INFO):
        gateway = make_gateway(None, redis_url=redis_server.url, replica_id="r1",
                               heartbeat_seconds=0.3)  # fmt: skip
    try:
        taken = [r for r in caplog.records if "replica id taken over" in r.getMessage()]
        assert [getattr(r, "other_host", None) for r in taken] == ["elsewhere"]
        assert registry.read_heartbeat("r1")["instance"] == gateway.watcher.heartbeat.instance  # type: ignore[union-attr]
        assert gateway.registry.get_sample_value(CONFLICT) == 0
    finally:
        gateway.stop(grace_seconds=1)


def test_a_registry_that_does_not_answer_does_not_hold_the_start(
    redis_server: RedisServer, registry: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = FaultProxy("127.0.0.1", redis_server.port).start()
    proxy.blackhole()
    settings = Settings(host="127.0.0.1", grpc_port=0, metrics_port=-1, redis_url=proxy.url,
                        replica_id="r1", heartbeat_seconds=0.2)  # fmt: skip
    gateway = Gateway(settings, CollectorRegistry())
    try:
        with caplog.at_level(logging.WARNING):
            gateway.start()  # returns, the id unchecked
        assert any("replica id not checked" in r.getMessage() for r in caplog.records)
        proxy.restore()
        # The claim given up ends once its read is answered, and writes nothing: the beat in
        # Redis is the heartbeat thread's.
        eventually(lambda: "onnxgate-replica-claim" not in _thread_names(), timeout=30)
        eventually(lambda: registry.read_heartbeat("r1").get("instance") == _instance(gateway))
    finally:
        proxy.restore()
        gateway.stop(grace_seconds=1)
        proxy.stop()


def _thread_names() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _instance(gateway: Gateway) -> str:
    assert gateway.watcher is not None
    return gateway.watcher.heartbeat.instance


# -- while running --------------------------------------------------------------------------


def test_a_heartbeat_written_by_another_process_is_reported_as_a_conflict(
    redis_server: RedisServer, registry: RegistryClient, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = make_gateway(None, redis_url=redis_server.url, replica_id="r1",
                           heartbeat_seconds=0.2)  # fmt: skip
    try:
        assert gateway.registry.get_sample_value(CONFLICT) == 0
        # Another gateway under r1 (one that found the id free at the same instant, or one
        # that reads another Redis replica) writes its beat once.
        other = {"instance": "other", "interval": "0.2", "host": "elsewhere", "pid": "7",
                 "updated_at": str(time.time())}  # fmt: skip
        with caplog.at_level(logging.ERROR):
            registry.heartbeat("r1", other, ttl_seconds=3)
            eventually(lambda: gateway.registry.get_sample_value(CONFLICT) == 1)
        errors = [r for r in caplog.records if "replica id in use" in r.getMessage()]
        assert [(getattr(r, "replica", ""), getattr(r, "other_host", "")) for r in errors] == [
            ("r1", "elsewhere")
        ]
        # Nobody else writes any more: the conflict is over a heartbeat TTL later.
        eventually(lambda: gateway.registry.get_sample_value(CONFLICT) == 0, timeout=20)
    finally:
        gateway.stop(grace_seconds=1)


# -- the rollout leader lease ---------------------------------------------------------------


def test_two_leases_under_one_replica_id_have_one_holder(registry: RegistryClient) -> None:
    key = registry.keys.rollout_leader
    first, second = Lease(registry, key, "gw", 10.0), Lease(registry, key, "gw", 10.0)
    assert (first.hold(), second.hold()) == (True, False)
    assert (first.hold(), second.hold()) == (True, False)  # renewing keeps it one's own
    assert registry.read_string(key) == first.value.encode()
    second.release()  # not the holder's: changes nothing
    assert registry.read_string(key) == first.value.encode() and not second.hold()
    first.release()
    assert (second.hold(), first.hold()) == (True, False)


def test_two_controllers_under_one_replica_id_elect_one_leader(
    registry: RegistryClient, tmp_path: Path
) -> None:
    register_credit(registry, tmp_path)
    metrics = [CollectorRegistry(), CollectorRegistry()]
    controllers = [
        RolloutController(registry, "gw", RolloutMetrics(m), tick_seconds=0.05, lease_seconds=10.0)
        for m in metrics
    ]
    for _ in range(3):
        for controller in controllers:
            controller.tick()
    assert sorted(c.leading for c in controllers) == [False, True]
    leader_gauges = [m.get_sample_value("onnxgate_rollout_leader") for m in metrics]
    assert sorted(leader_gauges) == [0.0, 1.0]  # type: ignore[type-var]
    for controller in controllers:
        controller.stop()


def test_a_process_not_holding_the_lease_cannot_decide_under_the_same_replica_id(
    registry: RegistryClient, tmp_path: Path
) -> None:
    register_credit(registry, tmp_path)
    store = RolloutStore(registry)
    state = store.start(
        None, actor="alice", baseline_from_rule=True, model="credit", candidate="2",
        steps=(50, 100), interval_seconds=60.0, min_requests=10,
    )  # fmt: skip
    key = registry.keys.rollout_leader
    holder, other = Lease(registry, key, "gw", 10.0), Lease(registry, key, "gw", 10.0)
    assert holder.hold()
    with pytest.raises(LeaseLost, match="gw no longer holds"):
        store.commit(state, state.evolve(failures=1), actor="rollout-controller@gw",
                     action="hold", reason="", route=False, leader=other.value)  # fmt: skip
    assert store.get("credit") == state


def test_rollout_status_names_the_leaders_replica_id(
    redis_server: RedisServer, registry: RegistryClient, tmp_path: Path
) -> None:
    register_credit(registry, tmp_path)
    RolloutStore(registry).start(
        None, actor="alice", baseline_from_rule=True, model="credit", candidate="2",
        steps=(50, 100), interval_seconds=60.0, min_requests=10,
    )  # fmt: skip
    controller = RolloutController(registry, "gw-a", RolloutMetrics(CollectorRegistry()),
                                   tick_seconds=0.05, lease_seconds=10.0)  # fmt: skip
    controller.tick()
    try:
        code, out, err = _gatectl(redis_server.url, "--json", "rollout", "status", "credit")
        assert code == 0, err
        assert json.loads(out)["leader"] == "gw-a"
    finally:
        controller.stop()

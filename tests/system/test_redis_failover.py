"""Failover under load: three gateways serve a client while the registry's Redis primary is
killed (SIGKILL, as a crash) and Sentinel promotes its replica, or a Redis Cluster's shard
fails over to its replica. Inference goes on from the last rules (no request fails); every
gateway applies a rule written on the new primary within two seconds; the statistics written
before, during and after count every request answered once."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from registry_client.client import RegistryClient
from registry_client.errors import RegistryError
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_topologies import (
    DOWN_AFTER_MS,
    RedisClusterDeployment,
    SentinelDeployment,
)
from tests.support.rollout_rig import Rig, Traffic, rig
from tests.support.traffic import register_tiny

FOLLOW_SECONDS = 2.0  # for every gateway to apply a rule written on the new primary


@pytest.fixture
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelDeployment]:
    deployment = SentinelDeployment(tmp_path_factory.mktemp("sentinel"))
    yield deployment
    deployment.stop()


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterDeployment]:
    deployment = RedisClusterDeployment(tmp_path_factory.mktemp("cluster"))
    yield deployment
    deployment.stop()


def test_a_sentinel_failover_fails_no_request_and_loses_no_count(
    sentinel: SentinelDeployment, tmp_path: Path
) -> None:
    def fail_over() -> float:
        old = sentinel.primary()
        old.kill()
        sentinel.wait_for_new_primary(old)
        return time.monotonic()

    _serve_through_a_failover(sentinel.url, tmp_path, fail_over, "sentinel")


@pytest.mark.parametrize("shard", ["{onnxgate}", "{onnxgate:credit}"])
def test_a_cluster_shard_failover_fails_no_request_and_loses_no_count(
    cluster: RedisClusterDeployment, tmp_path: Path, shard: str
) -> None:
    """The shard of the control plane (rules, hints, heartbeats), or of the model's
    statistics."""

    def fail_over() -> float:
        old = cluster.primary_of(shard)
        old.kill()
        cluster.wait_until_promoted(shard, old)
        return time.monotonic()

    _serve_through_a_failover(cluster.url, tmp_path, fail_over, f"cluster {shard}")


def test_a_rule_write_a_failover_loses_is_told_by_reading_it_back(
    sentinel: SentinelDeployment, tmp_path: Path
) -> None:
    """The replica is held (SIGSTOP) behind 32 MiB of replication stream while gatectl writes
    revision 2, so only the primary has it when the primary is killed and the replica
    promoted. gatectl, waiting for a gateway to
    apply it (it cannot: version 2 warms up for ever), reads the rule back at revision 1 once
    the new primary answers, and says the write was lost."""
    registry = register_tiny(sentinel.url, tmp_path)
    gateway = make_gateway(None, redis_url=sentinel.url, rules_poll_seconds=0.2,
                           heartbeat_seconds=0.3, replica_id="gw0")  # fmt: skip
    try:
        eventually(lambda: registry.replica_status("tiny")["replicas"] != [])
        eventually(sentinel.replicas_in_sync)
        old = sentinel.primary()
        (replica,) = [server for server in sentinel.servers if server is not old]
        replica.process.send_signal(signal.SIGSTOP)
        # More than the sockets buffer, so what follows stays in the primary's memory.
        old.client().set("filler", b"x" * (32 * 2**20))
        outcome: list[tuple[int, str, str]] = []
        writer = threading.Thread(
            target=lambda: outcome.append(
                run_gatectl(
                    sentinel.url, "route", "set", "tiny", "--split", "1=50,2=50", "--wait", "60"
                )
            )
        )
        writer.start()
        eventually(lambda: _revision(registry) == 2)  # acknowledged, by the primary alone
        old.kill()
        replica.process.send_signal(signal.SIGCONT)
        sentinel.wait_for_new_primary(old)
        writer.join(timeout=30)
        code, _, err = outcome[0]
        assert code == 4, err
        assert "lost revision 2 of tiny's rule" in err and "revision 1 now" in err
        assert _revision(registry) == 1
    finally:
        gateway.stop(grace_seconds=1)
        registry.close()


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


def _serve_through_a_failover(
    url: str, tmp_path: Path, fail_over: Callable[[], float], case: str
) -> None:
    """Prints one `FAILOVER <case>: ...` line (`pytest -s`) for docs/reliability.md."""
    with rig(_Url(url), tmp_path, onnx_models.classifier(seed=2), gateways=3) as r:
        with Traffic(r.addresses) as traffic:
            eventually(lambda: _counted(r) >= 200, timeout=30)
            killed = time.monotonic()
            promoted = fail_over()
            _write_until_acknowledged(r.registry, {"1": 50, "2": 50})
            written = time.monotonic()
            eventually(lambda: r.serving({"1": 50, "2": 50}), timeout=FOLLOW_SECONDS + 10)
            followed = time.monotonic()
            sent_after = len(traffic.records)
            eventually(lambda: len(traffic.records) >= sent_after + 200, timeout=30)
        failed = [status for _, _, status in traffic.records if status != "OK"]
        assert failed == []
        assert followed - written <= FOLLOW_SECONDS, (killed, promoted, written, followed)
        assert promoted - killed >= DOWN_AFTER_MS / 1000
        for gateway in r.gateways:
            gateway.stop(grace_seconds=5)  # writes its last statistics
        counted = _counted(r)
        assert counted == len(traffic.records)
        print(f"FAILOVER {case}: promoted {promoted - killed:.2f} s after the kill, a rule"
              f" written {written - promoted:.2f} s after that, every gateway on it"
              f" {followed - written:.2f} s later; {len(traffic.records)} answered,"
              f" {len(failed)} failed, {counted} counted")  # fmt: skip


def _write_until_acknowledged(registry: RegistryClient, weights: dict[str, int]) -> None:
    """What an operator does after a failover: write until a primary acknowledges."""
    deadline = time.monotonic() + 30
    while True:
        try:
            registry.set_route("credit", [Split(v, w) for v, w in weights.items()], actor="ops")
            return
        except RegistryError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _revision(registry: RegistryClient) -> int | None:
    rule = registry.get_route("tiny")
    return None if rule is None else rule.revision


def _counted(r: Rig) -> int:
    """Requests (primaries') every gateway's statistics count for model credit, the last
    hour."""
    merged = r.registry.stats.read("credit", 3600)
    return sum(s.requests for (_, role), s in merged.by_version.items() if role == "primary")

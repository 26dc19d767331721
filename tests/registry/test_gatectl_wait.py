"""A write says whether it took effect: `gatectl route set` and `gatectl rollout start` wait for
the live gateways to apply the rule and name those that did not, with why. Real gateways,
a real redis-server, models built with onnx.helper."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from registry_client.cli.apply_wait import APPLIED, FAILED, PENDING, gateway_outcome
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.traffic import register_tiny

EXIT_NOT_APPLIED = 5
SMALL_MODEL_BYTES = 8192  # holds tiny 1 and 4 (classifiers), not 5
StartGateway = Callable[..., Gateway]


@pytest.fixture
def registry(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    """tiny as register_tiny leaves it (1 serving, 2 warming up for ever), plus 4, a classifier,
    and 5, a classifier over SMALL_MODEL_BYTES."""
    client = register_tiny(redis_server.url, tmp_path / "artifacts")
    bigger = onnx_models.slow_classifier(seed=5, width=64, layers=2)
    for version, model in (("4", onnx_models.classifier(seed=4)), ("5", bigger)):
        path = onnx_models.save(model, tmp_path / "artifacts", "tiny", version)
        assert (path.stat().st_size > SMALL_MODEL_BYTES) == (version == "5")
        client.register_version("tiny", version, path, actor="ops")
    yield client
    client.close()


def _applied(registry: RegistryClient, replica: str) -> object:
    found = [r for r in registry.replica_status("tiny")["replicas"] if r["replica"] == replica]
    return found[0]["applied_revision"] if found else None


@pytest.fixture
def start_gateway(redis_server: RedisServer, registry: RegistryClient) -> Iterator[StartGateway]:
    """start_gateway(replica, **settings): a gateway following the registry, returned once its
    heartbeat shows tiny's first rule applied; every one is stopped at the end of the test."""
    started: list[Gateway] = []

    def start(replica: str, **overrides: object) -> Gateway:
        gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2,
                               heartbeat_seconds=0.3, replica_id=replica, **overrides)  # fmt: skip
        started.append(gateway)
        eventually(lambda: _applied(registry, replica) == 1, timeout=30)
        return gateway

    yield start
    for gateway in started:
        gateway.stop(grace_seconds=1)


def _canary(url: str, *wait: str) -> tuple[int, str, str]:
    """`gatectl route set` sending 10% to tiny 2, whose warm-up never ends: a gateway gives up
    on it at its load timeout, or is still loading it when the wait is over."""
    return _gatectl(url, "route", "set", "tiny", "--split", "1=90,2=10", *wait)


def test_a_split_every_live_gateway_applies_exits_0_saying_so(redis_server, start_gateway):
    gateway = start_gateway("gw-a")
    code, out, err = _gatectl(redis_server.url, "route", "set", "tiny", "--split", "1=50,4=50",
                              "--wait", "30")  # fmt: skip
    assert (code, err) == (0, "")
    assert "revision 2" in out
    assert out.splitlines()[-1] == "applied by 1 of 1 live gateways"
    assert gateway.routes.current().routes["tiny"].revision == 2


def test_a_version_that_fails_to_load_exits_5_naming_the_gateway_and_why(
    redis_server, registry, start_gateway
):
    start_gateway("gw-a", load_timeout_seconds=2)
    code, out, err = _canary(redis_server.url, "--wait", "60")
    assert code == EXIT_NOT_APPLIED
    assert "revision 2" in out  # the rule was written, and is shown
    lines = err.splitlines()
    assert lines[0].startswith(
        "gatectl: revision 2 of tiny not applied by any of the 1 live gateways"
    )
    assert lines[1].startswith("  gw-a (serving revision 1): revision 2 not applied: version 2")
    assert "did not finish within the load timeout of 2 s" in lines[1]
    assert "gatectl route status tiny" in lines[2]
    assert registry.get_route("tiny").revision == 2  # it stays stored


def test_a_load_outlasting_the_wait_exits_5_still_loading(redis_server, start_gateway):
    start_gateway("gw-a", load_timeout_seconds=600)
    code, _, err = _canary(redis_server.url, "--wait", "1")
    assert code == EXIT_NOT_APPLIED
    assert "(--wait 1)" in err
    assert "  gw-a (serving revision 1): still loading version 2" in err
    # The back-out applies at once, as the canary's load is cancelled.
    code, out, err = _gatectl(redis_server.url, "route", "set", "tiny", "--split", "1=100",
                              "--wait", "30")  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "applied by 1 of 1 live gateways"


def test_no_wait_writes_and_returns_at_once(redis_server, registry, start_gateway):
    start_gateway("gw-a", load_timeout_seconds=600)
    code, out, err = _canary(redis_server.url, "--no-wait")
    # Version 2 never finishes loading: with a wait this would be exit 5.
    assert (code, err) == (0, "")
    assert "revision 2" in out and "applied by" not in out
    code, out, _ = _gatectl(redis_server.url, "--json", "route", "set", "tiny", "--split",
                            "1=100", "--no-wait")  # fmt: skip
    assert code == 0 and "apply" not in json.loads(out)
    eventually(lambda: _applied(registry, "gw-a") == 3)  # the back-out, before stopping


def test_without_a_live_gateway_the_rule_is_stored_with_a_note(redis_server, registry):
    code, out, err = _canary(redis_server.url)
    assert code == 0
    assert "revision 2" in out and "applied by" not in out
    assert err == ("gatectl: note: no live gateway; revision 2 of tiny is stored and gateways"
                   " apply it as they start\n")  # fmt: skip
    assert registry.get_route("tiny").split == (Split("1", 90), Split("2", 10))


def test_some_gateways_applying_exits_0_with_a_warning_naming_the_others(
    redis_server, start_gateway
):
    start_gateway("gw-big")
    start_gateway("gw-small", max_model_bytes=SMALL_MODEL_BYTES)
    code, out, err = _gatectl(redis_server.url, "--json", "route", "set", "tiny", "--split",
                              "1=50,5=50", "--wait", "60")  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    assert shown["revision"] == 2
    apply = shown["apply"]
    assert (apply["live_gateways"], apply["applied"]) == (2, ["gw-big"])
    failed = apply["not_applied"]["gw-small"]
    assert (failed["state"], failed["serving"]) == ("failed", 1)
    assert "artifact is larger than --max-model-bytes 8192" in failed["detail"]
    lines = err.splitlines()
    assert lines[0].startswith(
        "gatectl: warning: revision 2 of tiny not applied by 1 of 2 live gateways"
    )
    assert lines[1].startswith("  gw-small (serving revision 1): revision 2 not applied")
    assert lines[2].endswith("gatectl route status tiny") and len(lines) == 3


def test_rollout_start_waits_for_its_first_step_to_be_applied(redis_server, start_gateway):
    gateway = start_gateway("gw-a")
    code, out, err = _gatectl(redis_server.url, "rollout", "start", "tiny", "--candidate",
                              "4", "--steps", "10,100", "--wait", "30")  # fmt: skip
    assert (code, err) == (0, "")
    assert "rule revision 2" in out
    assert out.splitlines()[-1] == "applied by 1 of 1 live gateways"
    assert gateway.routes.current().routes["tiny"].weights == {"1": 90, "4": 10}


def test_wait_takes_seconds_within_bounds(redis_server, registry, capsys):
    for bad in ("-1", "nan", "soon", "3601"):
        with pytest.raises(SystemExit) as exited:
            _gatectl(redis_server.url, "route", "set", "tiny", "--split", "1=100", "--wait", bad)
        assert exited.value.code == 2
        assert f"argument --wait: expected seconds from 0 to 3600, got '{bad}'" in (
            capsys.readouterr().err
        )
    with pytest.raises(SystemExit):
        _gatectl(redis_server.url, "route", "set", "tiny", "--split", "1=100", "--wait", "5",
                 "--no-wait")  # fmt: skip
    assert "not allowed with argument" in capsys.readouterr().err


def _replica(
    applied: int | None, target: int | None = None, rejected: int | None = None, error: str = ""
) -> dict[str, object]:
    """An entry of RegistryClient.replica_status()["replicas"], as a heartbeat gives it."""
    return {"replica": "gw-a", "applied_revision": applied, "target_revision": target,
            "rejected_revision": rejected, "version_states": [], "failed": {},
            "error": error}  # fmt: skip


def test_an_older_rules_failure_still_reported_is_not_the_written_ones():
    stale = _replica(1, rejected=2, error="revision 2 not applied: version 2 did not load")
    outcome = gateway_outcome(stale, revision=3, stored_revision=3)
    assert (outcome.state, outcome.detail) == (PENDING, "has not picked up revision 3 yet")
    failed = _replica(1, rejected=3, error="revision 3 not applied: version 2 did not load")
    outcome = gateway_outcome(failed, revision=3, stored_revision=3)
    assert (outcome.state, outcome.detail) == (FAILED, failed["error"])


def test_a_revision_written_since_counts_as_applied_and_one_from_a_wiped_registry_does_not():
    assert gateway_outcome(_replica(4), revision=3, stored_revision=4).state == APPLIED
    # Revisions count from 1 again in a registry restored from scratch; the gateway still
    # serves revision 9 of the old one until it applies the new rule.
    assert gateway_outcome(_replica(9), revision=1, stored_revision=1).state == PENDING


def test_a_gateway_loading_the_written_revision_is_pending_until_it_applies_it():
    outcome = gateway_outcome(_replica(1, target=2), revision=2, stored_revision=2)
    assert (outcome.state, outcome.serving, outcome.detail) == (
        PENDING, 1, "working towards revision 2",
    )  # fmt: skip
    assert gateway_outcome(_replica(2), revision=2, stored_revision=2).state == APPLIED

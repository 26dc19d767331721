"""`gatectl compare`'s differences from the baseline and its windows per rule revision, on
statistics windows written through the real store to a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Split
from registry_client.stats.store import WindowWrite
from registry_client.stats.window import VersionStats, encode_window, window_of
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.redis_server import RedisServer


@pytest.fixture
def client(redis_server: RedisServer, tmp_path: Path) -> Iterator[RegistryClient]:
    """Model credit with versions 1 and 2 registered, no rule yet."""
    registry = RegistryClient.from_url(redis_server.url)
    registry.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        registry.register_version("credit", version, path, actor="ops")
    yield registry
    registry.close()


def _traffic(rng: np.random.Generator, version: str, revision: int | None, requests: int,
             error_rate: float, median_seconds: float = 0.001) -> VersionStats:  # fmt: skip
    """`requests` drawn at random: errors at `error_rate`, lognormal latencies."""
    stats = VersionStats(version, "primary", revision=revision)
    errors = int(rng.binomial(requests, error_rate))
    for _ in range(errors):
        stats.record("INTERNAL", None)
    for seconds in rng.lognormal(np.log(median_seconds), 0.4, requests - errors):
        stats.record("OK", float(seconds))
    return stats


def _write(client: RegistryClient, *stats: VersionStats, minutes_ago: int = 0) -> None:
    window = window_of(time.time()) - minutes_ago
    client.stats.write("replica-a", [WindowWrite("credit", window, encode_window(stats))], 600)


def _compare(url: str, *argv: str) -> dict[str, Any]:
    code, out, err = run_gatectl(url, "--json", "compare", "credit", *argv)
    assert (code, err) == (0, "")
    report: dict[str, Any] = json.loads(out)
    return report


def _rows(report: dict[str, Any]) -> dict[tuple[str, str, int | None], dict[str, Any]]:
    return {(r["version"], r["role"], r["revision"]): r for r in report["versions"]}


def test_a_canary_erring_5_percent_against_1_differs_and_one_at_1_percent_does_not(
    client: RegistryClient, redis_server: RedisServer
) -> None:
    rule = client.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops")
    rng = np.random.default_rng(42)
    _write(client, _traffic(rng, "1", rule.revision, 4000, 0.01),
           _traffic(rng, "2", rule.revision, 2000, 0.05, median_seconds=0.0013))  # fmt: skip
    rows = _rows(_compare(redis_server.url))
    baseline, canary = rows["1", "primary", rule.revision], rows["2", "primary", rule.revision]
    assert baseline["is_baseline"] and baseline["difference"] is None
    found = canary["difference"]
    assert isinstance(found, dict) and found["against"] == "1"
    errors = found["error_rate_points"]
    assert errors["low"] <= 4.0 <= errors["high"] and errors["low"] > 0  # 5% - 1%, in points
    assert errors["significant"] and errors["p_value"] < 0.001
    observed = 100 * (canary["error_rate"] - baseline["error_rate"])
    assert errors["estimate"] == pytest.approx(observed)
    p50 = found["latency_ms"]["p50"]  # about 0.3 ms slower at the median
    assert 0.1 < p50["low"] <= 0.3 <= p50["high"] < 0.5 and p50["significant"]
    assert p50["p_value"] is None  # the bootstrap gives an interval, no test
    ranks = found["latency_rank_test"]
    assert ranks["significant"] and ranks["probability_slower"] > 0.6

    client.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops", reason="again")
    same = client.get_route("credit")
    assert same is not None
    _write(client, _traffic(rng, "1", same.revision, 4000, 0.01),
           _traffic(rng, "2", same.revision, 2000, 0.01))  # fmt: skip
    rows = _rows(_compare(redis_server.url))
    found = rows["2", "primary", same.revision]["difference"]
    assert isinstance(found, dict)
    errors = found["error_rate_points"]
    assert errors["low"] < 0 < errors["high"] and not errors["significant"]
    assert not found["latency_ms"]["p50"]["significant"]
    assert not found["latency_rank_test"]["significant"]


def test_the_table_marks_only_the_differences_whose_interval_excludes_zero(
    client: RegistryClient, redis_server: RedisServer
) -> None:
    rule = client.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops")
    rng = np.random.default_rng(7)
    _write(client, _traffic(rng, "1", rule.revision, 4000, 0.01),
           _traffic(rng, "2", rule.revision, 2000, 0.05))  # fmt: skip
    code, out, _ = run_gatectl(redis_server.url, "compare", "credit")
    assert code == 0
    _, differences = out.split("\n\n")
    title, header, row = differences.splitlines()
    assert title.startswith("difference from the baseline (95% intervals, *: excludes 0")
    columns = [c.strip() for c in header.split("  ") if c.strip()]
    assert columns == ["version", "role", "baseline", "errors", "p50 ms", "p90 ms", "p99 ms",
                       "rank test"]  # fmt: skip
    cells = [c.strip() for c in row.split("  ") if c.strip()]
    assert cells[:3] == ["2", "primary", "1"]
    estimate, interval = cells[3].split(" pts ")
    assert estimate.startswith("+") and interval.endswith("] *")  # errors: 5% against 1%
    assert not cells[4].endswith("*")  # the same latency: no marker


def test_by_default_only_the_current_revisions_traffic_is_compared(
    client: RegistryClient, redis_server: RedisServer
) -> None:
    # The reported problem: a minute that holds the previous rule's traffic too.
    first = client.set_route("credit", [Split("1", 100)], actor="ops")
    second = client.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops")
    rng = np.random.default_rng(1)
    older = VersionStats("1", "primary")  # a gateway that does not record revisions
    older.record("OK", 0.001)
    _write(client, _traffic(rng, "1", first.revision, 1000, 0.0),
           _traffic(rng, "1", second.revision, 900, 0.0),
           _traffic(rng, "2", second.revision, 100, 0.0), older)  # fmt: skip
    report = _compare(redis_server.url)
    assert report["scope"] == "revision" and report["rule_revision"] == second.revision
    assert report["revision_took_effect_at"] == second.updated_at[:19] + "+00:00"
    assert report["unknown_revision_requests"] == 1
    rows = _rows(report)
    assert set(rows) == {("1", "primary", second.revision), ("2", "primary", second.revision)}
    one, two = rows["1", "primary", second.revision], rows["2", "primary", second.revision]
    assert (one["rule_percent"], one["observed_percent"], one["requests"]) == (90, 90, 900)
    assert (two["rule_percent"], two["observed_percent"], two["requests"]) == (10, 10, 100)
    code, out, _ = run_gatectl(redis_server.url, "compare", "credit")
    assert code == 0
    heading, note, header, *_ = out.splitlines()
    assert heading.startswith(f"model credit  since rule revision {second.revision} took effect"
                              f" at {report['revision_took_effect_at']}, ")  # fmt: skip
    assert " ago  replicas 1" in heading
    assert note.startswith("1 requests counted by gateways that do not record the rule revision")
    assert "revision" not in header.split()  # one revision: said once, in the heading


def test_a_window_asked_for_shows_each_revisions_rows_against_its_own_rule(
    client: RegistryClient, redis_server: RedisServer
) -> None:
    first = client.set_route("credit", [Split("1", 100)], actor="ops")
    second = client.set_route("credit", [Split("1", 90), Split("2", 10)], actor="ops")
    rng = np.random.default_rng(2)
    _write(client, _traffic(rng, "1", first.revision, 1000, 0.0), minutes_ago=3)
    _write(client, _traffic(rng, "1", first.revision, 500, 0.0),
           _traffic(rng, "1", second.revision, 450, 0.0),
           _traffic(rng, "2", second.revision, 50, 0.02))  # fmt: skip
    report = _compare(redis_server.url, "--since", "15m")
    assert report["scope"] == "since" and report["since_seconds"] == 900
    assert [r["revision"] for r in report["revisions"]] == [first.revision, second.revision]
    assert report["revisions"][0]["split"] == {"1": 100}  # the earlier rule, from the audit
    rows = _rows(report)
    assert list(rows) == [("1", "primary", second.revision), ("2", "primary", second.revision),
                          ("1", "primary", first.revision)]  # fmt: skip
    earlier = rows["1", "primary", first.revision]
    assert (earlier["rule_percent"], earlier["observed_percent"], earlier["requests"]) == (
        100, 100, 1500)  # fmt: skip
    assert earlier["is_baseline"] and earlier["difference"] is None  # alone in its revision
    assert rows["2", "primary", second.revision]["rule_percent"] == 10
    assert rows["2", "primary", second.revision]["difference"]["against"] == "1"
    code, out, _ = run_gatectl(redis_server.url, "compare", "credit", "--since", "15m")
    assert code == 0
    versions, differences = out.split("\n\n")
    assert differences.splitlines()[2].split()[:4] == ["2", "primary", str(second.revision), "1"]
    header, *lines = versions.splitlines()[1:]
    assert header.split()[:3] == ["version", "role", "revision"]
    assert [line.split()[:5] for line in lines] == [
        ["1", "primary", str(second.revision), "90%", "90.0%"],
        ["2", "primary", str(second.revision), "10%", "10.0%"],
        ["1", "primary", str(first.revision), "100%", "100.0%"],
    ]

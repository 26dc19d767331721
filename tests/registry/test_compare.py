"""`gatectl compare`: known traffic through two gateway replicas shows the right numbers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from xml.etree import ElementTree

import grpc
import numpy as np
import pytest
from sklearn import metrics  # type: ignore[import-untyped]  # sklearn ships no type hints

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Shadow, Split
from registry_client.reports.comparison import compare_versions
from registry_client.stats.store import WindowWrite
from registry_client.stats.window import VersionStats, encode_window, window_of
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl as _gatectl
from tests.support.gateways import make_gateway
from tests.support.joined_labels import Row, log_and_label
from tests.support.wire import infer_request

GOOD = {"input": np.ones((2, 4), np.float32)}
BAD = {"input": np.ones((2, 5), np.float32)}  # INVALID_ARGUMENT: 5 features, 4 expected

SVG = "{http://www.w3.org/2000/svg}"


def _send(gateway: Gateway, inputs: dict[str, np.ndarray], count: int, version: str = "") -> None:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(count):
            try:
                stub.ModelInfer(infer_request("credit", inputs, version=version))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def served(redis_server, tmp_path: Path) -> str:
    """Known traffic through two replicas, both stopped (so flushed): returns the Redis URL.

    Rule: split 1=100, 3=0; shadow 2 (1's twin) mirrors 100%.
    replica a: 20 good + 5 bad requests; replica b: 10 good + 7 pinned to version 3.
    """
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    twin = onnx_models.classifier(seed=1)
    twin.doc_string = "retrained"
    for version, model, auc in (("1", onnx_models.classifier(seed=1), 0.91), ("2", twin, 0.93),
                                ("3", onnx_models.classifier(seed=3), 0.88)):  # fmt: skip
        path = onnx_models.save(model, tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops", metrics={"auc": auc})
    client.set_route("credit", [Split("1", 100), Split("3", 0)], [Shadow("2", 100)], actor="ops")
    client.close()
    replicas = [
        make_gateway(
            None,
            redis_url=redis_server.url,
            replica_id=name,
            stats_flush_seconds=3600,
            shadow_max_cpu_busy=1.0,
        )
        for name in ("replica-a", "replica-b")
    ]
    _send(replicas[0], GOOD, 20)
    _send(replicas[0], BAD, 5)
    _send(replicas[1], GOOD, 10)
    _send(replicas[1], GOOD, 7, version="3")
    for gateway in replicas:
        gateway.stop(grace_seconds=5)  # drains the shadows, then writes the statistics
    url: str = redis_server.url
    return url


def test_compare_shows_the_known_traffic_per_version(served):
    code, out, err = _gatectl(served, "--json", "compare", "credit", "--since", "15m")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["replicas"] == ["replica-a", "replica-b"]
    rows = {(r["version"], r["role"]): r for r in report["versions"]}
    assert list(rows) == [("1", "primary"), ("3", "primary"), ("2", "shadow")]
    one, three, twin = rows["1", "primary"], rows["3", "primary"], rows["2", "shadow"]
    assert (one["requests"], one["errors"], three["requests"], twin["requests"]) == (
        35, {"INVALID_ARGUMENT": 5}, 7, 30)  # fmt: skip
    assert one["error_rate"] == pytest.approx(5 / 35)
    assert (one["rule_percent"], three["rule_percent"], twin["rule_percent"]) == (100, 0, 100)
    assert one["observed_percent"] == pytest.approx(100 * 35 / 42)
    assert three["observed_percent"] == pytest.approx(100 * 7 / 42)
    assert twin["observed_percent"] == pytest.approx(100 * 30 / 42)  # mirrored, per primary
    assert twin["agreement"] == 1.0 and twin["compared_rows"] == 30 * 2 * 2  # 2 outputs x 2 rows
    assert twin["mean_abs_diff"] == 0.0
    assert one["agreement"] is None
    latency = one["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] < 1000
    assert [r["metrics"] for r in (one, three, twin)] == [{"auc": 0.91}, {"auc": 0.88},
                                                         {"auc": 0.93}]  # fmt: skip
    assert report["quality_task"] is None and "quality" not in one  # no quality config


def test_compare_table_and_version_filter(served):
    code, out, _ = _gatectl(served, "compare", "credit", "2", "3")
    assert code == 0
    versions, differences = out.split("\n\n")
    header, *rows = versions.splitlines()[1:]
    assert header.split()[:6] == ["version", "role", "rule", "share", "requests", "errors"]
    assert header.split()[-1] == "auc"
    assert [r.split()[:5] for r in rows] == [["3", "primary", "0%", "16.7%", "7"],
                                             ["2", "shadow", "100%", "71.4%", "30"]]  # fmt: skip
    assert rows[1].split()[-3:] == ["1.0000", "0", "0.93"]  # agreement, mean |diff|, auc
    # Each against version 1, the rule's heaviest primary, though it was not asked for.
    _, header, *rows = differences.splitlines()
    assert header.split()[:4] == ["version", "role", "baseline", "errors"]
    assert [r.split()[:3] for r in rows] == [["3", "primary", "1"], ["2", "shadow", "1"]]


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (["compare", "fraud"], 1, "model 'fraud' is not registered"),
        (["compare", "credit", "9"], 1, "model 'credit' has no version '9'"),
        (["compare", "credit", "--since", "soon"], 2, "--since: expected a duration such as"),
        (["compare", "credit", "--since", "30d"], 2, "at most 7d"),
    ],
)
def test_compare_rejects_what_it_cannot_answer(served, argv, exit_code, message, capsys):
    try:
        code, _, err = _gatectl(served, *argv)
    except SystemExit as usage:  # argparse's own exit for a bad flag
        code, err = int(str(usage.code)), ""
    assert code == exit_code
    assert message in err + capsys.readouterr().err


def test_a_shadows_share_counts_only_the_minutes_it_was_mirrored(redis_server, tmp_path):
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    now = window_of(time.time())
    before, during = VersionStats("1", "primary"), VersionStats("1", "primary")
    mirrored = VersionStats("2", "shadow")
    for _ in range(40):
        before.record("OK", 0.001)
    for _ in range(10):
        during.record("OK", 0.001)
        mirrored.record("OK", 0.001)
    client.stats.write("replica-a", [WindowWrite("credit", now - 2, encode_window([before])),
                                     WindowWrite("credit", now, encode_window([during, mirrored]))],
                       600)  # fmt: skip
    rows = {r["version"]: r for r in compare_versions(client, "credit", [], 900)["versions"]}
    assert rows["1"]["requests"] == 50 and rows["1"]["observed_percent"] == 100
    assert rows["2"]["requests"] == 10 and rows["2"]["observed_percent"] == 100  # not 20
    client.close()


def test_compare_shows_live_quality_and_coverage_beside_the_registered_metrics(
    redis_server, tmp_path
):
    client = RegistryClient.from_url(redis_server.url)
    config = QualityConfig("binary", "probabilities", 1, label_deadline_seconds=86400.0)
    client.create_model("credit", actor="ops", quality=config)
    for version, auc in (("1", 0.91), ("2", 0.93)):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops", metrics={"auc": auc})
    client.set_route("credit", [Split("1", 100)], [Shadow("2", 100)], actor="ops")
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200)
    scores = {v: np.array([float(f"{s:.4f}") for s in np.clip(labels * shift + rng.random(200)
                                                                * (1 - shift), 0, 1)])
              for v, shift in (("1", 0.3), ("2", 0.5))}  # fmt: skip
    now = time.time()
    rows = [Row(f"r{i}", int(now) - 300 + i, (),
                {("1", "primary"): scores["1"][i], ("2", "shadow"): scores["2"][i]},
                float(labels[i]) if i < 150 else None) for i in range(200)]  # fmt: skip
    log_and_label(client, "credit", config, rows, now)
    report = compare_versions(client, "credit", [], 900)
    assert report["quality_task"] == "binary"
    found = {(r["version"], r["role"]): r["quality"] for r in report["versions"]}
    for version, role in (("1", "primary"), ("2", "shadow")):
        live = found[version, role]
        y, s = labels[:150], scores[version][:150]
        assert (live["labelled"], live["logged"], live["coverage"]) == (150, 200, 0.75)
        assert live["metrics"]["precision"] == metrics.precision_score(y, s >= 0.5)
        assert live["metrics"]["recall"] == metrics.recall_score(y, s >= 0.5)
        assert live["metrics"]["auc_roc"] == pytest.approx(metrics.roc_auc_score(y, s), abs=0.005)
    client.close()
    # The predictions were made minutes before the rule was written: a window that holds them.
    code, out, _ = _gatectl(redis_server.url, "compare", "credit", "--since", "15m")
    assert code == 0
    header, one, _ = out.splitlines()[1:]
    columns = [name.strip() for name in header.split("  ") if name.strip()]
    assert columns[-6:] == ["auc", "live auc_roc", "live precision", "live recall", "labelled",
                            "coverage"]  # fmt: skip
    live_one = found["1", "primary"]["metrics"]
    assert one.split()[-6:] == ["0.91", f"{live_one['auc_roc']:.4f}",
                                f"{live_one['precision']:.4f}", f"{live_one['recall']:.4f}",
                                "150", "75.0%"]  # fmt: skip


def test_compare_plot_draws_each_versions_latency_histogram(served, tmp_path):
    picture = tmp_path / "latency.svg"
    code, out, err = _gatectl(served, "--json", "compare", "credit", "--plot", str(picture))
    assert code == 0 and err == f"wrote {picture}\n"
    report = json.loads(out)
    root = ElementTree.parse(picture).getroot()
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert root.get("role") == "img" and title is not None and desc is not None
    assert root.get("aria-labelledby", "").split() == [title.get("id"), desc.get("id")]
    assert root.findtext(f"{SVG}title", "").startswith("Latency of credit's versions")
    series = {line.get("data-series") for line in root.iter(f"{SVG}polyline")}
    drawn = {f"version {row['version']} ({row['role']})" for row in report["versions"]
             if row["latency_buckets"]}  # fmt: skip
    assert series == drawn and "version 1 (primary)" in drawn
    for row in report["versions"]:  # what is drawn is what the gateways counted
        assert sum(row["latency_buckets"].values()) == row["requests"] - sum(row["errors"].values())


def test_a_plot_that_cannot_be_written_is_refused_and_leaves_nothing(served, tmp_path):
    target = tmp_path / "absent" / "latency.svg"
    code, _, err = _gatectl(served, "compare", "credit", "--plot", str(target))
    assert code == 1 and f"--plot {target}: cannot be written" in err
    assert not (tmp_path / "absent").exists()

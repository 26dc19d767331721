"""Drift end to end: gateways sketch served inputs, gatectl sets references and reports drift."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from gateway.drift.recorder import DriftRecorder
from registry_client.cli import reference_data as drift_report
from registry_client.cli.main import main as gatectl
from registry_client.client import RegistryClient
from registry_client.drift.reference import FeatureReference
from registry_client.drift.sketch import FeatureSketch
from registry_client.records.rule_documents import Split
from tests.support import onnx_models
from tests.support.gateways import make_gateway, wait_until_ready
from tests.support.wire import infer_request

RNG = np.random.default_rng(3)
TRAINING = RNG.normal(0.0, 1.0, (5_000, 4)).astype(np.float32)


@pytest.fixture
def registry(redis_server, tmp_path: Path) -> Iterator[RegistryClient]:
    """credit 1 and 2 (4 FP32 features); the rule serves 1, 2 is deployed at weight 0; the
    reference of 1 is TRAINING."""
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    for version in ("1", "2"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    client.set_route("credit", [Split("1", 100), Split("2", 0)], actor="ops")
    data = tmp_path / "training.npy"
    np.save(data, TRAINING)
    assert (
        _gatectl(redis_server.url, "reference", "set", "credit", "1", "--data", str(data))[0] == 0
    )
    yield client
    client.close()


def _gatectl(url: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return gatectl(["--redis-url", url, *argv], {}, out, err), out.getvalue(), err.getvalue()


def _serve(address: str, rows: np.ndarray, version: str = "", per_request: int = 100) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for start in range(0, len(rows), per_request):
            batch = {"input": rows[start : start + per_request]}
            stub.ModelInfer(infer_request("credit", batch, version=version))


def _shifted(rows: int) -> np.ndarray:
    """Feature 0 moved by one standard deviation, the others as in training."""
    data = RNG.normal(0.0, 1.0, (rows, 4)).astype(np.float32)
    data[:, 0] += 1.0
    return data


@pytest.fixture
def gateway(redis_server, registry) -> Iterator[Gateway]:
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.2)
    assert gateway.drift_monitor is not None
    gateway.drift_monitor.refresh()  # the reference's bins, before any traffic
    yield gateway
    gateway.stop(grace_seconds=1)


def _flushed(gateway: Gateway) -> None:
    assert gateway.sketch_flusher is not None and gateway.sketch_flusher.flush()


def test_a_shifted_feature_alerts_and_the_others_do_not(redis_server, gateway):
    _serve(f"127.0.0.1:{gateway.grpc_port}", _shifted(3_000))
    _flushed(gateway)
    code, out, err = _gatectl(redis_server.url, "--json", "drift", "credit", "--since", "5m")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["version"] == "1" and report["rows"] == 3_000
    verdicts = {f["feature"]: f["verdict"] for f in report["features"]}
    assert verdicts == {"input[0]": "alert", "input[1]": "ok", "input[2]": "ok", "input[3]": "ok"}
    assert all(f["exact_bins"] and f["n"] == 3_000 for f in report["features"])
    assert report["dataset"] == "ok"  # one feature of four
    code, table, _ = _gatectl(redis_server.url, "drift", "credit", "--version", "1")
    assert code == 0 and "input[0]" in table and "alert" in table
    assert gateway.drift_monitor is not None
    gateway.drift_monitor.refresh()
    psi = gateway.registry.get_sample_value
    assert (
        psi("onnxgate_drift_psi", {"model": "credit", "version": "1", "feature": "input[0]"}) > 0.25
    )
    assert (
        psi("onnxgate_drift_ks", {"model": "credit", "version": "1", "feature": "input[1]"}) < 0.1
    )


def test_the_drift_gauges_say_what_gatectl_drift_says(redis_server, gateway):
    rows = _shifted(3_000)
    rows[::20, 3] = np.nan  # 5% of feature 3 missing
    _serve(f"127.0.0.1:{gateway.grpc_port}", rows)
    _flushed(gateway)
    code, out, _ = _gatectl(redis_server.url, "--json", "drift", "credit", "--since", "15m")
    assert code == 0
    report = {f["feature"]: f for f in json.loads(out)["features"]}
    assert gateway.drift_monitor is not None
    gateway.drift_monitor.refresh()
    value = gateway.registry.get_sample_value
    state = {"ok": 0, "warn": 1, "alert": 2}
    for feature, row in report.items():
        labels = {"model": "credit", "version": "1", "feature": feature}
        assert value("onnxgate_drift_state", labels) == state[row["verdict"]], feature
        assert value("onnxgate_drift_out_of_range_share", labels) == pytest.approx(
            row["out_of_range"]
        )
    missing = {"model": "credit", "version": "1", "feature": "input[3]"}
    assert value("onnxgate_drift_missing_rate", missing) == pytest.approx(0.05)
    assert value("onnxgate_drift_missing_rate", {**missing, "feature": "input[1]"}) == 0.0
    assert report["input[0]"]["verdict"] == report["input[3]"]["verdict"] == "alert"
    # Two drifting features of four: half the dataset.
    share = value("onnxgate_drift_dataset_drift_share", {"model": "credit", "version": "1"})
    assert share == 0.5


def test_a_version_without_enough_values_has_no_verdict_series(redis_server, gateway):
    _serve(f"127.0.0.1:{gateway.grpc_port}", _shifted(300))  # under the 1,000 a verdict needs
    _flushed(gateway)
    assert gateway.drift_monitor is not None
    gateway.drift_monitor.refresh()
    labels = {"model": "credit", "version": "1", "feature": "input[0]"}
    assert gateway.registry.get_sample_value("onnxgate_drift_psi", labels) is not None
    assert gateway.registry.get_sample_value("onnxgate_drift_state", labels) is None
    dataset = {"model": "credit", "version": "1"}
    assert gateway.registry.get_sample_value("onnxgate_drift_dataset_drift_share", dataset) is None


def test_a_version_is_compared_with_another_on_the_same_window(redis_server, gateway):
    address = f"127.0.0.1:{gateway.grpc_port}"
    _serve(address, RNG.normal(0.0, 1.0, (2_000, 4)).astype(np.float32))
    _serve(address, _shifted(2_000), version="2")
    _flushed(gateway)
    code, out, _ = _gatectl(redis_server.url, "--json", "drift", "credit", "--version", "2",
                            "--against", "1")  # fmt: skip
    assert code == 0
    verdicts = {f["feature"]: f["verdict"] for f in json.loads(out)["features"]}
    assert verdicts["input[0]"] == "alert" and verdicts["input[2]"] == "ok"


def test_reference_from_traffic_then_shown(redis_server, gateway):
    _serve(f"127.0.0.1:{gateway.grpc_port}", RNG.normal(0.0, 1.0, (1_500, 4)).astype(np.float32))
    _flushed(gateway)
    code, out, err = _gatectl(redis_server.url, "reference", "set", "credit", "2",
                              "--from-traffic", "1", "--since", "10m")  # fmt: skip
    assert (code, err) == (0, "")
    assert "source traffic:1" in out and "input[3]" in out
    code, out, _ = _gatectl(redis_server.url, "--json", "reference", "show", "credit", "2")
    shown = json.loads(out)
    assert shown["meta"]["rows"] == 1_500
    assert shown["features"]["input[0]"]["count"] == 1_500
    assert abs(shown["features"]["input[0]"]["mean"]) < 0.1


def test_a_redis_outage_loses_nothing_the_buffer_holds(redis_server, gateway):
    address = f"127.0.0.1:{gateway.grpc_port}"
    redis_server.stop()
    _serve(address, _shifted(1_200))  # served while Redis is away
    assert gateway.sketch_flusher is not None and not gateway.sketch_flusher.flush()
    redis_server.start()
    _flushed(gateway)
    client = RegistryClient.from_url(redis_server.url)
    merged = client.drift.read("credit", "1", 300)
    assert merged.rows == 1_200 and merged.features["input[0]"].count == 1_200
    assert gateway.registry.get_sample_value("onnxgate_sketch_dropped_total",
                                             {"model": "credit"}) is None  # fmt: skip
    client.close()


def test_a_busy_version_is_sketched_at_its_cap_not_in_full(redis_server, registry):
    gateway = make_gateway(None, redis_url=redis_server.url, drift_max_rows_per_second=50)
    address, served = f"127.0.0.1:{gateway.grpc_port}", 0
    try:
        # Four rate periods of load: the rows are all sketched until the first period that
        # measured them ends, then about 50 a second.
        started = time.monotonic()
        while time.monotonic() - started < 4.0:
            _serve(address, RNG.normal(0.0, 1.0, (100, 4)).astype(np.float32))
            served += 100
        _flushed(gateway)
    finally:
        gateway.stop(grace_seconds=1)
    merged = registry.drift.read("credit", "1", 300)
    assert 0 < merged.rows < 0.6 * served
    assert all(sketch.count == merged.rows for sketch in merged.features.values())


def test_a_full_buffer_drops_and_counts_rows():
    registry = CollectorRegistry()
    dropped = Counter("dropped", "", ["model"], registry=registry)
    recorder = DriftRecorder(dropped, buffer_rows=250)
    for _ in range(4):
        recorder.observe("credit", "1", {"input": np.ones((100, 4), np.float32)})
    assert registry.get_sample_value("dropped_total", {"model": "credit"}) == 200
    assert recorder.fold() == 200
    recorder.observe("credit", "1", {"input": np.ones((100, 4), np.float32)})  # room again
    assert recorder.fold() == 100


def test_unusual_inputs_are_sketched_or_skipped_without_failing():
    recorder = DriftRecorder(Counter("d", "", ["model"], registry=CollectorRegistry()), 10_000)
    odd = np.array([[np.nan, np.inf], [-np.inf, 1.0]], np.float32)
    recorder.observe("m", "1", {"odd": odd, "flag": np.array([True, False]),
                                "count": np.array([[3], [4]], np.int64),
                                "text": np.array([b"a", b"b"], dtype=object),
                                "image": np.zeros((2, 16, 16), np.uint8)})  # fmt: skip
    recorder.fold()
    (write,) = recorder.pending()
    assert json.loads(write.payload)["rows"] == 2  # rows of a request, once for all its inputs
    features = json.loads(write.payload)["features"]
    assert set(features) == {"odd[0]", "odd[1]", "flag", "count[0]", "image.mean", "image.std"}
    assert features["odd[0]"]["missing"] == 2 and features["odd[1]"]["missing"] == 1


@pytest.mark.timeout(120)  # three gateway processes: 44 s seen on a busy machine
def test_sketches_of_three_gateway_processes_merge_into_one_of_all_the_data(
    redis_server, registry, gateway_process, tmp_path
):
    empty = tmp_path / "empty"
    empty.mkdir()
    gateways = [gateway_process(empty, "--redis-url", redis_server.url,
                                "--drift-monitor-seconds", "0.2") for _ in range(3)]  # fmt: skip
    parts = [_shifted(n) for n in (1_000, 2_000, 3_000)]
    parts[2][:100, 1] = np.nan
    for g in gateways:
        with grpc.insecure_channel(g.address) as channel:
            wait_until_ready(pb_grpc.GRPCInferenceServiceStub(channel))
    time.sleep(1.0)  # each process has loaded the reference's bins
    for g, part in zip(gateways, parts, strict=True):
        _serve(g.address, part)
    for g in gateways:
        assert g.terminate() == 0  # a draining gateway folds and writes what it holds
    merged = registry.drift.read("credit", "1", 300)
    assert merged.rows == 6_000 and len(merged.replicas) == 3
    reference = registry.drift.get_reference("credit", "1")
    everything = np.concatenate(parts)
    for i in range(4):
        name = f"input[{i}]"
        whole = FeatureSketch()
        whole.update(everything[:, i], reference[name].bins)
        one = merged.features[name]
        assert (one.count, one.missing, one.below, one.above) == (
            whole.count, whole.missing, whole.below, whole.above)  # fmt: skip
        assert one.histogram is not None and whole.histogram is not None
        assert one.histogram.tolist() == whole.histogram.tolist()
        finite = everything[:, i][np.isfinite(everything[:, i])]
        for q in (0.05, 0.5, 0.95):
            rank = np.mean(finite <= one.kll.get_quantile(q))
            assert rank == pytest.approx(q, abs=0.02)


def test_reference_data_errors_name_the_problem(redis_server, registry, tmp_path):
    (tmp_path / "bad.txt").write_text("1,2,3,4\n")
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    cases = [
        (["--data", str(tmp_path / "missing.npy")], "no such file"),
        (["--data", str(tmp_path / "bad.txt")], "expected a .npy, .npz or .csv file"),
        (["--data", str(tmp_path / "strings.npy")], "is not numeric"),
    ]
    for argv, message in cases:
        code, _, err = _gatectl(redis_server.url, "reference", "set", "credit", "1", *argv)
        assert code == 1 and message in err, (argv, err)
    code, _, err = _gatectl(redis_server.url, "drift", "credit", "--version", "2")
    assert code == 1 and "has no reference profile" in err
    code, _, err = _gatectl(redis_server.url, "drift", "credit", "--version", "9")
    assert code == 1 and "'9'" in err


def test_a_large_csv_with_a_header_shows_progress(redis_server, registry, tmp_path, monkeypatch):
    path = tmp_path / "training.csv"
    rows = "\n".join(",".join(f"{v:.5f}" for v in row) for row in TRAINING[:2_000])
    path.write_text("age,income,debt,score\n" + rows + "\n")
    monkeypatch.setattr(drift_report, "PROGRESS_FROM_BYTES", 1)
    monkeypatch.setattr(drift_report, "_CHUNK_BYTES", 4096)
    progress = io.StringIO()
    data = drift_report.load_reference_data(registry, "credit", "1", path, progress)
    assert data["input"].shape == (2_000, 4)
    np.testing.assert_allclose(data["input"], TRAINING[:2_000], atol=1e-5)
    assert progress.getvalue().rstrip().endswith("100%")
    reference = FeatureReference.from_values(data["input"][:, 0])
    assert reference is not None and reference.count == 2_000


def test_closed_minutes_roll_into_the_hour_that_long_ranges_read(redis_server):
    clock = [3600.0 * 490_000 + 30]  # half a minute into an hour
    recorder = DriftRecorder(Counter("d", "", ["model"], registry=CollectorRegistry()), 10_000,
                             clock=lambda: clock[0])  # fmt: skip
    client = RegistryClient.from_url(redis_server.url)
    for minute in range(3):
        recorder.observe("credit", "1", {"input": np.full((10, 4), minute, np.float32)})
        client.drift.write("replica-a", recorder.pending(), 3600, 86400)
        clock[0] += 60
    client.drift.write("replica-a", recorder.pending(), 3600, 86400)
    client.drift.write("replica-a", recorder.pending(), 3600, 86400)  # the last one confirmed
    assert recorder.windows() == 1  # closed minutes written and forgotten; the open hour stays
    recent = client.drift.read("credit", "1", 120, now=clock[0])
    assert (recent.granularity, recent.rows) == ("m", 20)  # minutes 1 and 2 overlap the range
    hours = client.drift.read("credit", "1", 3 * 3600, now=clock[0])
    assert (hours.granularity, hours.rows) == ("h", 30)  # every closed minute, once
    assert hours.features["input[0]"].maximum == 2.0
    client.close()


def test_registered_feature_names_name_sketches_and_references(redis_server, gateway, tmp_path):
    url = redis_server.url
    artifact = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", "3")
    code, _, err = _gatectl(url, "register", "credit", "3", str(artifact),
                            "--feature-names", "age,income,debt,score")  # fmt: skip
    assert (code, err) == (0, "")
    np.save(tmp_path / "training.npy", TRAINING)
    assert _gatectl(url, "reference", "set", "credit", "3", "--data",
                    str(tmp_path / "training.npy"))[0] == 0  # fmt: skip
    assert _gatectl(url, "route", "set", "credit", "--split", "1=0,3=100")[0] == 0
    wait_until = time.monotonic() + 10
    while "3" not in gateway.versions.ready_versions().get("credit", {}):
        assert time.monotonic() < wait_until, "version 3 was not loaded"
        time.sleep(0.05)
    assert gateway.drift_monitor is not None
    gateway.drift_monitor.fold()  # what the gateway does every second: names and bins first
    _serve(f"127.0.0.1:{gateway.grpc_port}", _shifted(1_500), version="3")
    _flushed(gateway)
    code, out, _ = _gatectl(url, "--json", "drift", "credit", "--version", "3")
    features = {f["feature"]: f for f in json.loads(out)["features"]}
    assert list(features) == ["age", "debt", "income", "score"]
    assert features["age"]["verdict"] == "alert" and features["age"]["exact_bins"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("age,income", "expected 4 names, one per column, got 2"),
        ("other:a,b,c,d", "'other' is not an input"),
        ("age,age,debt,score", "'age' is given twice"),
        ("age,in come,debt,score", "expected letters, digits"),
    ],
)
def test_feature_names_are_checked_against_the_model(redis_server, registry, tmp_path, names,
                                                     message):  # fmt: skip
    artifact = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", "5")
    code, _, err = _gatectl(redis_server.url, "register", "credit", "5", str(artifact),
                            "--feature-names", names)  # fmt: skip
    assert code == 1 and message in err


def test_drift_plot_draws_each_features_quantile_curve_beside_the_reference(
    redis_server, gateway, tmp_path
):
    _serve(f"127.0.0.1:{gateway.grpc_port}", _shifted(3_000))
    _flushed(gateway)
    picture = tmp_path / "drift.svg"
    code, out, err = _gatectl(redis_server.url, "--json", "drift", "credit", "--plot",
                              str(picture))  # fmt: skip
    assert code == 0 and err == f"wrote {picture}\n"
    verdicts = {f["feature"]: f["verdict"] for f in json.loads(out)["features"]}
    svg = "{http://www.w3.org/2000/svg}"
    root = ElementTree.parse(picture).getroot()
    assert root.findtext(f"{svg}title", "").startswith("Drift of credit version 1 against")
    assert "input[0] alert" in root.findtext(f"{svg}desc", "")
    panels = {g.get("data-feature"): g for g in root.iter(f"{svg}g")}
    assert {name: g.get("data-verdict") for name, g in panels.items()} == verdicts
    # The shifted feature's live curve lies above its reference all along (SVG y grows
    # downwards) and far from it; an unmoved one's runs along it.
    gaps = {}
    for feature in ("input[0]", "input[1]"):
        reference, live = (
            [float(p.split(",")[1]) for p in line.get("points", "").split()]
            for line in panels[feature].iter(f"{svg}polyline")
        )
        gaps[feature] = [rf - lv for lv, rf in zip(live, reference, strict=True)]
    assert min(gaps["input[0]"]) > 0
    mean_gap = {f: sum(map(abs, g)) / len(g) for f, g in gaps.items()}
    assert mean_gap["input[0]"] > 10 * mean_gap["input[1]"]

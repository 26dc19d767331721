"""A real gateway counts each request under the rule revision that routed it, so right after
`gatectl route set`, `gatectl compare` measures the new rule on its own traffic."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import Shadow, Split
from tests.support import onnx_models
from tests.support.gatectl import run_gatectl
from tests.support.gateways import eventually, make_gateway
from tests.support.redis_server import RedisServer
from tests.support.wire import infer_request

INPUTS = {"input": np.ones((1, 4), np.float32)}


def _send(gateway: Gateway, count: int, version: str = "") -> None:
    with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(count):
            stub.ModelInfer(infer_request("credit", INPUTS, version=version))


def _revision(gateway: Gateway) -> int | None:
    route = gateway.routes.current().routes.get("credit")
    return None if route is None else route.revision


def test_compare_right_after_a_rule_change_counts_only_the_new_rules_traffic(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = RegistryClient.from_url(redis_server.url)
    client.create_model("credit", actor="ops")
    for version in ("1", "2", "3"):
        path = onnx_models.save(onnx_models.classifier(seed=1), tmp_path, "credit", version)
        client.register_version("credit", version, path, actor="ops")
    first = client.set_route("credit", [Split("1", 100)], [Shadow("3", 100)], actor="ops")
    gateway = make_gateway(None, redis_url=redis_server.url, replica_id="gw",
                           stats_flush_seconds=3600, shadow_max_cpu_busy=1.0)  # fmt: skip
    try:
        eventually(lambda: _revision(gateway) == first.revision, timeout=30)
        _send(gateway, 40)  # all to version 1, mirrored to 3, under the first rule
        code, _, err = run_gatectl(redis_server.url, "route", "set", "credit", "--split",
                                   "1=90,2=10", "--shadow", "3=100")  # fmt: skip
        assert (code, err) == (0, "")
        second = client.get_route("credit")
        assert second is not None
        eventually(lambda: _revision(gateway) == second.revision, timeout=30)
        _send(gateway, 200)
        _send(gateway, 5, version="2")  # pinned: counted under the rule in force
    finally:
        gateway.stop(grace_seconds=5)  # drains the shadows, then writes the statistics
    client.close()

    code, out, err = run_gatectl(redis_server.url, "--json", "compare", "credit")
    assert (code, err) == (0, "")
    report = json.loads(out)
    rows = {(r["version"], r["role"], r["revision"]): r for r in report["versions"]}
    assert set(rows) == {("1", "primary", second.revision), ("2", "primary", second.revision),
                         ("3", "shadow", second.revision)}  # fmt: skip
    one, two = rows["1", "primary", second.revision], rows["2", "primary", second.revision]
    assert one["requests"] + two["requests"] == 205  # none of the first rule's 40
    assert one["observed_percent"] + two["observed_percent"] == 100
    assert (one["rule_percent"], two["rule_percent"]) == (90, 10)
    assert rows["3", "shadow", second.revision]["requests"] == 200  # pinned ones are not mirrored
    assert two["difference"]["against"] == "1" and one["is_baseline"]

    code, out, _ = run_gatectl(redis_server.url, "--json", "compare", "credit", "--since", "15m")
    rows = {(r["version"], r["role"], r["revision"]): r for r in json.loads(out)["versions"]}
    assert rows["1", "primary", first.revision]["requests"] == 40
    assert rows["1", "primary", first.revision]["rule_percent"] == 100
    assert rows["3", "shadow", first.revision]["requests"] == 40
    assert rows["1", "primary", second.revision]["requests"] == one["requests"]

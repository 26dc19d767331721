"""Rule documents written straight into Redis, past gatectl's validation (a bug, a hand edit, a
hostile writer): none is applied, the last good rule keeps serving, and each is counted."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway._proto import grpc_service_pb2_grpc as pb_grpc
from gateway.app import Gateway
from registry_client.client import RegistryClient
from registry_client.records.rule_documents import MAX_ROUTE_VERSIONS, MAX_WEIGHT, RouteRule, Split
from tests.support.gateways import eventually, make_gateway, register_credit
from tests.support.wire import infer_request

REQUEST = infer_request("credit", {"input": np.ones((1, 4), np.float32)})
GOOD_VERSION = "1"

odd_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40)
# Versions that cannot be a registered one: invalid names, or valid names never registered.
bad_versions = st.one_of(
    odd_text.filter(lambda v: v not in ("1", "2")),
    st.from_regex(r"\Aghost-[a-z0-9]{1,8}\Z"),
)
bad_weights = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=MAX_WEIGHT + 1),
    st.just(math.nan),
    st.just(math.inf),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda w: not w.is_integer()),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
bad_percents = st.one_of(
    st.floats(max_value=-0.001),
    st.floats(min_value=100.001),
    st.just(math.nan),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
)


def _rule(split: list[Any], **fields: Any) -> dict[str, Any]:
    return {"model": "credit", "revision": 900, "split": split, "sticky": True, **fields}


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, allow_nan=True).encode()


@st.composite
def bad_documents(draw: st.DrawFn) -> bytes:
    """Documents each wrong in at least one way that must keep them from being applied."""
    good = [{"version": GOOD_VERSION, "weight": 100}]
    kind = draw(st.sampled_from([
        "bytes", "not_object", "unknown_version", "bad_weight", "zero_sum", "no_split",
        "duplicate", "bad_shadow", "shadow_unknown", "other_model", "huge", "deep",
        "too_many", "missing_split", "odd_split_entry", "bad_revision",
    ]))  # fmt: skip
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
        try:
            if isinstance(json.loads(raw), dict):  # a random object that happens to parse
                return raw + b"}"
        except ValueError:
            pass
        return raw
    if kind == "not_object":
        return _json(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(),
                                    st.text(max_size=10), st.none())))  # fmt: skip
    if kind == "unknown_version":
        return _json(_rule([{"version": draw(bad_versions), "weight": 100}]))
    if kind == "bad_weight":
        return _json(_rule([{"version": GOOD_VERSION, "weight": draw(bad_weights)}]))
    if kind == "zero_sum":
        return _json(_rule([{"version": GOOD_VERSION, "weight": 0},
                            {"version": "2", "weight": 0}]))  # fmt: skip
    if kind == "no_split":
        return _json(_rule([]))
    if kind == "duplicate":
        return _json(_rule([*good, {"version": GOOD_VERSION, "weight": 1}]))
    if kind == "bad_shadow":
        return _json(_rule(good, shadows=[{"version": "2", "percent": draw(bad_percents)}]))
    if kind == "shadow_unknown":
        return _json(_rule(good, shadows=[{"version": draw(bad_versions), "percent": 10}]))
    if kind == "other_model":
        model = draw(odd_text.filter(lambda m: m != "credit"))
        return _json({**_rule(good), "model": model})
    if kind == "huge":  # 10 MB in a field the schema would otherwise accept
        return _json(_rule(good, updated_by="x" * 10_000_000))
    if kind == "deep":
        depth = draw(st.integers(min_value=1_000, max_value=100_000))
        return b'{"model": "credit", "split": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "too_many":
        split = [{"version": str(i), "weight": 1} for i in range(MAX_ROUTE_VERSIONS + 1)]
        return _json(_rule(split))
    if kind == "bad_revision":
        revision = draw(st.sampled_from([math.inf, -math.inf, math.nan, "x", None, [1]]))
        return _json({**_rule(good), "revision": revision})
    if kind == "missing_split":
        return _json({"model": "credit", "revision": 900})
    entry = draw(st.one_of(st.integers(), st.text(max_size=5), st.just({"weight": 100}),
                           st.just({"version": GOOD_VERSION})))  # fmt: skip
    return _json(_rule([entry]))


def _rejected(gateway: Gateway) -> float:
    return sum(
        gateway.registry.get_sample_value("onnxgate_rules_rejected_total", {"reason": r}) or 0.0
        for r in ("invalid", "not_applied")
    )


def _served(stub: pb_grpc.GRPCInferenceServiceStub) -> str:
    return stub.ModelInfer(REQUEST, timeout=5).model_version


@pytest.mark.timeout(240)
def test_rule_documents_written_past_validation_are_refused_and_counted(
    redis_server, tmp_path: Path
):
    registry = RegistryClient.from_url(redis_server.url)
    register_credit(registry, tmp_path)  # all traffic on GOOD_VERSION
    raw = redis.Redis.from_url(redis_server.url)
    route_key, epoch_key = registry.keys.route("credit"), registry.keys.epoch
    gateway = make_gateway(None, redis_url=redis_server.url, rules_poll_seconds=0.05,
                           heartbeat_seconds=0.2)  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    good_revision = [1000]

    def revision() -> float | None:
        return gateway.registry.get_sample_value("onnxgate_route_revision", {"model": "credit"})

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(document=bad_documents())
    def check(document: bytes) -> None:
        with pytest.raises(Exception):  # noqa: B017  # the gateway must agree it is unusable
            rule = RouteRule.from_json(document)
            if rule.model != "credit" or not set(rule.versions) <= {"1", "2"}:
                raise ValueError("names a model or version that is not registered")
        applied = revision()
        before = _rejected(gateway)
        raw.set(route_key, document)
        raw.incr(epoch_key)
        eventually(lambda: _rejected(gateway) == before + 1, timeout=10)
        assert [_served(stub) for _ in range(5)] == [GOOD_VERSION] * 5
        assert revision() == applied
        # A good rule in between, so that the next bad document is a change to refuse.
        good_revision[0] += 1
        good = RouteRule("credit", (Split(GOOD_VERSION, 100),), revision=good_revision[0])
        raw.set(route_key, good.to_json())
        raw.incr(epoch_key)
        eventually(lambda: revision() == good_revision[0], timeout=10)

    try:
        assert _served(stub) == GOOD_VERSION
        check()
        assert gateway.registry.get_sample_value("onnxgate_redis_connected") == 1

        def reported_errors() -> object:
            heartbeat = registry.gateways().get(gateway.replica, {})
            return json.loads(heartbeat.get("errors", "null"))

        eventually(lambda: reported_errors() == {})  # the last rule was good: nothing to report
    finally:
        channel.close()
        gateway.stop(grace_seconds=1)
        raw.close()
        registry.close()

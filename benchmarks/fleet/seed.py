"""The registry the simulated fleet follows: models with a baseline and a canary version each,
a quality config (so their predictions are logged), a 90/10 rule, and yesterday's prediction
count, so today's prediction log has the bucket count a fleet in its second day has."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks.fleet.plan import FEATURES, VERSIONS, Workload, model_names
from registry_client.client import RegistryClient
from registry_client.connection import redis_client
from registry_client.drift.reference import FeatureReference
from registry_client.quality.predictions import DAY_SECONDS, day_of
from registry_client.quality.task import QualityConfig
from registry_client.records.rule_documents import Split

__all__ = ["QUALITY", "build_model", "seed_registry", "split_of"]

ACTOR = "fleet-benchmark"
QUALITY = QualityConfig(task="binary", score_output="probabilities", score_index=1,
                        segments=("region", "device"))  # fmt: skip


def build_model(path: Path, features: int, version: str) -> Path:
    """FP32 `input` [N, features] -> Gemm 2 -> Softmax -> `probabilities` [N, 2]."""
    rng = np.random.default_rng(features)
    weight = rng.standard_normal((features, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "W", "b"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)],
        "fleet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weight, "W"),
                     numpy_helper.from_array(np.zeros(2, np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = f"version {version}"  # each version's bytes differ
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def split_of(canary_percent: int) -> list[Split]:
    return [Split("1", 100 - canary_percent), Split("2", canary_percent)]


def seed_registry(registry: RegistryClient, url: str, work: Path, workload: Workload,
                  replicas: int) -> None:  # fmt: skip
    """Write the models, versions, configs, rules (and references) the fleet serves."""
    canary = round(workload.canary_share * 100)
    for index, model in enumerate(model_names(workload.models)):
        features = FEATURES[index % len(FEATURES)]
        registry.create_model(model, actor=ACTOR, quality=QUALITY)
        for version in VERSIONS:
            path = build_model(work / "models" / model / version / "model.onnx", features,
                               version)  # fmt: skip
            registry.register_version(model, version, path, actor=ACTOR)
            if workload.drift_references:
                _set_reference(registry, model, version, features)
        registry.set_route(model, split_of(canary), actor=ACTOR, reason="fleet benchmark")
    _seed_yesterday(registry, url, workload, replicas)


def _set_reference(registry: RegistryClient, model: str, version: str, features: int) -> None:
    rng = np.random.default_rng(features)
    values = rng.normal(size=(5000, features))
    names = [f"input[{i}]" for i in range(features)]
    scores = rng.uniform(size=5000)
    columns = {name: values[:, i] for i, name in enumerate(names)}
    columns |= {"output:probabilities[0]": 1 - scores, "output:probabilities[1]": scores}
    references = {}
    for name, column in columns.items():
        reference = FeatureReference.from_values(column)
        if reference is not None:
            references[name] = reference
    registry.drift.set_reference(model, version, references, {"rows": 5000}, actor=ACTOR)


def _seed_yesterday(registry: RegistryClient, url: str, workload: Workload,
                    replicas: int) -> None:  # fmt: skip
    """Yesterday's logged predictions of each model, as this fleet logs a day: the first
    writer of today sizes today's buckets from it (PredictionStore), as on a fleet's second
    day and every one after."""
    per_model_day = workload.requests_per_second / workload.models * replicas * DAY_SECONDS
    yesterday = day_of(time.time()) - 1
    client = redis_client(url)
    try:
        for model in model_names(workload.models):
            key = registry.keys.prediction_count(model, yesterday)
            client.set(key, math.ceil(per_model_day), ex=3 * DAY_SECONDS)
    finally:
        client.close()

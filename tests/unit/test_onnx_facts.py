"""The framework facts read from an ONNX file: producer, IR version, opsets, doc string and
metadata, cut to size; and garbage refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from registry_client.cards.onnx_facts import (
    MAX_FACT_CHARS,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_PROPS,
    onnx_facts,
)
from registry_client.errors import Rejected
from tests.support.onnx_models import classifier


def saved_bytes(model: onnx.ModelProto, tmp_path: Path) -> bytes:
    """The model as a file holds it."""
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path.read_bytes()


def described_classifier() -> onnx.ModelProto:
    """classifier() with what an exporter writes about it."""
    model = classifier()
    model.producer_name = "skl2onnx"
    model.producer_version = "1.17.0"
    model.domain = "ai.example.churn"
    model.model_version = 3
    model.doc_string = "Churn classifier: logistic regression on four features."
    helper.set_model_props(model, {"author": "churn-team", "training_run": "run-2024-07-01"})
    onnx.checker.check_model(model)
    return model


def several_domains() -> onnx.ModelProto:
    """A Binarizer (ai.onnx.ml) then a Relu (the default domain), also importing a custom
    domain as converters do for their own operators."""
    graph = helper.make_graph(
        [
            helper.make_node("Binarizer", ["x"], ["bits"], domain="ai.onnx.ml", threshold=0.5),
            helper.make_node("Relu", ["bits"], ["y"]),
        ],
        "binarize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    opsets = [helper.make_opsetid(d, v) for d, v in [("", 17), ("ai.onnx.ml", 3), ("com.ex", 1)]]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model)
    return model


def test_facts_of_a_described_model(tmp_path):
    facts = onnx_facts(saved_bytes(described_classifier(), tmp_path))
    assert facts == {
        "producer_name": "skl2onnx",
        "producer_version": "1.17.0",
        "ir_version": onnx.IR_VERSION,
        "opset_imports": {"ai.onnx": 17},
        "model_version": 3,
        "domain": "ai.example.churn",
        "doc_string": "Churn classifier: logistic regression on four features.",
        "graph_name": "classifier",
        "metadata_props": {"author": "churn-team", "training_run": "run-2024-07-01"},
        "truncated": [],
    }


def test_facts_are_plain_json(tmp_path):
    facts = onnx_facts(saved_bytes(described_classifier(), tmp_path))
    assert json.loads(json.dumps(facts)) == facts


def test_facts_of_a_bare_model_are_empty_text(tmp_path):
    facts = onnx_facts(saved_bytes(classifier(), tmp_path))
    assert (facts["producer_name"], facts["producer_version"], facts["doc_string"]) == ("", "", "")
    assert (facts["model_version"], facts["metadata_props"]) == (0, {})


def test_opset_of_every_domain_is_listed(tmp_path):
    facts = onnx_facts(saved_bytes(several_domains(), tmp_path))
    assert facts["opset_imports"] == {"ai.onnx": 17, "ai.onnx.ml": 3, "com.ex": 1}
    assert facts["graph_name"] == "binarize"


def test_long_doc_string_keeps_its_start(tmp_path):
    model = classifier()
    model.doc_string = "d" * 10 + "x" * (3 * MAX_FACT_CHARS)
    facts = onnx_facts(saved_bytes(model, tmp_path))
    assert facts["doc_string"] == model.doc_string[:MAX_FACT_CHARS]
    assert facts["truncated"] == [
        f"doc_string: {3 * MAX_FACT_CHARS + 10} characters, the first {MAX_FACT_CHARS} kept"
    ]


def test_long_metadata_value_and_key_keep_their_start(tmp_path):
    model = classifier()
    long_key = "k" * (MAX_METADATA_KEY_CHARS + 1)
    helper.set_model_props(model, {"vocab": "v" * (MAX_FACT_CHARS + 1), long_key: "short"})
    facts = onnx_facts(saved_bytes(model, tmp_path))
    assert facts["metadata_props"] == {
        "vocab": "v" * MAX_FACT_CHARS,
        long_key[:MAX_METADATA_KEY_CHARS]: "short",
    }
    assert facts["truncated"] == [
        f"metadata_props['vocab']: {MAX_FACT_CHARS + 1} characters,"
        f" the first {MAX_FACT_CHARS} kept",
        f"a metadata_props key: {MAX_METADATA_KEY_CHARS + 1} characters,"
        f" the first {MAX_METADATA_KEY_CHARS} kept",
    ]


def test_many_metadata_entries_keep_the_first(tmp_path):
    model = classifier()
    helper.set_model_props(model, {f"key{i:03}": str(i) for i in range(MAX_METADATA_PROPS + 5)})
    facts = onnx_facts(saved_bytes(model, tmp_path))
    assert list(facts["metadata_props"]) == [f"key{i:03}" for i in range(MAX_METADATA_PROPS)]
    assert facts["truncated"] == [
        f"metadata_props: {MAX_METADATA_PROPS + 5} entries, the first {MAX_METADATA_PROPS} kept"
    ]


def test_external_data_is_not_read(tmp_path):
    weights = numpy_helper.from_array(np.ones((64, 64), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.producer_name = "exporter"
    path = tmp_path / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    (tmp_path / "weights.bin").unlink()  # were it read, reading would fail
    assert onnx_facts(path.read_bytes())["producer_name"] == "exporter"


def test_text_that_is_not_utf8_is_replaced(tmp_path):
    data = saved_bytes(classifier(), tmp_path)
    data += b"\x12\x03\xff\xfeA"  # field 2 (producer_name), 3 bytes that are not UTF-8
    assert onnx_facts(data)["producer_name"] == "\ufffd\ufffdA"


def test_truncated_file_is_rejected(tmp_path):
    data = saved_bytes(described_classifier(), tmp_path)
    with pytest.raises(Rejected, match=r"^not an ONNX model: protobuf cannot parse it"):
        onnx_facts(data[: len(data) // 2])


def test_empty_file_is_rejected():
    # Protobuf parses nothing as a message with nothing set.
    with pytest.raises(Rejected, match=r"^not an ONNX model: it has no IR version or no graph$"):
        onnx_facts(b"")


def test_text_file_is_rejected():
    with pytest.raises(Rejected, match=r"^not an ONNX model"):
        onnx_facts(b"name,score\nalice,0.9\n")


def test_random_bytes_are_rejected():
    rng = random.Random(7)
    for _ in range(200):
        garbage = rng.randbytes(rng.randrange(1, 300))
        with pytest.raises(Rejected, match=r"^not an ONNX model"):
            onnx_facts(garbage)

"""schema_mismatches() on the signatures onnxruntime reads from real models: what keeps a
candidate version from serving the callers of a reference version, and what does not."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from onnx import TensorProto

from registry_client.errors import Rejected
from registry_client.records.artifacts import signature
from registry_client.records.compatibility import VersionSchema, schema_mismatches
from tests.support.onnx_models import TensorSpec, classifier, interface

FLOAT, DOUBLE, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64
INPUT: TensorSpec = ("input", FLOAT, ["N", 4])
OUTPUT: TensorSpec = ("probabilities", FLOAT, ["N", 2])


def schema(
    inputs: Sequence[TensorSpec] = (INPUT,),
    outputs: Sequence[TensorSpec] = (OUTPUT,),
    feature_names: Mapping[str, Sequence[str]] | None = None,
) -> VersionSchema:
    """The schema of a model with these inputs and outputs, as onnxruntime reports them."""
    model = interface(inputs, outputs).SerializeToString()
    return VersionSchema(signature(model, Path("x.onnx")), feature_names or {})


def stored(version: VersionSchema) -> dict[str, str]:
    """The fields of a version record, written as register_version() writes them."""
    return {
        "signature": json.dumps(version.signature, sort_keys=True),
        "feature_names": json.dumps(version.feature_names, sort_keys=True),
        "sha256": "0" * 64,
    }


def test_identical_signatures_are_compatible() -> None:
    assert schema_mismatches(schema(), schema()) == []


def test_retrained_classifier_is_compatible() -> None:
    old, new = (classifier(seed=seed).SerializeToString() for seed in (0, 1))
    reference = VersionSchema(signature(old, Path("old.onnx")), {})
    assert schema_mismatches(reference, VersionSchema(signature(new, Path("new.onnx")), {})) == []


def test_missing_input_is_a_mismatch() -> None:
    reference = schema(inputs=[INPUT, ("mask", INT64, ["N"])])
    assert schema_mismatches(reference, schema()) == [
        'input "mask": missing, expected tensor(int64) [-1]'
    ]


def test_extra_input_is_a_mismatch() -> None:
    candidate = schema(inputs=[INPUT, ("mask", INT64, ["N"])])
    assert schema_mismatches(schema(), candidate) == [
        'input "mask": extra tensor(int64) [-1], expected none (callers do not send it)'
    ]


def test_input_datatype_differs() -> None:
    candidate = schema(inputs=[("input", DOUBLE, ["N", 4])])
    assert schema_mismatches(schema(), candidate) == [
        'input "input": datatype tensor(double), expected tensor(float)'
    ]


def test_input_rank_differs() -> None:
    candidate = schema(inputs=[("input", FLOAT, ["N", 4, 1])])
    assert schema_mismatches(schema(), candidate) == [
        'input "input": rank 3 [-1, 4, 1], expected rank 2 [-1, 4]'
    ]


@pytest.mark.parametrize(
    ("expected", "got", "message"),
    [
        (["N", 4], ["N", 5],
         'input "input": shape [-1, 5], expected [-1, 4] (dimension 1 differs)'),
        ([2, 3, 4], [2, 5, 6], 'input "input": shape [2, 5, 6], expected [2, 3, 4]'
                               " (dimensions 1 and 2 differ)"),
    ],
)  # fmt: skip
def test_fixed_input_dimension_differs(
    expected: list[int | str], got: list[int | str], message: str
) -> None:
    reference = schema(inputs=[("input", FLOAT, expected)])
    assert schema_mismatches(reference, schema(inputs=[("input", FLOAT, got)])) == [message]


def test_dynamic_input_dimension_made_fixed_is_a_mismatch() -> None:
    candidate = schema(inputs=[("input", FLOAT, [1, 4])])
    assert schema_mismatches(schema(), candidate) == [
        'input "input": shape [1, 4], expected [-1, 4] (dimension 0 is fixed; callers send any'
        " size)"
    ]


def test_fixed_input_dimension_made_dynamic_is_compatible() -> None:
    reference = schema(inputs=[("input", FLOAT, [1, 4])])
    assert schema_mismatches(reference, schema(inputs=[("input", FLOAT, ["batch", "width"])])) == []


def test_missing_output_is_a_mismatch() -> None:
    reference = schema(outputs=[OUTPUT, ("logits", FLOAT, ["N", 2])])
    assert schema_mismatches(reference, schema()) == [
        'output "logits": missing, expected tensor(float) [-1, 2]'
    ]


def test_extra_output_is_compatible() -> None:
    candidate = schema(outputs=[OUTPUT, ("logits", FLOAT, ["N", 2])])
    assert schema_mismatches(schema(), candidate) == []


@pytest.mark.parametrize(
    ("got", "message"),
    [
        (("probabilities", DOUBLE, ["N", 2]),
         'output "probabilities": datatype tensor(double), expected tensor(float)'),
        (("probabilities", FLOAT, ["N"]),
         'output "probabilities": rank 1 [-1], expected rank 2 [-1, 2]'),
        (("probabilities", FLOAT, ["N", 3]),
         'output "probabilities": shape [-1, 3], expected [-1, 2] (dimension 1 differs)'),
    ],
)  # fmt: skip
def test_output_differs(got: TensorSpec, message: str) -> None:
    assert schema_mismatches(schema(), schema(outputs=[got])) == [message]


@pytest.mark.parametrize(
    ("expected", "got"), [(["N", 2], [8, 2]), ([8, 2], ["N", 2]), ([8, 2], ["M", "K"])]
)
def test_output_dimension_dynamic_against_fixed_is_compatible(
    expected: list[int | str], got: list[int | str]
) -> None:
    reference = schema(outputs=[("probabilities", FLOAT, expected)])
    assert schema_mismatches(reference, schema(outputs=[("probabilities", FLOAT, got)])) == []


def test_feature_names_in_another_order_are_a_mismatch() -> None:
    reference = schema(feature_names={"input": ["age", "height", "weight", "income"]})
    candidate = schema(feature_names={"input": ["age", "weight", "height", "income"]})
    assert schema_mismatches(reference, candidate) == [
        'input "input": feature names ["age", "weight", "height", "income"], expected'
        ' ["age", "height", "weight", "income"]'
    ]


def test_long_feature_names_are_shown_around_the_first_difference() -> None:
    inputs: list[TensorSpec] = [("input", FLOAT, ["N", 40])]
    names = [f"f{i}" for i in range(40)]
    renamed = [*names[:20], "g20", *names[21:]]
    reference = schema(inputs, feature_names={"input": names})
    candidate = schema(inputs, feature_names={"input": renamed})
    assert schema_mismatches(reference, candidate) == [
        'input "input": feature names [..., "f18", "f19", "g20", "f21", "f22", "f23", ...]'
        ' (40 names), expected [..., "f18", "f19", "f20", "f21", "f22", "f23", ...] (40 names)'
        " (first difference at column 20)"
    ]


def test_feature_names_of_one_version_only_are_not_compared() -> None:
    reference = schema(feature_names={"input": ["a", "b", "c", "d"]})
    assert schema_mismatches(reference, schema()) == []
    assert schema_mismatches(schema(), reference) == []


def test_every_mismatch_is_reported_inputs_then_extra_inputs_then_outputs() -> None:
    reference = schema(
        inputs=[INPUT, ("mask", INT64, ["N"])],
        outputs=[OUTPUT, ("logits", FLOAT, ["N", 2])],
        feature_names={"input": ["a", "b", "c", "d"]},
    )
    candidate = schema(
        inputs=[("extra", FLOAT, [1]), ("input", DOUBLE, [1, 5])],
        outputs=[("probabilities", INT64, ["N", 2, 1])],
        feature_names={"input": ["a", "b", "c", "e", "f"]},
    )
    assert schema_mismatches(reference, candidate) == [
        'input "input": datatype tensor(double), expected tensor(float)',
        'input "input": shape [1, 5], expected [-1, 4] (dimension 1 differs)',
        'input "input": shape [1, 5], expected [-1, 4] (dimension 0 is fixed; callers send any'
        " size)",
        'input "input": feature names ["a", "b", "c", "e", "f"], expected ["a", "b", "c", "d"]',
        'input "mask": missing, expected tensor(int64) [-1]',
        'input "extra": extra tensor(float) [1], expected none (callers do not send it)',
        'output "probabilities": datatype tensor(int64), expected tensor(float)',
        'output "probabilities": rank 3 [-1, 2, 1], expected rank 2 [-1, 2]',
        'output "logits": missing, expected tensor(float) [-1, 2]',
    ]


def test_from_record_reads_what_register_version_stores() -> None:
    version = schema(feature_names={"input": ["a", "b", "c", "d"]})
    assert VersionSchema.from_record(stored(version)) == version


def test_from_record_without_feature_names_has_none() -> None:
    fields = stored(schema())
    del fields["feature_names"]
    assert VersionSchema.from_record(fields).feature_names == {}


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("signature", None, 'field "signature" is missing'),
        ("signature", "", 'field "signature" is not JSON'),
        ("signature", '{"inputs": [', 'field "signature" is not JSON'),
        ("signature", "[]", 'field "signature": expected {"inputs"'),
        ("signature", '{"inputs": [], "outputs": [{"name": "y", "type": "tensor(float)"}]}',
         'field "signature": outputs[0].shape: expected a list of integers'),
        ("feature_names", "{'input': ['a']}", 'field "feature_names" is not JSON'),
        ("feature_names", '{"input": "a,b"}', 'field "feature_names": \'input\': expected a list'),
    ],
)  # fmt: skip
def test_from_record_rejects_a_field_missing_or_malformed(
    field: str, value: str | None, problem: str
) -> None:
    fields = stored(schema())
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    with pytest.raises(Rejected, match="^" + re.escape(problem)):
        VersionSchema.from_record(fields)

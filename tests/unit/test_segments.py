"""A request's segment values: parameters `segment.<name>`, else metadata `x-segment-<name>`;
unusable values are missing, unknown names counted."""

from __future__ import annotations

from gateway._proto import grpc_service_pb2 as pb
from gateway.quality.segments import segment_parameters, segment_values
from registry_client.quality.predictions import MISSING


def request_with(**parameters: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="credit")
    for key, value in parameters.items():
        target = request.parameters[key.replace("__", ".")]
        if isinstance(value, bool):
            target.bool_param = value
        elif isinstance(value, int):
            target.int64_param = value
        elif isinstance(value, float):
            target.double_param = value
        else:
            assert isinstance(value, str)
            target.string_param = value
    return request


def values_of(
    names: tuple[str, ...], request: pb.ModelInferRequest,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[tuple[str, ...], int]:  # fmt: skip
    """What the recorder reads: the parameters' text taken on the request path, the
    metadata as the call had it."""
    return segment_values(names, segment_parameters(request.parameters), metadata)


def test_the_request_path_keeps_the_segment_parameters_text_only():
    request = request_with(segment__gender="F", segment__age_band=3, routing_key="k")
    assert segment_parameters(request.parameters) == {"gender": "F", "age_band": "3"}
    assert segment_parameters(pb.ModelInferRequest().parameters) == {}


def test_values_come_from_parameters_of_any_kind_in_the_models_order():
    request = request_with(segment__gender="F", segment__age_band=3, segment__vip=True)
    values, unknown = values_of(("age_band", "gender", "vip"), request)
    assert values == ("3", "F", "true")
    assert unknown == 0


def test_metadata_fills_what_parameters_do_not_say():
    request = request_with(segment__gender="F")
    metadata = (("x-segment-gender", "M"), ("x-segment-age_band", "18-25"))
    values, _ = values_of(("gender", "age_band"), request, metadata)
    assert values == ("F", "18-25")  # the parameter wins over the metadata


def test_absent_empty_unprintable_or_long_values_are_missing():
    request = request_with(segment__a="", segment__b="x\ny", segment__c="v" * 65)
    values, _ = values_of(("a", "b", "c", "d"), request)
    assert values == (MISSING,) * 4


def test_segment_names_the_model_does_not_have_are_counted_once_each():
    request = request_with(segment__region="eu", segment__gender="F", routing_key="k")
    metadata = (("x-segment-region", "eu"), ("x-segment-device", "ios"), ("x-request-id", "1"))
    values, unknown = values_of(("gender",), request, metadata)
    assert values == ("F",)
    assert unknown == 2  # region (twice) and device

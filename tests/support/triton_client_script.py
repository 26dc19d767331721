"""Drive a gateway with the unmodified tritonclient.grpc API and print what it observed.

Runs in the tritonclient virtualenv (its generated `inference` protos clash with the
gateway's in one process), so it imports nothing from this repository:

    .venv-triton/bin/python tests/support/triton_client_script.py --url 127.0.0.1:8001 \\
        --checks health,identity

The repository served must hold `classifier` (FP32 `input` [N,4] -> `probabilities`, `logits`
[N,2]) with versions 1 and 2, and `identity_<datatype>` (x [N,3] -> y [N,3]) for each
datatype in IDENTITY_INPUTS. The script asserts nothing: it prints ONE JSON object, keyed by
check name; every observed call is `{"ok": value}` or, when tritonclient raised
InferenceServerException, `{"error": {"status": ..., "message": ...}}`. Arrays are nested
lists (BYTES elements decoded as UTF-8), numpy dtypes are strings. Any other exception crashes
the script with a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import numpy as np

# Installed only in the tritonclient virtualenv, never in the one mypy runs in.
import tritonclient.grpc as grpcclient  # type: ignore[import-not-found]
from tritonclient.utils import InferenceServerException  # type: ignore[import-not-found]

CLASSIFIER = "classifier"
ABSENT = "absent"

# One input per datatype, with the edge values a codec could get wrong.
IDENTITY_INPUTS: dict[str, np.ndarray] = {
    "FP32": np.array([[1.5, -2.25, 3.0e-8], [np.pi, -0.0, 1.0e30]], dtype=np.float32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [1, -1, 42]], dtype=np.int64),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, -1, 42]], dtype=np.int32),
    "UINT8": np.array([[0, 255, 7], [1, 128, 3]], dtype=np.uint8),
    "FP16": np.array([[0.5, -65504.0, 1.0e-3], [65504.0, -0.0, 6.0e-8]], dtype=np.float16),
    "BOOL": np.array([[True, False, True], [False, False, True]], dtype=np.bool_),
    "BYTES": np.array(
        [[b"a", b"", "h\u00e9llo".encode()], [b"x" * 300, "\u65e5\u672c".encode(), b"end"]],
        dtype=np.object_,
    ),
}

Observation = dict[str, object]


def _error(exc: InferenceServerException) -> Observation:
    return {"error": {"status": exc.status(), "message": exc.message()}}


def _observe(call: Callable[[], object]) -> Observation:
    """{"ok": value} or {"error": {...}} for tritonclient's own exception; others propagate."""
    try:
        return {"ok": call()}
    except InferenceServerException as exc:
        return _error(exc)


def _to_json(array: np.ndarray | None) -> object:
    if array is None:
        return None
    if array.dtype == np.object_:
        decode = np.vectorize(
            lambda item: item.decode() if isinstance(item, bytes) else str(item), otypes=[object]
        )
        return decode(array).tolist()
    return array.tolist()


def _element_types(array: np.ndarray | None) -> list[str] | None:
    if array is None:
        return None
    return sorted({type(item).__name__ for item in array.reshape(-1)})


def _infer(
    client: grpcclient.InferenceServerClient,
    model: str,
    name: str,
    array: np.ndarray,
    datatype: str,
    *,
    version: str = "",
    outputs: list[str] | None = None,
) -> Observation:
    """One ModelInfer through client.infer; every output of the response, as lists."""
    infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    requested = None
    if outputs is not None:
        requested = [grpcclient.InferRequestedOutput(o) for o in outputs]
    try:
        result = client.infer(model, [infer_input], model_version=version, outputs=requested)
    except InferenceServerException as exc:
        return _error(exc)
    response = result.get_response()
    observed: dict[str, object] = {}
    for tensor in response.outputs:
        data = result.as_numpy(tensor.name)
        observed[tensor.name] = {
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
            "dtype": None if data is None else str(data.dtype),
            "element_types": _element_types(data),
            "data": _to_json(data),
        }
    return {
        "ok": {
            "model_name": response.model_name,
            "model_version": response.model_version,
            "output_names": [t.name for t in response.outputs],
            "outputs": observed,
        }
    }


def check_health(client: grpcclient.InferenceServerClient) -> Observation:
    """is_server_live and is_server_ready."""
    return {
        "live": _observe(client.is_server_live),
        "ready": _observe(client.is_server_ready),
    }


def check_model_ready(client: grpcclient.InferenceServerClient) -> Observation:
    """is_model_ready for the classifier (default and pinned) and for an absent model."""
    return {
        "classifier": _observe(lambda: client.is_model_ready(CLASSIFIER)),
        "classifier_v1": _observe(lambda: client.is_model_ready(CLASSIFIER, "1")),
        "absent": _observe(lambda: client.is_model_ready(ABSENT)),
    }


def check_metadata(client: grpcclient.InferenceServerClient) -> Observation:
    """get_model_metadata(as_json=True), default version and version 1."""
    return {
        "default": _observe(lambda: client.get_model_metadata(CLASSIFIER, as_json=True)),
        "v1": _observe(
            lambda: client.get_model_metadata(CLASSIFIER, model_version="1", as_json=True)
        ),
    }


def check_config(client: grpcclient.InferenceServerClient) -> Observation:
    """get_model_config(as_json=True) for the classifier."""
    return {"classifier": _observe(lambda: client.get_model_config(CLASSIFIER, as_json=True))}


def check_server_metadata(client: grpcclient.InferenceServerClient) -> Observation:
    """get_server_metadata(as_json=True)."""
    return {"server": _observe(lambda: client.get_server_metadata(as_json=True))}


def check_identity(client: grpcclient.InferenceServerClient) -> Observation:
    """Each datatype's input through its identity model."""
    observed: Observation = {}
    for datatype, array in IDENTITY_INPUTS.items():
        observed[datatype] = {
            "input": _to_json(array),
            "input_dtype": str(array.dtype),
            "input_element_types": _element_types(array),
            "result": _infer(client, f"identity_{datatype.lower()}", "x", array, datatype),
        }
    return observed


def check_classifier(client: grpcclient.InferenceServerClient) -> Observation:
    """The classifier on one batch: default version, version '1', only 'logits' requested."""
    batch = np.random.default_rng(7).normal(0, 1, (3, 4)).astype(np.float32)
    return {
        "input": _to_json(batch),
        "default": _infer(client, CLASSIFIER, "input", batch, "FP32"),
        "v1": _infer(client, CLASSIFIER, "input", batch, "FP32", version="1"),
        "logits_only": _infer(client, CLASSIFIER, "input", batch, "FP32", outputs=["logits"]),
    }


def check_errors(client: grpcclient.InferenceServerClient) -> Observation:
    """Requests the gateway must refuse: wrong shape, wrong datatype, unknown model."""
    return {
        "wrong_shape": _infer(client, CLASSIFIER, "input", np.zeros((1, 5), np.float32), "FP32"),
        "wrong_datatype": _infer(client, CLASSIFIER, "input", np.zeros((1, 4), np.float64), "FP64"),
        "unknown_model": _infer(client, ABSENT, "input", np.zeros((1, 4), np.float32), "FP32"),
    }


def check_request_id(client: grpcclient.InferenceServerClient) -> Observation:
    """The classifier with request_id, and with an x-request-id header; an unknown model with
    the header. infer() calls the stub without with_call, so its InferResult holds only the
    response message: its `id` is observed; the trailers are out of tritonclient's reach."""
    batch = np.ones((1, 4), np.float32)
    infer_input = grpcclient.InferInput("input", [1, 4], "FP32")
    infer_input.set_data_from_numpy(batch)
    headers = {"x-request-id": "trace-7"}

    def response_id(**kwargs: object) -> Callable[[], object]:
        def call() -> object:
            result = client.infer(CLASSIFIER, [infer_input], **kwargs)
            response = result.get_response()
            return {"id": response.id, "model_version": response.model_version}

        return call

    return {
        "with_id": _observe(response_id(request_id="req-42")),
        "with_id_and_header": _observe(response_id(request_id="req-43", headers=headers)),
        "without_id": _observe(response_id()),
        "unknown_model": _observe(
            lambda: client.infer(ABSENT, [infer_input], request_id="req-44", headers=headers)
        ),
    }


CHECKS: dict[str, Callable[[grpcclient.InferenceServerClient], Observation]] = {
    "health": check_health,
    "model_ready": check_model_ready,
    "metadata": check_metadata,
    "config": check_config,
    "server_metadata": check_server_metadata,
    "identity": check_identity,
    "classifier": check_classifier,
    "errors": check_errors,
    "request_id": check_request_id,
}


def _check_names(value: str) -> list[str]:
    names = [n for n in value.split(",") if n]
    unknown = [n for n in names if n not in CHECKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    return names


def main(argv: list[str]) -> int:
    """Run the checks named on the command line and print their observations as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="host:port of the gateway's gRPC server")
    parser.add_argument("--checks", type=_check_names, required=True, help="comma-separated")
    args = parser.parse_args(argv)
    with grpcclient.InferenceServerClient(url=args.url) as client:
        observed = {name: CHECKS[name](client) for name in args.checks}
    print(json.dumps(observed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

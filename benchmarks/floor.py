"""The in-process floor: onnxruntime session.run alone, and the protobuf work per request."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from bare_server import ORT_TO_V2, make_session, v2_shape
from bench_report import write_json
from load import V2_TO_NUMPY, TensorSpec, build_request, concrete_shape
from models import BUILDERS

from gateway._proto import grpc_service_pb2 as pb


def timed_loop(fn: Callable[[], object], duration_s: float) -> tuple[np.ndarray[Any, Any], float]:
    """Call fn repeatedly for duration_s; return per-call ns and the wall time in s."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    end = start + int(duration_s * 1e9)
    now = start
    while now < end:
        fn()
        after = clock()
        samples.append(after - now)
        now = after
    return np.array(samples, dtype=np.float64), (now - start) / 1e9


def input_specs(session: ort.InferenceSession, batch: int) -> list[TensorSpec]:
    """Concrete specs of the model inputs for a batch-N request."""
    return [
        TensorSpec(t.name, ORT_TO_V2[t.type], concrete_shape(v2_shape(t.shape), batch))
        for t in session.get_inputs()
    ]


def protobuf_round(
    payload: bytes, outputs: list[tuple[str, str, np.ndarray[Any, Any]]]
) -> Callable[[], bytes]:
    """Return the server's protobuf work for one request: parse, frombuffer, build, serialise."""

    def work() -> bytes:
        request = pb.ModelInferRequest.FromString(payload)
        for t, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            np.frombuffer(raw, dtype=V2_TO_NUMPY[t.datatype]).reshape(t.shape)
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        for name, datatype, arr in outputs:
            response.outputs.add(name=name, datatype=datatype, shape=arr.shape)
            response.raw_output_contents.append(arr.tobytes())
        return response.SerializeToString()

    return work


def us_stats(samples_ns: np.ndarray[Any, Any], wall_s: float) -> dict[str, float]:
    """Calls/s and per-call microsecond statistics."""
    p50, p99 = np.percentile(samples_ns, [50, 99]) / 1e3
    return {
        "calls": int(samples_ns.size),
        "calls_per_s": round(samples_ns.size / wall_s, 1),
        "us_mean": round(float(samples_ns.mean()) / 1e3, 3),
        "us_p50": round(float(p50), 3),
        "us_p99": round(float(p99), 3),
    }


def measure(model_path: Path, batch: int, duration_s: float, threads: int) -> dict[str, Any]:
    """Time ORT session.run, then the protobuf work, each for duration_s."""
    session = make_session(model_path, intra_op_threads=threads)
    specs = input_specs(session, batch)
    request = build_request("model", "", specs, np.random.default_rng(0))
    feeds = {
        s.name: np.frombuffer(raw, dtype=V2_TO_NUMPY[s.datatype]).reshape(s.shape)
        for s, raw in zip(specs, request.raw_input_contents, strict=True)
    }
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feeds)
    outputs = [
        (o.name, ORT_TO_V2[o.type], arr)
        for o, arr in zip(session.get_outputs(), results, strict=True)
    ]
    ort_ns, ort_wall = timed_loop(lambda: session.run(names, feeds), duration_s)
    pb_ns, pb_wall = timed_loop(protobuf_round(request.SerializeToString(), outputs), duration_s)
    return {
        "model_path": str(model_path),
        "batch": batch,
        "intra_op_threads": threads,
        "duration_s": duration_s,
        "request_bytes": request.ByteSize(),
        "ort": us_stats(ort_ns, ort_wall),
        "protobuf": us_stats(pb_ns, pb_wall),
    }


def print_summary(result: dict[str, Any]) -> None:
    """Print a short human summary."""
    ort_r, pb_r = result["ort"], result["protobuf"]
    label = result.get("model") or result["model_path"]
    print(f"{label} batch={result['batch']} intra-op threads={result['intra_op_threads']}")
    print(
        f"  onnxruntime session.run: {ort_r['calls_per_s']:.0f} calls/s, "
        f"p50 {ort_r['us_p50']:.2f} us, p99 {ort_r['us_p99']:.2f} us"
    )
    print(
        f"  protobuf parse+frombuffer+build+serialise: {pb_r['us_mean']:.2f} us/request "
        f"(p50 {pb_r['us_p50']:.2f}, p99 {pb_r['us_p99']:.2f}; {pb_r['calls_per_s']:.0f}/s)"
    )


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-path", type=Path)
    source.add_argument("--model", choices=sorted(BUILDERS), help="build it into a temp dir")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="onnxgate-floor-") as tmp:
        path = args.model_path or BUILDERS[args.model](Path(tmp) / "model.onnx")
        result = measure(path, args.batch, args.duration, args.intra_op_threads)
    if args.model:
        result["model"] = args.model
    print_summary(result)
    write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

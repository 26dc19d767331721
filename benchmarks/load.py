"""Closed-loop / open-loop asyncio load generator for ModelInfer (KServe v2 / Triton gRPC)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
# gRPC's default receive limit is 4 MiB; large batches must not fail on the client side.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DRAIN_S = 2.0
# asyncio timers overshoot by up to ~1 ms (epoll rounds timeouts up to whole milliseconds), which
# would show up as latency in the open loop: sleep coarsely, then yield-spin this last stretch.
SPIN_S = 0.001

# The raw-bytes ModelInfer call: bytes in, bytes out (no protobuf work on the hot path).
RawCall = Callable[..., Awaitable[bytes]]


@dataclass(frozen=True)
class TensorSpec:
    """Name, v2 datatype and concrete shape of one request input."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def concrete_shape(shape: Sequence[int], batch: int) -> tuple[int, ...]:
    """Replace -1 dims: the first by batch, the others by 1."""
    return tuple((batch if i == 0 else 1) if d < 0 else int(d) for i, d in enumerate(shape))


def random_raw(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> bytes:
    """Return random row-major raw bytes for a tensor of this datatype and shape."""
    count = int(np.prod(shape, dtype=np.int64))
    if datatype == "BYTES":
        # Each element: 4-byte little-endian length, then the bytes.
        items = [str(int(v)).encode() for v in rng.integers(0, 1000, count)]
        return b"".join(len(s).to_bytes(4, "little") + s for s in items)
    if datatype == "BF16":
        # No numpy bf16: take the high half of random float32 values.
        f32 = rng.standard_normal(count).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    dtype = V2_TO_NUMPY[datatype]
    if dtype.kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
    elif dtype.kind == "b":
        arr = rng.integers(0, 2, shape).astype(dtype)
    else:
        arr = rng.integers(0, 100, shape).astype(dtype)
    return arr.tobytes()


def build_request(
    model: str, version: str, inputs: Sequence[TensorSpec], rng: np.random.Generator
) -> pb.ModelInferRequest:
    """Build a ModelInferRequest carrying random inputs as raw_input_contents."""
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="bench")
    for spec in inputs:
        tensor = request.inputs.add()
        tensor.name = spec.name
        tensor.datatype = spec.datatype
        tensor.shape.extend(spec.shape)
        request.raw_input_contents.append(random_raw(spec.datatype, spec.shape, rng))
    return request


def specs_from_metadata(meta: pb.ModelMetadataResponse, batch: int) -> list[TensorSpec]:
    """Turn ModelMetadata inputs into concrete TensorSpecs."""
    return [TensorSpec(t.name, t.datatype, concrete_shape(t.shape, batch)) for t in meta.inputs]


@dataclass
class Stats:
    """Outcomes of the requests issued inside the measurement window."""

    measure_start: float
    measure_end: float
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    issued: int = 0
    last_done: float = 0.0

    def counts(self, t_sent: float) -> bool:
        """Return whether a request sent at t_sent belongs to the measurement window."""
        return self.measure_start <= t_sent < self.measure_end

    def ok(self, t_sent: float, t_done: float) -> None:
        """Record a success."""
        if self.counts(t_sent):
            self.latencies_s.append(t_done - t_sent)
            self.last_done = max(self.last_done, t_done)

    def error(self, t_sent: float, code: str) -> None:
        """Record a failure by status-code name."""
        if self.counts(t_sent):
            self.errors[code] += 1


async def one_request(
    call: RawCall, payload: bytes, t_sent: float, stats: Stats, timeout_s: float, hard_stop: float
) -> None:
    """Send one pre-serialised request; latency runs from t_sent (the scheduled send time)."""
    if stats.counts(t_sent):
        stats.issued += 1
    # The deadline never passes the hard stop, so the run always ends by itself.
    timeout = max(0.001, min(timeout_s, hard_stop - time.perf_counter()))
    try:
        await call(payload, timeout=timeout)
    except grpc.aio.AioRpcError as err:
        stats.error(t_sent, err.code().name)
        return
    stats.ok(t_sent, time.perf_counter())


async def closed_loop(
    call: RawCall, payload: bytes, concurrency: int, stats: Stats, timeout_s: float
) -> None:
    """Run `concurrency` workers, each sending back to back until the window closes."""
    hard_stop = stats.measure_end + DRAIN_S

    async def worker() -> None:
        while (t0 := time.perf_counter()) < stats.measure_end:
            await one_request(call, payload, t0, stats, timeout_s, hard_stop)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sleep_until(deadline: float) -> None:
    """Wait until perf_counter() reaches deadline, to well under a millisecond."""
    coarse = deadline - time.perf_counter() - SPIN_S
    if coarse > 0:
        await asyncio.sleep(coarse)
    # Polling a clock, not a condition another task sets: an Event cannot replace this.
    # sleep(0) still runs the loop, so responses keep being processed while spinning.
    while time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0)


async def open_loop(
    call: RawCall, payload: bytes, rate: float, t_start: float, stats: Stats, timeout_s: float
) -> None:
    """Issue requests on a fixed schedule of `rate` per second, regardless of completions."""
    hard_stop = stats.measure_end + DRAIN_S
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    i = 0
    while (t_sched := t_start + i * interval) < stats.measure_end:
        await sleep_until(t_sched)
        # When behind schedule the due requests go out in a burst: that is the open-loop promise.
        task = asyncio.create_task(one_request(call, payload, t_sched, stats, timeout_s, hard_stop))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
    if pending:
        _, late = await asyncio.wait(
            set(pending), timeout=max(0.0, hard_stop - time.perf_counter())
        )
        for task in late:
            task.cancel()
        # gRPC deadlines normally end every call before the hard stop; these are the exceptions.
        if late:
            stats.errors["CANCELLED"] += len(late)


def summarise(stats: Stats, args: argparse.Namespace) -> dict[str, Any]:
    """Compute the result dictionary written as JSON."""
    duration = stats.measure_end - stats.measure_start
    # Open loop under overload finishes after the window: divide by the real span then.
    span = max(duration, stats.last_done - stats.measure_start)
    lat = np.array(stats.latencies_s, dtype=np.float64) * 1e3
    pcts: dict[str, float | None] = {"p50": None, "p90": None, "p99": None, "p999": None}
    mean: float | None = None
    if lat.size:
        values = np.percentile(lat, [50, 90, 99, 99.9])
        pcts = {k: round(float(v), 4) for k, v in zip(pcts, values, strict=True)}
        mean = round(float(lat.mean()), 4)
    return {
        "requests": int(lat.size),
        "issued": stats.issued,
        "duration_s": round(span, 3),
        "rps": round(lat.size / span, 2),
        "latency_ms": {**pcts, "mean": mean},
        "errors": dict(sorted(stats.errors.items())),
        "mode": "open" if args.rate else "closed",
        "concurrency": None if args.rate else args.concurrency,
        "rate": args.rate,
        "batch": args.batch,
        "model": args.model,
        "version": args.version,
        "target": args.target,
        "warmup_s": args.warmup,
        "seed": args.seed,
    }


def _fmt(value: float | None) -> str:
    """Format a latency in ms, or '-' when there is none."""
    return "-" if value is None else f"{value:.3f}"


def print_summary(result: dict[str, Any]) -> None:
    """Print a short human summary."""
    load = f"rate={result['rate']}/s" if result["rate"] else f"concurrency={result['concurrency']}"
    lat = result["latency_ms"]
    print(
        f"{result['model']} batch={result['batch']} {result['mode']} loop {load}: "
        f"{result['requests']} ok in {result['duration_s']:.2f} s = {result['rps']:.1f} req/s"
    )
    print(
        f"  latency ms p50 {_fmt(lat['p50'])}  p90 {_fmt(lat['p90'])}  p99 {_fmt(lat['p99'])}  "
        f"p99.9 {_fmt(lat['p999'])}  mean {_fmt(lat['mean'])}"
    )
    print(f"  errors {result['errors'] or 'none'}")


async def probe(call: RawCall, payload: bytes) -> None:
    """Send one request and report what came back, so a broken setup is obvious at once."""
    try:
        raw = await call(payload, timeout=10.0)
    except grpc.aio.AioRpcError as err:
        print(f"probe ModelInfer failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return
    resp = pb.ModelInferResponse.FromString(raw)
    outs = ", ".join(f"{o.name} {o.datatype} {list(o.shape)}" for o in resp.outputs)
    print(f"probe ok: {outs}")


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Fetch metadata, pre-serialise the request, run the load; None if metadata fails."""
    async with grpc.aio.insecure_channel(args.target, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            meta = await stub.ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version), timeout=10.0
            )
        except grpc.aio.AioRpcError as err:
            print(f"ModelMetadata failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return None
        specs = specs_from_metadata(meta, args.batch)
        rng = np.random.default_rng(args.seed)
        payload = build_request(args.model, args.version, specs, rng).SerializeToString()
        call: RawCall = channel.unary_unary(
            MODEL_INFER, request_serializer=None, response_deserializer=None
        )
        print("inputs: " + ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs))
        await probe(call, payload)
        t_start = time.perf_counter()
        stats = Stats(t_start + args.warmup, t_start + args.warmup + args.duration)
        if args.rate:
            await open_loop(call, payload, args.rate, t_start, stats, args.timeout)
        else:
            await closed_loop(call, payload, args.concurrency, stats, args.timeout)
    return summarise(stats, args)


def positive_float(value: str) -> float:
    """Argparse type: a float > 0."""
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:8001")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--version", default="", help="empty = server policy")
    parser.add_argument("--batch", type=int, default=1)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, default=8, help="closed loop: requests in flight")
    mode.add_argument("--rate", type=positive_float, help="open loop: requests per second")
    parser.add_argument("--duration", type=positive_float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds first")
    parser.add_argument("--timeout", type=positive_float, default=5.0, help="per-request deadline")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--batch and --concurrency must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if result is None:
        return 2
    print_summary(result)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

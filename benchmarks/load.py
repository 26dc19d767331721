"""Closed-loop / open-loop asyncio load generator for ModelInfer (KServe v2 / Triton gRPC).

--channels K spreads the load over K connections (a multi-worker gateway gives each connection
to one worker); --streaming sends the requests over ModelStreamInfer streams instead, one stream
per request in flight; --cpu-pids adds the CPU time of those processes (and of this one) in the
measured window to the results; --distinct-payloads K cycles through K requests with different
random inputs (serialised up front) instead of repeating one, so the traffic has a distribution:
a model that fails on some rows fails on a share of requests, and drift sketches see spread."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from bench_report import write_json

from gateway._proto import grpc_service_pb2 as pb
from gateway._proto import grpc_service_pb2_grpc as pb_grpc

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"
# gRPC's default receive limit is 4 MiB; large batches must not fail on the client side.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
# grpcio channels to one target share one connection unless each has its own subchannel pool.
OWN_CONNECTION: tuple[str, Any] = ("grpc.use_local_subchannel_pool", 1)
# ModelStreamInferResponse field 1 (error_message), string: its tag byte, serialised first.
STREAM_ERROR_TAG = b"\n"
STREAM_CLOSE_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
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
    stalled_streams: int = 0  # --streaming: request slots that got no answer in the window

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
    call: RawCall, payloads: Iterator[bytes], concurrency: int, stats: Stats, timeout_s: float
) -> None:
    """Run `concurrency` workers, each sending back to back until the window closes."""
    hard_stop = stats.measure_end + DRAIN_S

    async def worker() -> None:
        while (t0 := time.perf_counter()) < stats.measure_end:
            await one_request(call, next(payloads), t0, stats, timeout_s, hard_stop)

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
    call: RawCall,
    payloads: Iterator[bytes],
    rate: float,
    t_start: float,
    stats: Stats,
    timeout_s: float,
) -> None:
    """Issue requests on a fixed schedule of `rate` per second, regardless of completions."""
    hard_stop = stats.measure_end + DRAIN_S
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    i = 0
    while (t_sched := t_start + i * interval) < stats.measure_end:
        await sleep_until(t_sched)
        # When behind schedule the due requests go out in a burst: that is the open-loop promise.
        task = asyncio.create_task(
            one_request(call, next(payloads), t_sched, stats, timeout_s, hard_stop)
        )
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


def round_robin(calls: Sequence[RawCall]) -> RawCall:
    """One call that sends each request over the next of `calls` (channels), in turn."""
    if len(calls) == 1:
        return calls[0]
    turn = itertools.cycle(calls)

    async def call(payload: bytes, **options: Any) -> bytes:
        return await next(turn)(payload, **options)

    return call


def stream_error(raw: bytes) -> str | None:
    """The error_message of a serialised ModelStreamInferResponse; None for an answer.

    A set error_message is serialised first, so its tag byte tells without parsing: answers are
    left unparsed, as on the unary path, which keeps the two paths' client costs alike."""
    if not raw.startswith(STREAM_ERROR_TAG):
        return None
    return pb.ModelStreamInferResponse.FromString(raw).error_message or "empty error_message"


async def stream_requests(
    stream: grpc.aio.StreamStreamCall[bytes, bytes],
    payloads: Iterator[bytes],
    stats: Stats,
    timeout_s: float,
    hard_stop: float,
) -> tuple[bool, int]:
    """Send requests one at a time on an open stream until the window closes.

    Returns whether the stream is still sound, and how many answers arrived in the window. It is
    not after an error status, an end of stream or a late answer: an answer may still be on its
    way then, so the caller opens a new stream to keep requests and answers paired."""
    answers = 0
    while (t0 := time.perf_counter()) < stats.measure_end:
        if stats.counts(t0):
            stats.issued += 1
        timeout = max(0.001, min(timeout_s, hard_stop - t0))
        try:
            await stream.write(next(payloads))
            raw = await asyncio.wait_for(stream.read(), timeout)
        except grpc.aio.AioRpcError as err:
            stats.error(t0, err.code().name)
            return False, answers
        except TimeoutError:
            stats.error(t0, "DEADLINE_EXCEEDED")
            return False, answers
        except asyncio.InvalidStateError:  # the server ended the stream before this write
            stats.error(t0, (await stream.code()).name)
            return False, answers
        if not isinstance(raw, bytes):  # grpc.aio.EOF: the server ended the stream
            stats.error(t0, "END_OF_STREAM")
            return False, answers
        answers += stats.counts(t0)
        message = stream_error(raw)
        if message is None:
            stats.ok(t0, time.perf_counter())
        else:  # Triton's stream shape: the request failed, the stream goes on
            stats.error(t0, f"error_message: {message[:80]}")
    return True, answers


async def close_stream(stream: grpc.aio.StreamStreamCall[bytes, bytes], ended: bool) -> None:
    """End a stream: half-close it and wait briefly for the server to finish it, then cancel
    (a no-op once finished; a broken stream is cancelled at once).

    A cancelled stream is an error on the server side; a clean half-close is what a client that
    is done sends."""
    if ended:
        with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
            await stream.done_writing()
            await asyncio.wait_for(stream.read(), STREAM_CLOSE_S)  # EOF once the server ends it
    stream.cancel()


async def streaming_loop(
    channels: Sequence[grpc.aio.Channel],
    payloads: Iterator[bytes],
    concurrency: int,
    stats: Stats,
    timeout_s: float,
) -> None:
    """Closed loop over ModelStreamInfer: `concurrency` streams (spread over the channels), each
    with one request outstanding, the next sent when its answer arrives.

    A stream the server never serves holds a request sent before the window, which the window's
    counts cannot see: such stalled slots are counted in stats.stalled_streams instead."""
    hard_stop = stats.measure_end + DRAIN_S

    async def worker(channel: grpc.aio.Channel) -> None:
        open_stream = channel.stream_stream(
            MODEL_STREAM_INFER, request_serializer=None, response_deserializer=None
        )
        answered = 0
        while time.perf_counter() < stats.measure_end:
            # The stream's own deadline is the hard stop: no stream outlives the run.
            stream = open_stream(None, timeout=max(0.001, hard_stop - time.perf_counter()))
            sound = False
            try:
                sound, answers = await stream_requests(
                    stream, payloads, stats, timeout_s, hard_stop
                )
                answered += answers
            finally:
                await close_stream(stream, sound)
        if not answered:
            stats.stalled_streams += 1

    await asyncio.gather(*(worker(channels[i % len(channels)]) for i in range(concurrency)))


def proc_stat(pid: int) -> tuple[str, list[str]] | None:
    """A process's command name and the fields of /proc/<pid>/stat after it; None once gone.

    The fields list starts at field 3 (state): session is [3], utime [11], stime [12]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split at the last ")".
    head, rest = text.rsplit(")", 1)
    return head.split("(", 1)[1], rest.split()


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process; None once it is gone."""
    stat = proc_stat(pid)
    if stat is None:
        return None
    fields = stat[1]
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_snapshot(pids: Sequence[int]) -> dict[str, float | None]:
    """CPU seconds so far of this process ("client") and of each pid."""
    snap: dict[str, float | None] = {"client": time.process_time()}
    snap.update({str(pid): proc_cpu_seconds(pid) for pid in pids})
    return snap


async def cpu_window(stats: Stats, pids: Sequence[int]) -> dict[str, float | None]:
    """CPU seconds used between the window's start and end, by this process and each pid."""
    await asyncio.sleep(max(0.0, stats.measure_start - time.perf_counter()))
    before = cpu_snapshot(pids)
    await asyncio.sleep(max(0.0, stats.measure_end - time.perf_counter()))
    after = cpu_snapshot(pids)
    return {
        key: None if (a := after[key]) is None or (b := before[key]) is None else round(a - b, 3)
        for key in before
    }


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
        "streaming": args.streaming,
        "stalled_streams": stats.stalled_streams,
        "channels": args.channels,
        "concurrency": None if args.rate else args.concurrency,
        "rate": args.rate,
        "batch": args.batch,
        "model": args.model,
        "version": args.version,
        "target": args.target,
        "warmup_s": args.warmup,
        "seed": args.seed,
        "distinct_payloads": args.distinct_payloads,
    }


def _fmt(value: float | None) -> str:
    """Format a latency in ms, or '-' when there is none."""
    return "-" if value is None else f"{value:.3f}"


def print_summary(result: dict[str, Any]) -> None:
    """Print a short human summary."""
    load = f"rate={result['rate']}/s" if result["rate"] else f"concurrency={result['concurrency']}"
    # Only when asked for, so the default output stays what other tools may expect.
    if result["streaming"]:
        load += " over ModelStreamInfer"
    if result["channels"] > 1:
        load += f" on {result['channels']} channels"
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
    if result["stalled_streams"]:
        print(f"  streams without an answer in the window: {result['stalled_streams']}")
    if len(result["cpu_us_per_request"]) > 1:
        cpu = "  ".join(f"{k} {_fmt(v)}" for k, v in result["cpu_us_per_request"].items())
        print(f"  CPU us per request: {cpu}")


def describe_outputs(response: pb.ModelInferResponse) -> str:
    """Name, datatype and shape of each output, for the probe line."""
    return ", ".join(f"{o.name} {o.datatype} {list(o.shape)}" for o in response.outputs)


async def probe(call: RawCall, payload: bytes) -> None:
    """Send one request and report what came back, so a broken setup is obvious at once."""
    try:
        raw = await call(payload, timeout=10.0)
    except grpc.aio.AioRpcError as err:
        print(f"probe ModelInfer failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return
    print(f"probe ok: {describe_outputs(pb.ModelInferResponse.FromString(raw))}")


async def stream_probe(channel: grpc.aio.Channel, payload: bytes) -> None:
    """The probe over ModelStreamInfer: one request on a stream of its own."""
    stream = channel.stream_stream(
        MODEL_STREAM_INFER, request_serializer=None, response_deserializer=None
    )(None, timeout=10.0)
    try:
        await stream.write(payload)
        raw = await stream.read()
    except grpc.aio.AioRpcError as err:
        print(f"probe ModelStreamInfer failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return
    finally:
        await close_stream(stream, ended=True)
    if not isinstance(raw, bytes):  # grpc.aio.EOF
        print("probe ModelStreamInfer: the stream ended without an answer", file=sys.stderr)
        return
    answer = pb.ModelStreamInferResponse.FromString(raw)
    if answer.error_message:
        print(f"probe ModelStreamInfer error_message: {answer.error_message}", file=sys.stderr)
        return
    print(f"probe stream ok: {describe_outputs(answer.infer_response)}")


def open_channels(target: str, count: int) -> list[grpc.aio.Channel]:
    """`count` channels; more than one each get their own connection (subchannel pool)."""
    if count == 1:
        return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)]
    options = [*CHANNEL_OPTIONS, OWN_CONNECTION]
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    """Fetch metadata, pre-serialise the request, run the load; None if metadata fails."""
    async with contextlib.AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(c) for c in open_channels(args.target, args.channels)
        ]
        stub = pb_grpc.GRPCInferenceServiceStub(channels[0])
        try:
            meta = await stub.ModelMetadata(
                pb.ModelMetadataRequest(name=args.model, version=args.version), timeout=10.0
            )
        except grpc.aio.AioRpcError as err:
            print(f"ModelMetadata failed: {err.code().name}: {err.details()}", file=sys.stderr)
            return None
        specs = specs_from_metadata(meta, args.batch)
        rng = np.random.default_rng(args.seed)
        # One rng drawn in turn: the first payload is the one a single-payload run sends.
        payloads = [
            build_request(args.model, args.version, specs, rng).SerializeToString()
            for _ in range(args.distinct_payloads)
        ]
        payload = payloads[0]
        turns = itertools.cycle(payloads)  # next() hands out the prebuilt bytes: no allocation
        call = round_robin(
            [
                c.unary_unary(MODEL_INFER, request_serializer=None, response_deserializer=None)
                for c in channels
            ]
        )
        print("inputs: " + ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs))
        await (stream_probe(channels[0], payload) if args.streaming else probe(call, payload))
        t_start = time.perf_counter()
        stats = Stats(t_start + args.warmup, t_start + args.warmup + args.duration)
        cpu = asyncio.create_task(cpu_window(stats, args.cpu_pids))
        if args.streaming:
            await streaming_loop(channels, turns, args.concurrency, stats, args.timeout)
        elif args.rate:
            await open_loop(call, turns, args.rate, t_start, stats, args.timeout)
        else:
            await closed_loop(call, turns, args.concurrency, stats, args.timeout)
    return {**summarise(stats, args), **cpu_fields(await cpu, stats)}


def cpu_fields(cpu: dict[str, float | None], stats: Stats) -> dict[str, Any]:
    """CPU seconds in the window (this process as "client", each --cpu-pids pid) and per request.

    Per request divides by every request sent in the window, failed ones included: they cost
    CPU too."""
    sent = len(stats.latencies_s) + sum(stats.errors.values())
    per_request = {
        key: None if seconds is None or not sent else round(seconds / sent * 1e6, 2)
        for key, seconds in cpu.items()
    }
    return {"cpu_s": cpu, "cpu_us_per_request": per_request}


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
    parser.add_argument(
        "--distinct-payloads",
        type=int,
        default=1,
        help="requests with different random inputs, sent in turn (1: the same one every time)",
    )
    parser.add_argument(
        "--channels", type=int, default=1, help="connections to spread the requests over"
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="closed loop over ModelStreamInfer: one stream per request in flight",
    )
    parser.add_argument(
        "--cpu-pids",
        type=pid_list,
        default=[],
        help="comma-separated pids whose CPU time in the window to report (Linux /proc)",
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.concurrency < 1 or args.warmup < 0 or args.channels < 1:
        parser.error("--batch, --concurrency and --channels must be >= 1, --warmup >= 0")
    if args.distinct_payloads < 1:
        parser.error("--distinct-payloads must be >= 1")
    if args.streaming and args.rate:
        parser.error("--streaming runs the closed loop only (one request per stream at a time)")
    return args


def pid_list(value: str) -> list[int]:
    """Argparse type: comma-separated process ids."""
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"bad pid list {value!r}") from err


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    result = asyncio.run(run(args))
    if result is None:
        return 2
    print_summary(result)
    write_json(args.json_out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

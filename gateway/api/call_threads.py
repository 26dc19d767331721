"""The gRPC server's call threads: as many as do requests' Python work at once, and no call
may wait for ever for its request.

grpcio's synchronous server hands a call to a pool thread as soon as its HEADERS arrive; the
thread then waits for the request message. A client that sends headers and never the body
holds that thread. So:

- the pool is `core` threads (--grpc-threads): a thread that finishes a call takes the next
  queued one, as a ThreadPoolExecutor of that size would. More threads than that would only
  contend for the GIL: measured, a pool that grew with every call to 50 threads at
  concurrency 32 served 0.94x the requests of this one, p99 1.26x (benchmarks/RESULTS.md);
- a handler that holds its thread for long (a ModelStreamInfer stream while open, PutLabels
  while it waits on Redis, a request waiting in its version's queue or for its batch) raises
  the count by one while in `holding()`;
- so does a call whose thread has waited for its request message for STALL_SECONDS: a slow
  or silent client holds a thread, not a turn, up to `maximum` threads in all (the server
  refuses calls beyond that many at once with RESOURCE_EXHAUSTED). Every unary call waits a
  moment for its message (grpcio asks for it only once the thread runs), so the pool does not
  grow at once, or it would grow with every call under load;
- a thread above the count retires when its call ends (or after idling), giving a flood's
  memory back;
- a call whose request message has not arrived `receive_timeout` seconds after its thread
  started waiting for it is cancelled with DEADLINE_EXCEEDED, whatever its own deadline.

grpcio has no public hook between "call started" and "request received", so the receive
deadline recognises grpcio's unary-request work items (runner, rpc event, state, behaviour,
request thunk, ...). Should a grpcio release change that shape, calls are still served but
without the receive deadline: the gateway warns at start, and the receive-timeout tests fail.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import grpc

__all__ = ["CallThreads", "cancel_late", "receive_deadlines_apply"]

_log = logging.getLogger(__name__)
IDLE_SECONDS = 30.0  # a thread above the count idle this long retires
# A call waiting this long for its request message gets a thread of its own counted; the
# waits are checked this often while any call waits (else every `granularity`).
STALL_SECONDS = 0.01
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]

try:  # the functions grpcio's server runs for a unary-request call (see module docstring)
    from grpc._server import _stream_response_in_pool, _unary_response_in_pool

    _UNARY_REQUEST_RUNNERS: tuple[object, ...] = (_unary_response_in_pool,
                                                  _stream_response_in_pool)  # fmt: skip
except ImportError:  # pragma: no cover - only with a grpcio whose internals moved
    _UNARY_REQUEST_RUNNERS = ()


def receive_deadlines_apply() -> bool:
    """Whether this grpcio's work items are recognised, so receive deadlines are enforced."""
    return bool(_UNARY_REQUEST_RUNNERS)


def cancel_late(call: Any, timeout: float) -> bool:
    """End a gRPC core call whose request message is later than `timeout` s DEADLINE_EXCEEDED
    (also for the ModelInfer lane's calls); False if it had ended already."""
    try:
        call.cancel(
            _DEADLINE_EXCEEDED,
            f"the request message did not arrive within {timeout:g} s of the call's start"
            " (--receive-timeout-seconds)",
        )
    except Exception as exc:  # a call that just ended cannot be cancelled
        _log.debug("late call not cancelled", extra={"detail": str(exc)})
        return False
    return True


class _ReceiveDeadlines:
    """Cancels calls whose request message is late, and counts the calls that have waited
    for it STALL_SECONDS (`stalled`), telling `on_stalled` when that count rises.

    A call is in `waiting` only while its thread waits for the message, normally
    microseconds, so the table stays small and its entries die young (no per-call objects
    live on for the garbage collector to scan); a thread sweeps it every STALL_SECONDS while it
    has entries, else every `granularity`."""

    def __init__(
        self, timeout: float, on_expired: Callable[[], None], on_stalled: Callable[[], None]
    ) -> None:
        self._timeout = timeout
        self._on_stalled = on_stalled
        # How late a cancellation may come, and a first stall be seen, on an idle server: a
        # sweep for each call would cost the serving threads the GIL hundreds of times a
        # second, for no useful precision.
        self._granularity = min(timeout / 10, 0.5)
        self._on_expired = on_expired
        self._waiting: dict[int, tuple[float, Any]] = {}
        self._keys = itertools.count()
        self.stalled = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="onnxgate-receive-deadlines", daemon=True
        )
        self._thread.start()

    def wrap(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """grpcio's work-item arguments with the request thunk timed (see module docstring)."""
        waiting, keys = self._waiting, self._keys
        event, read_request = args[1], args[4]

        def timed_read() -> Any:
            key = next(keys)
            waiting[key] = (time.monotonic(), event)
            try:
                return read_request()
            finally:
                waiting.pop(key, None)  # arrived (or the call ended): nothing to cancel

        return (*args[:4], timed_read, *args[5:])

    def _run(self) -> None:
        waiting = self._waiting
        while not self._stopping.wait(STALL_SECONDS if waiting else self._granularity):
            now = time.monotonic()
            started_before, stalled_before = now - self._timeout, now - STALL_SECONDS
            stalled = 0
            # A copy made in one C call: request threads add and remove entries meanwhile.
            for key, (started, event) in list(waiting.items()):
                if started <= started_before and waiting.pop(key, None) is not None:
                    self._expire(event)
                elif started <= stalled_before:
                    stalled += 1
            rose, self.stalled = stalled > self.stalled, stalled
            if rose:
                self._on_stalled()

    def _expire(self, event: Any) -> None:
        if cancel_late(event.call, self._timeout):
            self._on_expired()

    def stop(self) -> None:
        self._stopping.set()


class CallThreads(Executor):
    """An executor of `core` threads, plus one for each handler in holding() and each call
    stalled waiting for its request message, up to `maximum` in all (see module docstring)."""

    def __init__(
        self,
        core: int,
        maximum: int,
        receive_timeout: float,
        on_receive_expired: Callable[[], None] = lambda: None,
        name: str = "onnxgate-rpc",
        idle_seconds: float = IDLE_SECONDS,
    ) -> None:
        self._core = core
        self._idle_seconds = idle_seconds
        self._maximum = max(maximum, core)
        self._name = name
        self._work: queue.SimpleQueue[
            tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)  # one token per thread waiting for work
        self._lock = threading.Lock()
        self._threads = 0
        self._numbered = 0
        self._held = 0  # handlers in holding()
        self._shut_down = False
        self._deadlines = (
            _ReceiveDeadlines(receive_timeout, on_receive_expired, self._stalled)
            if receive_deadlines_apply()
            else None
        )

    @property
    def threads(self) -> int:
        """Threads alive now (busy or idle)."""
        return self._threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shut_down:
            raise RuntimeError("cannot schedule new calls after shutdown")
        if self._deadlines is not None and args and args[0] in _UNARY_REQUEST_RUNNERS:
            args = self._deadlines.wrap(args)
        future: Future[Any] = Future()
        call = (lambda: fn(*args, **kwargs)) if kwargs else None
        self._work.put((future, call or fn, () if call else args))
        if not self._idle.acquire(blocking=False):
            self._add_thread()
        return future

    def execute(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run fn(*args) on a call thread with no Future (a Condition and its locks): for
        calls that answer themselves (InferLane); what fn raises is logged."""
        self._work.put((None, fn, args))
        if not self._idle.acquire(blocking=False):
            self._add_thread()

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Around a handler's long wait (an open stream, a call waiting on Redis, a request
        waiting in its version's queue or for its batch): the pool counts one thread more
        meanwhile, so queued calls do not wait behind it."""
        with self._lock:
            self._held += 1
        if not self._work.empty():
            self._add_thread()
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    def _count(self) -> int:
        """How many threads the pool keeps now (see module docstring)."""
        stalled = self._deadlines.stalled if self._deadlines is not None else 0
        return min(self._core + self._held + stalled, self._maximum)

    def _stalled(self) -> None:
        """More calls wait for their request message: queued calls get threads of their own
        rather than wait behind them."""
        while not self._work.empty() and self._add_thread():
            pass

    def _add_thread(self) -> bool:
        """Start a thread unless the pool has its count; whether one was started."""
        with self._lock:
            if self._threads >= self._count():
                return False  # the call waits for a thread to come free
            self._threads += 1
            self._numbered += 1
            number = self._numbered
        threading.Thread(target=self._serve, name=f"{self._name}_{number}", daemon=True).start()
        return True

    def _serve(self) -> None:
        work = self._work
        while True:
            try:
                item = work.get(timeout=self._idle_seconds)
            except queue.Empty:
                if self._retire():
                    return
                continue
            if item is None:
                return
            future, fn, args = item
            if future is None:
                try:
                    fn(*args)
                except Exception:
                    _log.exception("call thread's work failed")
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the future's owner
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args  # a finished call's objects are not kept while idle
            with self._lock:
                if self._threads > self._count():  # a stall or a holding() has ended
                    self._threads -= 1
                    return
            self._idle.release()

    def _retire(self) -> bool:
        """Leave if above the count, taking back this thread's idle token."""
        with self._lock:
            if self._threads > self._count() and self._idle.acquire(blocking=False):
                self._threads -= 1
                return True
        return False

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops the threads once the queued calls are done; they are daemons, so an exit
        never waits for a call that hangs."""
        self._shut_down = True
        if self._deadlines is not None:
            self._deadlines.stop()
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._work.put(None)

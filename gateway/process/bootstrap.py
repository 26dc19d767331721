"""What every onnxgate process (gateway, supervisor, worker) does first: its logging, the
metrics settings every registry shares, and a stop event set by SIGTERM/SIGINT; and what a
serving process does once started."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType

from prometheus_client import disable_created_metrics

from gateway.process.logs import configure_logging
from gateway.settings import Settings
from gateway.telemetry.periodic import Periodic

__all__ = ["freeze_startup_objects", "start_process", "watch_supervisor"]

_log = logging.getLogger(__name__)
# How long a thread may hold the GIL while another waits for it (CPython's default is 5 ms).
# Request threads give it up at every C call that blocks or computes (onnxruntime, grpcio), so
# the interval mostly decides how often they are interrupted in between: measured, 20 ms served
# 1.09x the requests at concurrency 8 (p99 0.92x) and 1.06x at 32 (p99 0.98x); 1 ms served
# 0.91x (p99 1.21x). Background work is folded in batches well under it.
GIL_SWITCH_SECONDS = 0.02


def start_process(settings: Settings, draining: str) -> threading.Event:
    """Configure logging and metrics; return an event that SIGTERM or SIGINT sets, logging
    `draining` with the signal's name."""
    configure_logging(settings.log_level, settings.log_format)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    # *_created series double the scrape size and no dashboard reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        _log.info(draining, extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def watch_supervisor(parent_pid: int, stop: threading.Event) -> Periodic:
    """A worker's watch on its supervisor, started: `stop` is set once the worker is
    orphaned, so a supervisor killed without a chance to forward SIGTERM leaves none behind."""

    def stop_when_orphaned() -> None:
        if os.getppid() != parent_pid:
            _log.warning("supervisor gone; draining")
            stop.set()

    watch = Periodic("orphan-watch", 1.0, stop_when_orphaned)
    watch.start()
    return watch


def freeze_startup_objects() -> None:
    """Start-up's objects (modules, settings, clients, metrics) live as long as the process:
    frozen, the collector's full passes, which hold the GIL, no longer scan them. Measured: a
    full pass over the ~70,000 of them took ~40 ms, every request waiting; ~1 ms after."""
    gc.freeze()

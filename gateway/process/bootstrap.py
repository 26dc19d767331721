"""What every onnxgate process (gateway, supervisor, worker) does first: its logging, the
metrics settings every registry shares, and a stop event set by SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from prometheus_client import disable_created_metrics

from gateway.process.logs import configure_logging
from gateway.settings import Settings

__all__ = ["start_process"]

_log = logging.getLogger(__name__)


def start_process(settings: Settings, draining: str) -> threading.Event:
    """Configure logging and metrics; return an event that SIGTERM or SIGINT sets, logging
    `draining` with the signal's name."""
    configure_logging(settings.log_level, settings.log_format)
    # *_created series double the scrape size and no dashboard reads them.
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        _log.info(draining, extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop

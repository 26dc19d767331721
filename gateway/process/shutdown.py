"""Bounded shutdown: every step after the drain shares a short budget, and a watchdog ends
the process when the whole shutdown overruns its bound, whatever is still running.

Kubernetes kills a pod at the end of its grace period with requests in flight; an operator
waiting on a stop waits for ever on a step that hangs (a warm-up that never ends, a Redis
that does not answer). So after the drain each step runs on a daemon thread and is waited
for only while the budget lasts, and the watchdog is the guarantee behind that.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

__all__ = ["CLEANUP_SECONDS", "ShutdownBudget", "start_watchdog"]

_log = logging.getLogger(__name__)

# What a stop may take past the end of its grace period: the steps after the drain share this
# and what the drain left of the grace; the watchdog fires a little later, so SIGTERM ends the
# process within notice + grace + 2 s.
CLEANUP_SECONDS = 1.2
WATCHDOG_MARGIN_SECONDS = 1.7


class ShutdownBudget:
    """Runs shutdown steps one after another until `seconds` have passed."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def left(self) -> float:
        return max(self._deadline - time.monotonic(), 0.0)

    def run(self, name: str, step: Callable[[], object]) -> bool:
        """Run `step` on a daemon thread and wait for it while the budget lasts; a step still
        running then is left behind (logged). True when it finished."""
        finished = threading.Event()

        def run_step() -> None:
            try:
                step()
            except Exception:  # one failing step must not keep the others from running
                _log.exception("shutdown step failed", extra={"step": name})
            finally:
                finished.set()

        threading.Thread(target=run_step, name=f"onnxgate-stop-{name}", daemon=True).start()
        if finished.wait(self.left()):
            return True
        _log.warning("shutdown step left unfinished", extra={"step": name})
        return False


def start_watchdog(seconds: float, exit_code: int = 0) -> None:
    """End the process with `exit_code` after `seconds` unless it has ended by then."""

    def expire() -> None:
        _log.error("shutdown overran its bound; exiting now", extra={"bound_seconds": seconds})
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(exit_code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.name = "onnxgate-shutdown-watchdog"
    timer.start()

"""`--watch` on status commands: print the status, then again each time it reads differently,
until it reaches a final state or the operator interrupts (Ctrl-C ends it with exit 0)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable
from typing import TextIO

from registry_client.cli.durations import duration_argument
from registry_client.cli.exit_codes import EXIT_OK

__all__ = ["Snapshot", "add_watch_arguments", "watch"]

# What one read shows, and the exit code once what is watched reached a final state (None:
# not yet, keep watching).
Snapshot = tuple[str, int | None]


def add_watch_arguments(parser: argparse.ArgumentParser, until: str) -> None:
    parser.add_argument("-w", "--watch", action="store_true",
                        help=f"print it again whenever it changes, {until}")  # fmt: skip
    parser.add_argument(
        "--interval", type=duration_argument, default=2.0, metavar="DURATION",
        help="how often --watch reads, e.g. 0.5s (2s)",
    )  # fmt: skip


def watch(
    read: Callable[[], Snapshot],
    out: TextIO,
    interval: float,
    sleep: Callable[[float], object] | None = None,
) -> int:
    """Print read()'s text now and whenever it changes, a blank line between two tables (JSON
    comes one document a line); return the final state's exit code, or 0 when interrupted.

    Ctrl-C (SIGINT) only sets a flag the loop checks between reads: a KeyboardInterrupt
    raised inside the Redis client could leave a lock of its connection pool held, and
    closing the client would then hang."""
    interrupted = threading.Event()
    handler = None
    if threading.current_thread() is threading.main_thread():
        handler = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    pause = sleep or interrupted.wait
    shown: str | None = None
    try:
        while not interrupted.is_set():
            text, final = read()
            if text != shown:
                if shown is not None and not text.startswith(("{", "[")):
                    out.write("\n")
                out.write(text)
                out.flush()
                shown = text
            if final is not None:
                return final
            pause(interval)
        return EXIT_OK
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)

"""Progress of gatectl's long work (hashing and uploading an artifact, reading and writing a
labels file): one line on standard error, redrawn in place at most ten times a second, saying
what is being done, a bar, the share done, how much of how much, the rate and the time left.

Nothing is drawn when standard error is not a terminal (logs and pipes get the command's
output only) or with --quiet. A stage's first and last state are always drawn, so a short
stage shows too; each stage keeps its line when the next begins.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["REDRAW_SECONDS", "Progress", "add_quiet_argument"]

REDRAW_SECONDS = 0.1  # a terminal redrawn more often flickers and costs the work its time
_BAR_CELLS = 24
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="draw no progress on standard error")  # fmt: skip


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):  # closed, or a stream without a descriptor
        return False


def _size(count: float) -> str:
    unit = 0
    while count >= 1024 and unit < len(_UNITS) - 1:
        count /= 1024
        unit += 1
    return f"{count:.0f} {_UNITS[unit]}" if unit == 0 else f"{count:.1f} {_UNITS[unit]}"


def _duration(seconds: float) -> str:
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress line on `stream`, or nothing when `stream` is None (see on()).

    The records layer reports through stage() and advance() (registry_client.records.artifacts
    .Progress); the labels import also sets the count done and a note with update(). Not
    thread-safe: one command's thread draws."""

    def __init__(self, stream: TextIO | None, clock: Callable[[], float] = time.monotonic):
        self._stream = stream
        self._clock = clock
        self._what, self._unit, self._note = "", "bytes", ""
        self._total = self._done = 0
        self._started = self._drawn_at = 0.0
        self._shown = ""  # what the line shows now; "" when no line is open

    @classmethod
    def on(cls, stream: TextIO, quiet: bool = False) -> Progress:
        """Progress drawn on `stream` when it is a terminal and not `quiet`; else silent."""
        return cls(stream if not quiet and _is_terminal(stream) else None)

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    def stage(self, what: str, total: int, unit: str = "bytes") -> None:
        """Begin a stage of `total` units (bytes, or e.g. "labels"; 0: no measure, the line
        says what is being done only), drawn at once; the previous stage keeps its line."""
        if self._stream is None:
            return
        self.end()
        self._what, self._total, self._unit, self._note = what, max(total, 0), unit, ""
        self._done = 0
        self._started = self._clock()
        self._draw(self._started)

    def advance(self, count: int) -> None:
        """`count` more units done."""
        if self._stream is not None:
            self.update(self._done + count, self._note)

    def update(self, done: int, note: str = "") -> None:
        """`done` units of the stage done so far; `note` is shown beside them ("41,000 rows").
        Cheap when nothing is drawn: called for every row of a labels file."""
        if self._stream is None:
            return
        self._done, self._note = done, note
        now = self._clock()
        if now - self._drawn_at >= REDRAW_SECONDS or (self._total and done >= self._total):
            self._draw(now)

    def end(self) -> None:
        """Close the stage's line with its last state (before anything else is printed)."""
        if self._stream is None or not self._shown:
            return
        self._draw(self._clock())
        self._stream.write("\n")
        self._stream.flush()
        self._shown = ""

    def _draw(self, now: float) -> None:
        assert self._stream is not None
        line = self._line(now)
        if line != self._shown:
            # \r back to the start of the line, \x1b[K erases what a longer line left.
            self._stream.write(f"\r{line}\x1b[K")
            self._stream.flush()
            self._shown = line
        self._drawn_at = now

    def _line(self, now: float) -> str:
        parts = [self._what]
        if self._total:
            done = min(self._done, self._total)
            share = done / self._total
            filled = int(share * _BAR_CELLS)
            parts.append(f"[{'#' * filled}{'.' * (_BAR_CELLS - filled)}] {int(share * 100):3d}%")
            parts.append(self._of(done))
        if self._note:
            parts.append(self._note)
        elapsed = now - self._started
        if self._total and elapsed > 0 and self._done:
            rate = self._done / elapsed
            parts.append(f"{_size(rate)}/s" if self._unit == "bytes"
                         else f"{rate:,.0f} {self._unit}/s")  # fmt: skip
            if self._done < self._total:
                parts.append(f"ETA {_duration((self._total - self._done) / rate)}")
        return "  ".join(parts)

    def _of(self, done: int) -> str:
        if self._unit == "bytes":
            return f"{_size(done)} of {_size(self._total)}"
        return f"{done:,} of {self._total:,} {self._unit}"

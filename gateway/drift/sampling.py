"""Which served rows the drift sketches take: every row of a model-version up to a rate, a
uniform random share of them beyond it.

A sketch of a uniform sample has the distribution of all the rows (what PSI, KS and the
quantiles read), and past a few thousand values a minute more of them sharpen nothing, while
each row sketched costs the request path its queueing and the fold its work: on the tiny
model at concurrency 32, sketching every row took 4-8% of the gateway's CPU per request
(benchmarks/RESULTS.md). So the request path keeps a row with the probability the fold thread
last set for its version: 1 until the version's rows exceed the cap, then cap / rate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

__all__ = ["RATE_PERIOD_SECONDS", "RowSampler"]

RATE_PERIOD_SECONDS = 1.0  # each version's rate is measured, and its share set, so often


class RowSampler:
    """skips() is the request path's call: a dict read and, for a capped version, one random
    draw. counted() is the fold's: it estimates each version's rate from the rows it folded
    (each kept row stands for 1 / share rows served) and sets the shares once a period.
    A version whose rows stop loses its share: its next rows are all kept until measured."""

    def __init__(
        self,
        max_rows_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._cap = max_rows_per_second
        self._clock = clock
        self._draw = draw
        # (model, version) -> share of rows kept, for the versions over the cap only;
        # replaced whole, never changed in place, so readers need no lock.
        self._shares: dict[tuple[str, str], float] = {}
        self._served: dict[tuple[str, str], float] = {}  # estimated rows this period
        self._since = clock()

    def skips(self, model: str, version: str) -> bool:
        """Whether this request's rows go unsketched."""
        share = self._shares.get((model, version))
        return share is not None and self._draw() >= share

    def counted(self, kept_rows: Mapping[tuple[str, str], int]) -> None:
        """The rows one fold took, per version; not thread-safe (the recorder's state lock)."""
        for key, rows in kept_rows.items():
            self._served[key] = self._served.get(key, 0.0) + rows / self._shares.get(key, 1.0)
        now = self._clock()
        elapsed = now - self._since
        if elapsed < RATE_PERIOD_SECONDS:
            if elapsed < 0.0:  # a clock set back: the period starts again
                self._since = now
            return
        allowed = self._cap * elapsed
        self._shares = {
            key: allowed / served for key, served in self._served.items() if served > allowed
        }
        self._served = {}
        self._since = now

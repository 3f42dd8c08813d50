"""What the consumer saw: batches and samples served, and the time it waited for them.

:class:`ServedCounters` is updated by ``iter()`` and ``next()`` (from the consumer's thread, or
several) and read by ``stats()``; one lock guards every field.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

__all__ = ["RECENT_STALLS", "Served", "ServedCounters"]

RECENT_STALLS = 1000
"""Batches whose stall (time in ``iter()`` and ``next()``) feeds the percentiles of ``stats()``."""


class Served(NamedTuple):
    """A consistent copy of :class:`ServedCounters`."""

    batches: int
    samples: int
    wait_seconds: float
    """In ``iter()`` and ``next()``, including the ``iter()`` calls still waiting."""
    minimum_wait_seconds: float
    """In ``iter()``, waiting for the minimum (or the exact entries of a deterministic epoch)."""
    stalls: list[float]
    """The stall of each recent batch: its ``next()``, plus the ``iter()`` before the first one."""


class ServedCounters:
    """Counters of what was served and how long the consumer waited.

    Examples
    --------
    >>> c = ServedCounters()
    >>> with c.in_iter():
    ...     pass
    >>> c.batch(rows=4, seconds=0.5, carried=0.25)
    >>> c.batch(rows=0, seconds=0.1, carried=0.0)  # the epoch's end: time, no batch
    >>> s = c.copy()
    >>> s.batches, s.samples, s.stalls
    (1, 4, [0.75])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches = 0
        self._samples = 0
        self._wait_seconds = 0.0
        self._minimum_wait_seconds = 0.0
        self._iter_since: dict[object, float] = {}  # iter() calls going on: when each started
        self._stalls: deque[float] = deque(maxlen=RECENT_STALLS)

    @contextmanager
    def in_iter(self) -> Iterator[list[float]]:
        """Count an ``iter()`` call: while it runs (``stats()`` sees it waiting), and after.

        Yields a list that holds the call's duration once the block is left.
        """
        t0 = time.perf_counter()
        token = object()
        took: list[float] = []
        with self._lock:
            self._iter_since[token] = t0
        try:
            yield took
        finally:
            took.append(time.perf_counter() - t0)
            with self._lock:
                del self._iter_since[token]
                self._wait_seconds += took[0]

    def batch(self, *, rows: int, seconds: float, carried: float) -> None:
        """A ``next()`` call took ``seconds`` and yielded ``rows`` rows (0: the epoch's end).

        ``carried`` is the epoch's start, already counted as time in ``iter()``: part of the
        first batch's stall, not counted again.
        """
        with self._lock:
            self._wait_seconds += seconds
            if rows:
                self._batches += 1
                self._samples += rows
                self._stalls.append(seconds + carried)

    def add_minimum_wait(self, seconds: float) -> None:
        """``iter()`` waited ``seconds`` for the minimum (or the exact entries)."""
        with self._lock:
            self._minimum_wait_seconds += seconds

    def copy(self) -> Served:
        """The counters now (the ``iter()`` calls still waiting count until now)."""
        now = time.perf_counter()
        with self._lock:
            waited = self._wait_seconds + sum(now - t0 for t0 in self._iter_since.values())
            return Served(
                self._batches, self._samples, waited, self._minimum_wait_seconds, list(self._stalls)
            )

    def __repr__(self) -> str:
        s = self.copy()
        return f"<ServedCounters: batches={s.batches} samples={s.samples} wait_seconds={s.wait_seconds:.3f}>"

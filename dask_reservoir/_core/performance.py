"""Running means of durations: :class:`Performance`, as trw's.

Plain data behind a lock (the job runner adds from its thread while the consumer
reads); no thread of its own and no dask.  :class:`~dask_reservoir._core.stats.ReservoirStats`
reports its means; a loader process copies its totals across (:meth:`Performance.totals`,
:meth:`Performance.load`).
"""

from __future__ import annotations

import threading

__all__ = ["Performance"]


class Performance:
    """Running mean of durations, as trw's ``Performance``.

    Thread-safe: the job runner adds from its thread while the consumer reads.

    Examples
    --------
    >>> perf = Performance()
    >>> perf.add(0.5)
    >>> perf.add(1.5)
    >>> perf.get_average_time()
    1.0
    >>> perf
    <Performance: count=2 average=1.000000s>
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0.0
        self._count = 0

    def add(self, seconds: float) -> None:
        """Record one duration, in seconds."""
        with self._lock:
            self._total += float(seconds)
            self._count += 1

    def get_average_time(self) -> float:
        """Mean of the recorded durations, 0.0 when none was recorded."""
        with self._lock:
            return self._total / self._count if self._count else 0.0

    @property
    def count(self) -> int:
        """Number of durations recorded."""
        return self._count

    def totals(self) -> tuple[float, int]:
        """``(sum of durations, count)``, to copy into another process's :meth:`load`."""
        with self._lock:
            return self._total, self._count

    def load(self, total: float, count: int) -> None:
        """Replace the recorded durations by ``count`` of them summing to ``total``."""
        with self._lock:
            self._total, self._count = float(total), int(count)

    def __repr__(self) -> str:
        return f"<Performance: count={self._count} average={self.get_average_time():.6f}s>"

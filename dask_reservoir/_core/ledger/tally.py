"""The runner's counters: jobs and rows by what happened to them, load times, the cluster's workers.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_tally.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TypedDict

__all__ = ["CACHE_COUNTS", "RECENT_LOADS", "Counts", "Tally"]

CACHE_COUNTS = ("cache_hits", "cache_misses", "cache_bytes_read", "cache_bytes_written")
"""The persistent tier's counters, in the order tasks report them."""

RECENT_LOADS = 1000
"""Rows whose load time feeds the percentiles of ``stats()``."""


class Counts(TypedDict):
    """The counters of a :class:`Tally`, named as in :class:`~dask_reservoir._core.records.RunnerCounters`."""

    jobs_submitted: int
    rows_submitted: int
    rows_loaded: int
    rows_requeued: int
    jobs_completed: int
    jobs_failed: int
    rows_failed: int
    rows_cancelled: int
    workers: int
    workers_lost: int
    rows_rerun: int
    cache_hits: int
    cache_misses: int
    cache_bytes_read: int
    cache_bytes_written: int


class Tally:
    """Counts of jobs and rows, the worker time of loaded rows, and the cluster's workers.

    Examples
    --------
    >>> tally = Tally()
    >>> tally.submitted(3)
    >>> tally.loaded([0.5, 1.5])
    >>> tally.completed(failed=False)
    >>> tally.row_failed()
    >>> counts = tally.counts()
    >>> counts["jobs_submitted"], counts["rows_submitted"], counts["rows_loaded"], counts["rows_failed"]
    (1, 3, 2, 1)
    >>> tally.mean_load_seconds, tally.recent_load_seconds()
    (1.0, [0.5, 1.5])
    """

    def __init__(self) -> None:
        self._jobs_submitted = 0
        self._jobs_completed = 0
        self._jobs_failed = 0
        self._rows_submitted = 0
        self._rows_loaded = 0
        self._rows_failed = 0
        self._rows_requeued = 0
        self._rows_cancelled = 0
        self._rows_rerun = 0
        self._workers = 0
        self._workers_lost = 0
        self._cache = [0, 0, 0, 0]  # persistent tier: hits, misses, bytes read, bytes written
        self._load_total = 0.0  # worker seconds of the rows loaded
        self._load_count = 0
        self._recent_loads: deque[float] = deque(maxlen=RECENT_LOADS)

    # ------------------------------------------------------------------ jobs and rows
    def submitted(self, rows: int) -> None:
        """A job of ``rows`` rows was submitted."""
        self._jobs_submitted += 1
        self._rows_submitted += rows

    def completed(self, *, failed: bool) -> None:
        """A job came back (as a whole ``failed``: its task raised, or its worker died)."""
        self._jobs_completed += 1
        if failed:
            self._jobs_failed += 1

    def row_failed(self) -> None:
        """A submitted row failed."""
        self._rows_failed += 1

    def rejected(self) -> None:
        """A loaded row's result could not be stored: it counts as failed, no longer as loaded.

        Examples
        --------
        >>> tally = Tally()
        >>> tally.loaded([0.1, 0.1]); tally.rejected()
        >>> tally.counts()["rows_loaded"], tally.counts()["rows_failed"]
        (1, 1)
        """
        self._rows_loaded -= 1
        self._rows_failed += 1

    def requeued(self, rows: int) -> None:
        """``rows`` submitted rows go again (their job was lost)."""
        self._rows_requeued += rows

    def cancelled(self, rows: int) -> None:
        """``rows`` rows in flight were cancelled (the reservoir closes)."""
        self._rows_cancelled += rows

    def rerun(self, rows: int) -> None:
        """Dask runs ``rows`` submitted rows again (a worker left)."""
        self._rows_rerun += int(rows)

    def set_workers(self, workers: int, *, lost: int = 0) -> None:
        """The cluster has ``workers`` workers now; ``lost`` more of those seen before left it."""
        self._workers = int(workers)
        self._workers_lost += int(lost)

    # ------------------------------------------------------------------ load times
    def loaded(self, seconds: Sequence[float]) -> None:
        """Rows loaded, in these worker seconds each."""
        count = len(seconds)
        self._rows_loaded += count
        self._load_total += sum(seconds)
        self._load_count += count
        self._recent_loads.extend(seconds)

    def loaded_chunk(self, rows: int, seconds: float) -> None:
        """A vectorized job loaded ``rows`` rows in ``seconds``: each row counts an equal share.

        Examples
        --------
        >>> tally = Tally()
        >>> tally.loaded_chunk(4, 2.0)
        >>> tally.counts()["rows_loaded"], tally.mean_load_seconds, tally.recent_load_seconds()
        (4, 0.5, [0.5, 0.5, 0.5, 0.5])
        """
        share = seconds / max(1, rows)
        self._rows_loaded += rows
        self._load_total += seconds
        self._load_count += rows
        self._recent_loads.extend([share] * min(rows, RECENT_LOADS))

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time per source row loaded (0.0 before the first)."""
        return self._load_total / self._load_count if self._load_count else 0.0

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last ``RECENT_LOADS`` rows loaded."""
        return list(self._recent_loads)

    # ------------------------------------------------------------------ reports
    def counts(self) -> Counts:
        """The counters, named as in :class:`~dask_reservoir._core.records.RunnerCounters`."""
        return {
            "jobs_submitted": self._jobs_submitted,
            "rows_submitted": self._rows_submitted,
            "rows_loaded": self._rows_loaded,
            "rows_requeued": self._rows_requeued,
            "jobs_completed": self._jobs_completed,
            "jobs_failed": self._jobs_failed,
            "rows_failed": self._rows_failed,
            "rows_cancelled": self._rows_cancelled,
            "workers": self._workers,
            "workers_lost": self._workers_lost,
            "rows_rerun": self._rows_rerun,
            "cache_hits": self._cache[0],
            "cache_misses": self._cache[1],
            "cache_bytes_read": self._cache[2],
            "cache_bytes_written": self._cache[3],
        }

    def cached(self, counts: tuple[int, int, int, int]) -> None:
        """Add a task's persistent-tier counts: (hits, misses, bytes read, bytes written).

        Examples
        --------
        >>> tally = Tally()
        >>> tally.cached((1, 2, 30, 40)); tally.cached((1, 0, 5, 0))
        >>> [tally.counts()[name] for name in CACHE_COUNTS]
        [2, 2, 35, 40]
        """
        self._cache = [a + int(b) for a, b in zip(self._cache, counts, strict=True)]

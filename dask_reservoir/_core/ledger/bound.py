"""The in-flight bound: how many source rows may be out, in tasks of how many rows.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_bound.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dask_reservoir._core.sizing import (
    AUTO_MAX_CHUNK_ROWS,
    AUTO_MAX_ROWS,
    ROW_OVERHEAD_BYTES,
    TaskSizer,
    mean_row_bytes,
)

__all__ = ["MIN_TASKS_IN_FLIGHT", "Block", "InFlightBound", "default_bound", "jobs_bound", "tasks_in_flight"]

MIN_TASKS_IN_FLIGHT = 8
"""Fewest tasks the default bound keeps out (in flight, or finished and not yet taken).

dask adds 15-20 ms of latency to each task (its batched sends), so a few tasks
in flight cap the rate: one-row tasks reach about 170 tasks/s with 2 in flight,
470 with 8 and the plateau of about 550-650 with 32 (``shared/notes/dask.md``).
The default bound holds ``max(2 x worker threads, MIN_TASKS_IN_FLIGHT)`` tasks,
so one-row tasks at the start, before tasks are sized, and slow rows that stay
one per task keep the workers busy; packed tasks need no more.
"""


def tasks_in_flight(threads: int) -> int:
    """Tasks the default bound keeps out for a cluster of ``threads`` worker threads.

    Examples
    --------
    >>> tasks_in_flight(1), tasks_in_flight(4), tasks_in_flight(16)
    (8, 8, 32)
    """
    return max(2 * threads, MIN_TASKS_IN_FLIGHT)


def default_bound(rows_per_job: int, threads: int, capacity: int | None) -> int:
    """The default back-pressure bound, in source rows: :func:`jobs_bound` of ``tasks_in_flight(threads)`` tasks.

    Examples
    --------
    >>> default_bound(1, 2, None), default_bound(75, 2, 8192), default_bound(512, 2, 1000)
    (8, 600, 1024)
    >>> default_bound(1, 2, 4)  # a reservoir of 4 entries
    4
    """
    return jobs_bound(tasks_in_flight(threads), rows_per_job, capacity)


def jobs_bound(jobs: int, rows_per_job: int, capacity: int | None) -> int:
    """The back-pressure bound in source rows for ``jobs`` tasks of ``rows_per_job`` rows.

    No more rows than the reservoir holds (``capacity``): entries waiting beyond it
    would evict each other at the next ingestion, loaded for nothing, and each
    ingestion would bring more than one reservoir's worth.  At least two tasks (one
    when ``jobs`` is 1), so that one loads while the results of the other wait.

    Examples
    --------
    >>> jobs_bound(32, 1750, 100_000), jobs_bound(32, 1750, 1000), jobs_bound(1, 64, 1000)
    (56000, 3500, 64)
    """
    wanted = jobs * rows_per_job
    if capacity is not None:
        wanted = min(wanted, capacity)
    return max(min(jobs, 2) * rows_per_job, wanted)


class Block(Protocol):
    """What the bound reads of a vectorized job's block: its rows and their bytes."""

    def __len__(self) -> int: ...

    def nbytes(self) -> int: ...


class InFlightBound:
    """Tasks and rows in flight, the most rows that may be out, and the rows per task.

    Parameters
    ----------
    source_rows : int
        Rows in the source (this rank's view of it).
    max_rows : int or None
        Most source rows out (in flight, or finished and not yet taken), fixed; None: the
        bound in rows follows the tasks allowed (``max_jobs``) and their size (:func:`jobs_bound`).
    max_jobs : int or None
        Most tasks out (the reservoir's ``max_jobs_at_once``): no more tasks in flight, and no
        more rows out than :func:`jobs_bound` of that many tasks; None: ``tasks_in_flight(threads)``,
        following the cluster.  Ignored with ``max_rows``.
    rows_per_job : int or None
        Rows per task; None sizes tasks from measured row times and bytes
        (:class:`~dask_reservoir._core.sizing.TaskSizer`), at most as many rows as let
        two tasks per worker thread fit in ``max_rows``, else in ``capacity``, and in the
        source: ``max_jobs`` never shrinks tasks.
    threads : int or None
        Worker threads at the start (None or 0 counts as one).
    capacity : int or None
        The reservoir's capacity: the default bound holds no more rows.
    max_bytes : int or None
        The reservoir's byte bound (``max_reservoir_bytes``): the default bound holds no more
        rows than that many bytes of results, at the mean size measured so far.
    chunks : bool
        Tasks are chunks of a vectorized function (``batched=True``): auto-sized up to
        :data:`~dask_reservoir._core.sizing.AUTO_MAX_CHUNK_ROWS` rows.

    Examples
    --------
    >>> bound = InFlightBound(100, max_rows=None, rows_per_job=2, threads=1)
    >>> bound.max_rows  # 8 tasks of 2 rows
    16
    >>> bound.sent(2)
    >>> bound.jobs_in_flight, bound.rows_in_flight, bound.room(waiting=4)
    (1, 2, 10)
    >>> bound.set_threads(6), bound.max_rows  # 2 x 6 tasks of 2 rows
    (True, 24)
    >>> jobs = InFlightBound(10_000, max_rows=None, max_jobs=3, rows_per_job=100, threads=2)
    >>> jobs.max_jobs, jobs.max_rows
    (3, 300)
    """

    def __init__(
        self,
        source_rows: int,
        *,
        max_rows: int | None,
        rows_per_job: int | None,
        threads: int | None = None,
        capacity: int | None = None,
        max_jobs: int | None = None,
        max_bytes: int | None = None,
        chunks: bool = False,
    ) -> None:
        self._source_rows = source_rows
        self._max_bytes = max_bytes
        self._row_bytes: float | None = None  # with max_bytes: mean bytes of a source row's results
        self._fixed_bound = max_rows
        self._fixed_jobs = max_jobs
        self._threads = max(1, threads or 1)
        self._capacity = capacity
        limit = AUTO_MAX_CHUNK_ROWS if chunks else AUTO_MAX_ROWS
        self._sizer = TaskSizer(1, max_rows=limit) if rows_per_job is None else None
        self._rows_per_job = 1 if rows_per_job is None else rows_per_job
        self._jobs_in_flight = 0
        self._rows_in_flight = 0
        self._held_since: float | None = None  # when the bound started holding idle threads back
        self._held_seconds = 0.0

    # ------------------------------------------------------------------ what is out
    @property
    def jobs_in_flight(self) -> int:
        """Tasks submitted and not yet back."""
        return self._jobs_in_flight

    @property
    def rows_in_flight(self) -> int:
        """Source rows of the tasks in flight."""
        return self._rows_in_flight

    def sent(self, rows: int) -> None:
        """A task of ``rows`` rows was submitted."""
        self._jobs_in_flight += 1
        self._rows_in_flight += rows

    def done(self, rows: int) -> None:
        """A task of ``rows`` rows came back, failed, was cancelled or lost."""
        self._jobs_in_flight -= 1
        self._rows_in_flight -= rows

    # ------------------------------------------------------------------ the bound
    @property
    def max_jobs(self) -> int | None:
        """Most tasks out now (None with a fixed ``max_rows``)."""
        if self._fixed_bound is not None:
            return None
        return tasks_in_flight(self._threads) if self._fixed_jobs is None else self._fixed_jobs

    @property
    def max_rows(self) -> int:
        """The bound now, in source rows."""
        if self._fixed_bound is not None:
            return self._fixed_bound
        jobs = tasks_in_flight(self._threads) if self._fixed_jobs is None else self._fixed_jobs
        return jobs_bound(jobs, self._rows_per_job, self.capacity)

    @property
    def capacity(self) -> int | None:
        """Most rows the results out may hold: the capacity, and with ``max_bytes`` as many as fit in it.

        Examples
        --------
        >>> import numpy as np
        >>> bound = InFlightBound(10_000, max_rows=None, rows_per_job=1, capacity=500, max_bytes=64_000)
        >>> bound.capacity  # nothing measured yet
        500
        >>> bound.observe_rows([0.1], [[{"x": np.zeros(100)}]])  # 800 bytes + 64 of overhead
        >>> bound.capacity, bound.max_rows
        (74, 8)
        """
        if self._max_bytes is None or self._row_bytes is None:
            return self._capacity
        fit = max(1, int(self._max_bytes // max(1.0, self._row_bytes)))
        return fit if self._capacity is None else min(self._capacity, fit)

    def _note_bytes(self, row_bytes: float) -> None:
        """With ``max_bytes``: a task's mean bytes per source row (a moving mean)."""
        last = self._row_bytes
        self._row_bytes = row_bytes if last is None else 0.8 * last + 0.2 * row_bytes

    @property
    def threads(self) -> int:
        """Worker threads of the cluster (at least one)."""
        return self._threads

    @property
    def rows_per_job(self) -> int:
        """Source rows per task now (it changes when tasks are sized automatically)."""
        return self._rows_per_job

    def room(self, *, waiting: int) -> int:
        """Rows the bound lets out now, besides those in flight and the ``waiting`` rows not yet taken.

        0 once ``max_jobs`` tasks are in flight (with an explicit ``max_jobs``); until tasks
        sized automatically are measured, once ``tasks_in_flight(threads)`` are.

        Examples
        --------
        >>> bound = InFlightBound(100, max_rows=None, max_jobs=2, rows_per_job=1)
        >>> bound.sent(1); bound.room(waiting=0)
        1
        >>> bound.sent(1); bound.room(waiting=0)
        0
        """
        jobs = self._fixed_jobs
        if jobs is not None and self._fixed_bound is None:
            if self._sizer is not None and not self._sizer.rows_seen:
                # tasks not sized yet: a few one-row tasks measure them, not thousands
                jobs = min(jobs, tasks_in_flight(self._threads))
            if self._jobs_in_flight >= jobs:
                return 0
        return self.max_rows - self._rows_in_flight - waiting

    def note_room(self, *, granted: bool, now: float) -> None:
        """A task was let out (``granted``) or refused at ``now``: track how long the bound holds loading back.

        Loading is held back while tasks are refused for room and fewer tasks than worker
        threads are in flight: threads sit idle because of the bound.

        Examples
        --------
        >>> bound = InFlightBound(100, max_rows=None, max_jobs=1, rows_per_job=1, threads=2)
        >>> bound.note_room(granted=False, now=10.0)
        >>> bound.note_room(granted=True, now=12.5)
        >>> bound.held_seconds(now=20.0)
        2.5
        """
        held = not granted and self._jobs_in_flight < self._threads
        if held and self._held_since is None:
            self._held_since = now
        elif not held and self._held_since is not None:
            self._held_seconds += now - self._held_since
            self._held_since = None

    def held_seconds(self, *, now: float) -> float:
        """Seconds the bound held loading back with idle worker threads, up to ``now``."""
        since = self._held_since
        return self._held_seconds + (0.0 if since is None else now - since)

    def job_rows(self, *, barred: int) -> int:
        """Rows of the next full task: ``rows_per_job``, no more than the source's rows not ``barred``, at least one.

        Examples
        --------
        >>> bound = InFlightBound(5, max_rows=10, rows_per_job=4)
        >>> bound.job_rows(barred=0), bound.job_rows(barred=3), bound.job_rows(barred=5)
        (4, 2, 1)
        """
        return max(1, min(self._rows_per_job, self._source_rows - barred))

    def set_threads(self, threads: int) -> bool:
        """The cluster has ``threads`` worker threads now (0 counts as one); return whether that changed.

        The default bound follows the threads, and so do automatically sized tasks
        (within the limit); an explicit ``max_rows`` never moves.
        """
        threads = max(1, int(threads))
        if threads == self._threads:
            return False
        self._threads = threads
        self._resize()
        return True

    # ------------------------------------------------------------------ task size
    @property
    def auto(self) -> bool:
        """Whether tasks are sized from what rows cost (``rows_per_job=None``)."""
        return self._sizer is not None

    def observe(self, mean_seconds: float, mean_bytes: float, rows: int) -> None:
        """A task of ``rows`` rows loaded, by their mean time and bytes: size tasks anew (when :attr:`auto`).

        Examples
        --------
        >>> bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
        >>> bound.observe(0.0015, 100.0, 1)  # 1.5 ms rows: tasks of about 75 ms
        >>> bound.rows_per_job, bound.max_rows
        (50, 400)
        """
        if self._sizer is not None and self._sizer.observe_task(mean_seconds, mean_bytes, rows) is not None:
            self._resize()

    def observe_rows(self, seconds: Sequence[float], produced: Sequence[Sequence[dict[str, Any]]]) -> None:
        """Rows of one task loaded in ``seconds`` each, producing ``produced`` (see :meth:`observe`).

        Their bytes are measured only when tasks are sized automatically, or with ``max_bytes``.
        """
        if (self._sizer is None and self._max_bytes is None) or not seconds:
            return
        row_bytes = mean_row_bytes(produced)
        if self._max_bytes is not None:
            self._note_bytes(row_bytes)
        self.observe(sum(seconds) / len(seconds), row_bytes, len(seconds))

    def observe_block(self, seconds: float, block: Block, rows: int) -> None:
        """A vectorized task of ``rows`` source rows loaded ``block`` in ``seconds`` (see :meth:`observe`).

        Each source row counts an equal share of the time and of the block's rows and bytes.

        Examples
        --------
        >>> import numpy as np
        >>> from dask_reservoir._core.blocks import ColumnBlock
        >>> bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
        >>> bound.observe_block(0.003, ColumnBlock({"x": np.zeros(2)}), 2)  # 1.5 ms a row
        >>> bound.rows_per_job
        50
        """
        if (self._sizer is not None or self._max_bytes is not None) and rows:
            row_bytes = (ROW_OVERHEAD_BYTES + block.nbytes() / max(1, len(block))) * (len(block) / rows)
            if self._max_bytes is not None:
                self._note_bytes(row_bytes)
            self.observe(seconds / max(1, rows), row_bytes, rows)

    def _resize(self) -> None:
        """The sizer's task size, within the task limit (when tasks are sized automatically)."""
        if self._sizer is None:
            return
        self._rows_per_job = min(self._sizer.rows_per_job, self._task_limit())

    def _task_limit(self) -> int:
        """Most rows of an auto-sized task: two tasks per worker thread fit in the bound and the source.

        Two tasks per thread keep each worker busy while the result of its previous
        task travels back; more, smaller tasks would only add dask's per-task cost.
        A small source is not packed into fewer tasks than that (3 rows on 2 workers
        go as 3 tasks, not as 2 + 1 with the last held back for a full job).
        """
        bound = self.capacity if self._fixed_bound is None else self._fixed_bound
        rows = self._source_rows if bound is None else min(bound, self._source_rows)
        return max(1, rows // (2 * self._threads))

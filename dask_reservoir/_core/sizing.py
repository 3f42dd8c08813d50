"""Task sizing for ``rows_per_job="auto"`` (the default): rows per dask task from measured costs.

Pure code: :class:`TaskSizer` follows moving averages of the worker time and
result size per loaded row, one update per finished task, and proposes tasks
that run about :data:`AUTO_TASK_SECONDS` and return at most
:data:`AUTO_TASK_BYTES`, so that fast loaders are not capped by dask's
per-task cost (about 1 ms) and a slow row (a 2 s volume) travels alone.

The averages weigh each task by its rows: the first rows set them outright
(a plain mean until :data:`SMOOTHING` takes over), and a task of many rows
moves them almost as far as its own mean, so the size reaches the packed one
within a few round trips: for rows of 1 ms, tasks go 1 -> 75 rows after the
first finished task.  The bound on rows in flight (how many tasks of this size
may be out) is the ledger's (:mod:`~dask_reservoir._core.ledger`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["AUTO_MAX_CHUNK_ROWS", "AUTO_MAX_ROWS", "AUTO_TASK_BYTES", "AUTO_TASK_SECONDS", "TaskSizer"]

AUTO_TASK_SECONDS = 0.075
"""Target running time of one task."""

AUTO_MAX_ROWS = 4096
"""Largest task, in source rows."""

AUTO_MAX_CHUNK_ROWS = 65536
"""Most rows of an auto-sized chunk of a vectorized function (``batched=True``): it costs one call,
not one Python call per row, so tasks as large as ``dask.dataframe`` partitions pay off (measured:
a one-pass fill of 1e6 tiny rows went from 207,000 to 429,000 rows/s raising the limit from 4096)."""

AUTO_TASK_BYTES = 8 * 2**20
"""Largest result of one task (array bytes): big rows move in smaller tasks."""

ROW_OVERHEAD_BYTES = 64
"""Bytes counted per row besides its arrays."""

SMOOTHING = 0.1
"""Weight of one newest row in the moving averages (a task of ``n`` rows weighs ``1 - 0.9**n``)."""

HYSTERESIS = 1.25
"""A new size is adopted only when it differs from the current one by this factor."""

BYTES_SAMPLE = 16
"""Rows of a task whose array bytes are counted (evenly spaced); the rest are assumed alike."""


def row_bytes(rows: Sequence[dict[str, Any]]) -> int:
    """Array bytes of the rows produced for one source row, plus a fixed overhead.

    Examples
    --------
    >>> import numpy as np
    >>> row_bytes([{"x": np.zeros(10, np.float32), "label": 3}])
    104
    """
    return ROW_OVERHEAD_BYTES + sum(v.nbytes for row in rows for v in row.values() if hasattr(v, "nbytes"))


def mean_row_bytes(produced: Sequence[Sequence[dict[str, Any]]]) -> float:
    """Mean :func:`row_bytes` of the source rows of one task, from at most ``BYTES_SAMPLE`` of them.

    Examples
    --------
    >>> mean_row_bytes([[{"x": 1}], []])
    64.0
    """
    if not produced:
        return float(ROW_OVERHEAD_BYTES)
    step = -(-len(produced) // BYTES_SAMPLE)  # ceil: at most BYTES_SAMPLE rows
    sample = produced[::step]
    return sum(row_bytes(rows) for rows in sample) / len(sample)


class TaskSizer:
    """Proposes rows per task from what loaded rows cost.

    Parameters
    ----------
    rows_per_job : int
        The starting size.
    max_rows : int
        The largest size proposed (:data:`AUTO_MAX_ROWS`, or :data:`AUTO_MAX_CHUNK_ROWS` for chunks).

    Examples
    --------
    >>> sizer = TaskSizer()
    >>> sizer.observe(AUTO_TASK_SECONDS / 50, [{"label": 1}])  # 1.5 ms per row: 50 rows per task
    50
    >>> sizer.observe(AUTO_TASK_SECONDS / 50, [{"label": 1}]) is None  # no change
    True
    """

    def __init__(self, rows_per_job: int = 1, *, max_rows: int = AUTO_MAX_ROWS) -> None:
        self.rows_per_job = rows_per_job
        self.max_rows = max_rows
        self.rows_seen = 0
        self._seconds = 0.0
        self._bytes = 0.0

    def observe(self, row_seconds: float, rows: Sequence[dict[str, Any]]) -> int | None:
        """Record one loaded source row; return the new rows per task when it changes, else None."""
        return self.observe_task(row_seconds, float(row_bytes(rows)), 1)

    def observe_task(self, mean_seconds: float, mean_bytes: float, count: int) -> int | None:
        """Record ``count`` loaded source rows of one task, by their mean time and bytes.

        Returns the new rows per task when it changes, else None.  The averages move
        as far as ``count`` single-row updates would, and are plain means while fewer
        than ``1 / SMOOTHING`` rows were seen (no start-up bias towards the first row).
        """
        if count <= 0:
            return None
        self.rows_seen += count
        weight = max(1.0 - (1.0 - SMOOTHING) ** count, count / self.rows_seen)
        self._seconds += weight * (mean_seconds - self._seconds)
        self._bytes += weight * (mean_bytes - self._bytes)
        return self._propose()

    def _propose(self) -> int | None:
        by_time = AUTO_TASK_SECONDS / max(self._seconds, 1e-7)
        by_bytes = AUTO_TASK_BYTES / max(self._bytes, 1.0)
        target = int(min(self.max_rows, max(1, round(min(by_time, by_bytes)))))
        current = self.rows_per_job
        if target > current * HYSTERESIS or target < current / HYSTERESIS:
            self.rows_per_job = target
            return target
        return None

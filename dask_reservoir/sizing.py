"""Task sizing for ``rows_per_job="auto"``: rows per dask task from measured time and bytes per row.

Pure code: :class:`TaskSizer` follows exponential moving averages of the
worker time and result size of each loaded row, and proposes tasks that run
about :data:`AUTO_TASK_SECONDS` and return at most :data:`AUTO_TASK_BYTES`,
so fast loaders are not capped by dask's per-task cost (about 1 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["AUTO_MAX_ROWS", "AUTO_TASK_BYTES", "AUTO_TASK_SECONDS", "TaskSizer"]

AUTO_TASK_SECONDS = 0.075
"""Target running time of one task."""

AUTO_MAX_ROWS = 4096
"""Largest task, in source rows."""

AUTO_TASK_BYTES = 8 * 2**20
"""Largest result of one task (array bytes): big rows move in smaller tasks."""

ROW_OVERHEAD_BYTES = 64
"""Bytes counted per row besides its arrays."""

SMOOTHING = 0.1
"""Weight of the newest row in the moving averages."""

HYSTERESIS = 1.25
"""A new size is adopted only when it differs from the current one by this factor."""


def row_bytes(rows: Sequence[dict[str, Any]]) -> int:
    """Array bytes of the rows produced for one source row, plus a fixed overhead.

    Examples
    --------
    >>> import numpy as np
    >>> row_bytes([{"x": np.zeros(10, np.float32), "label": 3}])
    104
    """
    return ROW_OVERHEAD_BYTES + sum(v.nbytes for row in rows for v in row.values() if hasattr(v, "nbytes"))


class TaskSizer:
    """Proposes rows per task from what loaded rows cost.

    Parameters
    ----------
    rows_per_job : int
        The starting size.
    limit : int, optional
        Never propose more rows than this (the back-pressure bound, when fixed).

    Examples
    --------
    >>> sizer = TaskSizer()
    >>> sizer.observe(AUTO_TASK_SECONDS / 50, [{"label": 1}])  # 1.5 ms per row: 50 rows per task
    50
    >>> sizer.observe(AUTO_TASK_SECONDS / 50, [{"label": 1}]) is None  # no change
    True
    """

    def __init__(self, rows_per_job: int = 1, *, limit: int | None = None) -> None:
        self.rows_per_job = rows_per_job
        self.limit = limit
        self._seconds: float | None = None
        self._bytes: float | None = None

    def observe(self, row_seconds: float, rows: Sequence[dict[str, Any]]) -> int | None:
        """Record one loaded row; return the new rows per task when it changes, else None."""
        self._seconds = _smooth(self._seconds, row_seconds)
        self._bytes = _smooth(self._bytes, float(row_bytes(rows)))
        by_time = AUTO_TASK_SECONDS / max(self._seconds, 1e-7)
        by_bytes = AUTO_TASK_BYTES / self._bytes
        target = int(min(AUTO_MAX_ROWS, max(1, round(min(by_time, by_bytes)))))
        if self.limit is not None:
            target = min(target, self.limit)
        current = self.rows_per_job
        if target > current * HYSTERESIS or target < current / HYSTERESIS:
            self.rows_per_job = target
            return target
        return None


def _smooth(average: float | None, value: float) -> float:
    return value if average is None else (1 - SMOOTHING) * average + SMOOTHING * value

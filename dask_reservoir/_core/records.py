"""The records the layers pass each other.

What a task reports for each of its source rows (:class:`RowLoaded` or :class:`RowFailed`), a
finished row waiting to enter the store (:class:`Completed`), the latest failure of a UID
(:class:`FailureRecord`) and a copy of the runner's counters (:class:`RunnerCounters`).

Plain named tuples, defined once, built on the workers by :mod:`~dask_reservoir._worker.calls`
and read on the client by :mod:`~dask_reservoir._core.ledger`.  They travel back from
worker processes, so they hold only picklable values.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["Completed", "FailureRecord", "Outcome", "RowFailed", "RowLoaded", "RunnerCounters"]


class RowLoaded(NamedTuple):
    """``function_to_run`` returned for one source row.

    Examples
    --------
    >>> RowLoaded("a", [{"x": 1}], 0.5).rows
    [{'x': 1}]
    """

    uid: Hashable
    """UID of the source row, as the worker read it."""
    rows: list[dict[str, Any]]
    """The produced rows (possibly none), each carrying ``uid`` in the UID column."""
    seconds: float
    """Running time of ``function_to_run`` on the worker."""


class RowFailed(NamedTuple):
    """``function_to_run`` raised, returned garbage or timed out for one source row.

    Examples
    --------
    >>> RowFailed("a", "ValueError", "bad file").describe()
    "UID 'a': ValueError: bad file"
    """

    uid: Hashable
    """UID of the source row, as the worker read it."""
    exc_type: str
    """Name of the exception type."""
    message: str
    """``str()`` of the exception."""
    traceback: str = ""
    """Formatted traceback text."""
    exception: BaseException | None = None
    """The exception itself when it could be pickled, else None."""
    seconds: float = 0.0
    """Time spent on the worker before the failure."""

    def describe(self) -> str:
        """One line: ``UID 'a': ValueError: bad file``."""
        return f"UID {self.uid!r}: {self.exc_type}: {self.message}"


Outcome = RowLoaded | RowFailed
"""One outcome per source row of a task."""


@dataclass(frozen=True)
class FailureRecord:
    """The latest failure of one UID.

    Attributes
    ----------
    uid : Hashable
        UID of the source row whose job failed.
    exc_type : str
        Name of the exception type, e.g. ``"ValueError"`` or ``"KilledWorker"``.
    message : str
        ``str()`` of the exception.
    traceback : str
        Formatted traceback text, as far as it could be recovered.
    count : int
        Failures of this UID in total.
    consecutive : int
        Failures since the last success of this UID.
    """

    uid: Hashable
    exc_type: str
    message: str
    traceback: str = ""
    count: int = 1
    consecutive: int = 1

    def describe(self) -> str:
        """One line: ``UID 3: ValueError: bad file``.

        Examples
        --------
        >>> FailureRecord(3, "ValueError", "bad file").describe()
        'UID 3: ValueError: bad file'
        """
        return f"UID {self.uid!r}: {self.exc_type}: {self.message}"


@dataclass(slots=True)
class Completed:
    """A finished source row, waiting to enter the reservoir."""

    uid: Hashable
    position: int
    rows: tuple[Any, ...]  # dicts, or BlockRow references into a vectorized job's block
    load_seconds: float
    loaded_at: float
    """``time.monotonic()`` when the job finished on the client side (the entry's ``loaded_at``)."""


@dataclass(frozen=True)
class RunnerCounters:
    """A consistent copy of the runner's counters."""

    jobs_submitted: int
    rows_submitted: int
    rows_loaded: int
    rows_requeued: int
    jobs_completed: int
    jobs_failed: int
    rows_failed: int
    jobs_in_flight: int
    rows_in_flight: int
    entries_waiting: int
    uids_tried: int
    uids_loaded: int
    source_passes: int = 0
    """Passes over the source whose every row was submitted."""
    rows_cancelled: int = 0
    failures: tuple[FailureRecord, ...] = field(default_factory=tuple)
    quarantined: dict[Hashable, FailureRecord] = field(default_factory=dict)
    unloadable: frozenset[Hashable] = frozenset()
    """UIDs that cannot give an entry now: quarantined, or their last result was empty."""
    status: str = "running"
    workers: int = 0
    """Workers in the cluster at the runner's last look (about every second)."""
    workers_lost: int = 0
    """Workers that left the cluster while the runner ran (a restarted worker counts as lost and new)."""
    rows_rerun: int = 0
    """Rows of tasks that a worker leaving the cluster was running or held the result of: dask runs them again."""
    loading_held_seconds: float = 0.0
    """Seconds the back-pressure bound held loading back while worker threads sat idle."""
    loading_done: bool = False
    """``passes=``: every pass was submitted, and nothing is in flight or held to go again."""
    cache_hits: int = 0
    """Source rows whose result was read from the persistent tier (``cache=``)."""
    cache_misses: int = 0
    """Source rows the persistent tier did not hold: computed, then written."""
    cache_bytes_read: int = 0
    cache_bytes_written: int = 0

"""What a task reports for each of its source rows: :class:`RowLoaded` or :class:`RowFailed`.

Plain named tuples, defined once, built on the workers by :mod:`~dask_reservoir.tasks`
and read on the client by :mod:`~dask_reservoir.ledger`.  They travel back from
worker processes, so they hold only picklable values.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

__all__ = ["Outcome", "RowFailed", "RowLoaded"]


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

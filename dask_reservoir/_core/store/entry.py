"""An entry of the reservoir store: the rows produced for one source row, and how often it was served.

Pure code with no threads and no dask.  While an entry holds a slot of its store
(see :class:`~dask_reservoir._core.store.pins.SlotHolders`), its serve count lives in the
store's per-slot counts, so that an ending epoch adds to every entry it served with
one vectorized operation; once the entry leaves its slot, the count is copied back
into the entry.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Entry", "Row"]

Row = dict[str, Any]
"""One produced row: column name -> value."""


@dataclass(eq=False)
class Entry:
    """The rows ``function_to_run`` produced for one source row.

    Attributes
    ----------
    uid : Hashable
        UID of the source row.
    position : int
        Position of the source row in its source; snapshots sort by it.
    rows : tuple of dict
        The produced rows, each carrying ``uid`` in the UID column; empty once
        the row lives in a slot of the store's table.  Arrays of stored rows
        are read-only.
    loaded_at : float
        ``time.monotonic()`` when the job finished on the client side.
    load_seconds : float
        Running time of ``function_to_run`` on the worker.
    times_served : int
        How many times the entry was put in a batch (counted when each epoch ends).
    slot : int or None
        Slot of the store's :class:`~dask_reservoir._core.store.table.SlotTable` holding the row, if any.
    handle : int or None
        Slot of the store's pool the entry holds (equal to ``slot`` when slotted).

    Examples
    --------
    >>> entry = Entry("a", position=0, rows=({"x": 1},))
    >>> counts = np.zeros(4, np.int64)
    >>> entry.count_in(counts, 2)  # held in slot 2: its count lives in counts[2]
    >>> counts[2] += 3
    >>> entry.times_served
    3
    >>> entry.stop_counting(counts, 2)  # slot 2 freed: the entry keeps its count
    >>> counts[2] = 0
    >>> entry.times_served
    3
    """

    uid: Hashable
    position: int
    rows: tuple[Row, ...]
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    slot: int | None = None
    handle: int | None = None
    _served: int = field(default=0, repr=False)  # once the entry has left its store
    _counts: np.ndarray | None = field(default=None, repr=False)  # its store's counts while held
    _count_at: int = field(default=-1, repr=False)

    @property
    def times_served(self) -> int:
        """How many times the entry was put in a batch (counted when each epoch ends)."""
        counts = self._counts
        return int(counts[self._count_at]) if counts is not None else self._served

    def count_in(self, counts: np.ndarray, at: int) -> None:
        """Keep the serve count in ``counts[at]`` from now on (set to :attr:`times_served`)."""
        counts[at] = self.times_served
        self._counts, self._count_at = counts, at

    def stop_counting(self, counts: np.ndarray, at: int) -> None:
        """Slot ``at`` of ``counts`` is freed: keep its count in the entry, if it counted there."""
        if self._counts is counts:
            self._served, self._counts = int(counts[at]), None

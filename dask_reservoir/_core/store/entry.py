"""An entry of the reservoir store: the rows produced for one source row, as a record.

Pure code with no threads and no dask.  The store keeps no ``Entry`` object per stored
entry: what it knows of each lives in arrays per slot (see
:class:`~dask_reservoir._core.store.pins.SlotHolders`).  An :class:`Entry` is what a caller
hands to :meth:`~dask_reservoir._core.store.store.ReservoirStore.put`, and what the store
hands back when asked for one (a copy of its state at that moment).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

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
        The produced rows, each carrying ``uid`` in the UID column.  Empty in an entry
        the store hands back whose row lives in a slot of its table; stored rows have
        read-only arrays.
    loaded_at : float
        ``time.monotonic()`` when the job finished on the client side.
    load_seconds : float
        Running time of ``function_to_run`` on the worker.
    slot : int or None
        Slot of the store's :class:`~dask_reservoir._core.store.table.SlotTable` holding the
        row, in an entry the store hands back (None: kept as rows, or not stored).
    handle : int or None
        Slot of the store's pool the entry holds, in an entry the store hands back.
    times_served : int
        How many times the entry was put in a batch (counted when each epoch ends), as
        the store counted it when it handed the entry back.

    Examples
    --------
    >>> Entry("a", position=0, rows=({"x": 1},))
    Entry(uid='a', position=0, rows=({'x': 1},), loaded_at=0.0, load_seconds=0.0, slot=None, handle=None, times_served=0)
    """

    uid: Hashable
    position: int
    rows: tuple[Row, ...]
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    slot: int | None = None
    handle: int | None = None
    times_served: int = 0

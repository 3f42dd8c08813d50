"""An epoch's snapshot of the store: its entries, frozen at ``iter()``, in source order.

Pure code with no threads started and no dask.  A :class:`Snapshot` reads the store
only through the pin API of its :class:`~dask_reservoir._core.store.pins.SlotHolders` (the
entry and table row of each pinned slot, the serve counts) and its
:class:`~dask_reservoir._core.store.pins.Pin`, which it releases without taking the store's
lock: from any thread, and from a finalizer when nothing released it before.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from dask_reservoir._core.collate import private_rows
from dask_reservoir._core.store.entry import Entry, Row
from dask_reservoir._core.store.pins import Pin, SlotHolders
from dask_reservoir._core.store.table import SlotTable

__all__ = ["Snapshot"]


@dataclass(eq=False)
class Snapshot:
    """The entries of one epoch, frozen at ``iter()``, in source order.

    Until :meth:`release`, none of its entries' data is overwritten.  Taking one
    copies no entry: it shares the store's array of pool slots in source order
    (the store builds a new array when entries change, never writes into it).

    Attributes
    ----------
    handles : numpy.ndarray
        Pool slot of each entry, in source order (read-only).
    positions : numpy.ndarray
        Source position of each entry, ascending (read-only).
    table : SlotTable or None
        The store's table when the snapshot was taken.
    all_slotted : bool
        Whether every entry lives in a slot of the table (batches are then gathered
        with ``handles`` as table slots).
    holders : SlotHolders
        The store's slots, read through their pin API.
    pin : Pin
        The snapshot's pin on ``holders``, released by :meth:`release`.

    Examples
    --------
    >>> holders = SlotHolders(2)
    >>> handles = holders.claim(2)
    >>> holders.hold(handles, positions=np.array([0, 1]), uids=[0, 1], loaded_at=np.zeros(2),
    ...              rows=[({"x": 0},), ({"x": 1},)])
    >>> snap = Snapshot(handles, None, False, np.array([0, 1]), holders=holders, pin=holders.pin())
    >>> [e.uid for e in snap.entries], snap.rows_at(1), snap.slots.tolist()
    ([0, 1], ({'x': 1},), [-1, -1])
    >>> snap.add_served(np.array([0, 2]))
    >>> [e.times_served for e in snap.entries]
    [0, 2]
    >>> snap.release()
    >>> snap.pin.released
    True
    """

    handles: np.ndarray
    table: SlotTable | None
    all_slotted: bool
    positions: np.ndarray
    holders: SlotHolders = field(repr=False)
    pin: Pin = field(repr=False)

    def __post_init__(self) -> None:
        # released when collected, if nothing released it before (an owner interrupted
        # between taking it and handing it over, or while releasing it)
        weakref.finalize(self, self.pin.release).atexit = False

    def __len__(self) -> int:
        return len(self.handles)

    @property
    def arrays(self) -> dict[str, np.ndarray] | None:
        """The table's column arrays, or None."""
        return None if self.table is None else self.table.arrays

    @property
    def slots(self) -> np.ndarray:
        """Table slot of each entry, -1 for entries kept as rows."""
        handles = self.handles
        return handles if self.all_slotted else np.where(self.holders.in_table(handles), handles, -1)

    def entry(self, index: int) -> Entry:
        """A copy of entry ``index`` (in source order); its slot is pinned, so it is this snapshot's entry."""
        entry = self.holders.entry_at(int(self.handles[index]))
        if entry is None:  # pragma: no cover - a pinned slot always keeps its entry
            raise RuntimeError(f"snapshot entry {index} was released while the snapshot is live")
        return entry

    @property
    def entries(self) -> list[Entry]:
        """Copies of the entries, in source order (a new list; one object each: not for hot paths)."""
        return [self.entry(i) for i in range(len(self))]

    def add_served(self, counts: np.ndarray) -> None:
        """Add ``counts[i]`` to ``times_served`` of entry ``i`` (before :meth:`release`).

        Vectorized: the store keeps the counts per slot, and its slots are pinned.
        """
        served = np.flatnonzero(counts)
        self.holders.add_served(self.handles[served], self.positions[served], counts[served])

    def rows_at(self, index: int, *, copy: bool = True) -> tuple[Row, ...]:
        """The rows of entry ``index`` as they were at the snapshot.

        With ``copy`` (default), new dicts the caller may modify freely (see
        :func:`~dask_reservoir._core.collate.private_rows`).  Without, the stored data:
        read-only arrays and shared objects, to read only.
        """
        handle = int(self.handles[index])
        if self.table is not None and self.holders.slotted(handle):
            return (self.table.read_row(handle, copy=copy),)
        rows = self.holders.rows_at(handle)
        return tuple(private_rows(rows)) if copy else rows

    def release(self) -> None:
        """Stop reading: the slots only this snapshot pins may be reused.

        Idempotent, and safe from any thread (an iterator's finalizer calls it).  A
        snapshot nobody references any more is released too (whatever interrupted its
        owner: an exception, a ``KeyboardInterrupt``), so none is pinned forever.
        """
        self.pin.release()

"""The store's entries in source order, kept incrementally for epoch snapshots.

Pure code with no threads and no dask.  :class:`SourceOrder` maps each source
position to the entry stored for it and its pool slot, and keeps the sorted
positions with their slots as two read-only arrays that snapshots share.  It
notes the positions changed since the last :meth:`~SourceOrder.current`, so that
taking a snapshot costs time in the entries changed, not in the reservoir's size.
"""

from __future__ import annotations

import numpy as np

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.layout import read_only

__all__ = ["SourceOrder"]


class SourceOrder:
    """Source position -> stored entry and its slot; the sorted positions and slots a snapshot shares.

    Examples
    --------
    >>> order = SourceOrder()
    >>> for position, handle in [(7, 0), (2, 1), (5, 2)]:
    ...     order.add(Entry(position, position, ({"x": 1},), handle=handle))
    >>> positions, handles = order.current()
    >>> positions.tolist(), handles.tolist()
    ([2, 5, 7], [1, 2, 0])
    >>> order.remove(5), order.get(5), order.get(7).uid
    (2, None, 7)
    >>> order.current()[0].tolist(), positions.tolist()  # new arrays: the old ones stay as they were
    ([2, 7], [2, 5, 7])
    """

    def __init__(self) -> None:
        self._at_position: dict[int, Entry] = {}
        self._sorted = np.empty(0, np.int64)
        self._sorted_handles = read_only(np.empty(0, np.int64))  # shared with snapshots
        self._changed: set[int] = set()
        self._handle_at = np.full(16, -1, np.int64)  # position -> pool slot

    def get(self, position: int) -> Entry | None:
        """The entry stored for source ``position``, or None."""
        return self._at_position.get(position)

    def add(self, entry: Entry) -> None:
        """``entry`` is stored (in pool slot ``entry.handle``) for its source position."""
        position = entry.position
        self._at_position[position] = entry
        self._changed.add(position)
        if position >= len(self._handle_at):
            grown = np.full(max(position + 1, 2 * len(self._handle_at)), -1, np.int64)
            grown[: len(self._handle_at)] = self._handle_at
            self._handle_at = grown
        self._handle_at[position] = -1 if entry.handle is None else entry.handle

    def remove(self, position: int) -> int:
        """The entry of source ``position`` is removed; return the pool slot it held."""
        del self._at_position[position]
        self._changed.add(position)
        handle = int(self._handle_at[position])  # the order's record, whatever the entry says
        self._handle_at[position] = -1
        return handle

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored positions, ascending, and the pool slot of each (read-only, shared).

        Brought up to date with the changes since the last call, in new arrays: a live
        snapshot shares the previous ones.  Costs time in the entries changed (plus one
        vectorized copy of 8 bytes per entry when some changed).
        """
        changed = self._changed
        if changed:
            at = self._at_position
            current = self._sorted
            touched = np.sort(np.fromiter(changed, dtype=np.int64, count=len(changed)))
            where = np.searchsorted(current, touched)
            in_current = np.zeros(len(touched), dtype=bool)
            if len(current):
                in_current = (where < len(current)) & (
                    current[np.minimum(where, len(current) - 1)] == touched
                )
            present = np.fromiter((p in at for p in touched.tolist()), dtype=bool, count=len(touched))
            current = np.delete(current, where[in_current & ~present])
            new = touched[present & ~in_current]
            self._sorted = read_only(np.insert(current, np.searchsorted(current, new), new))
            self._sorted_handles = read_only(self._handle_at[self._sorted])
            changed.clear()
        return self._sorted, self._sorted_handles

    def clear(self) -> None:
        """Forget every position (after the store removed each entry)."""
        self._at_position.clear()
        self._sorted = np.empty(0, np.int64)
        self._sorted_handles = read_only(np.empty(0, np.int64))
        self._changed.clear()

    def __len__(self) -> int:
        return len(self._at_position)

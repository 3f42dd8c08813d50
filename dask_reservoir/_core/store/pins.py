"""Which entry holds each slot of the store, how often it was served, and the snapshots pinning them.

Pure code with no threads started and no dask.  :class:`SlotHolders` owns the store's
:class:`~dask_reservoir._core.store.slots.SlotPool`, its columnar
:class:`~dask_reservoir._core.store.table.SlotTable` and, per slot, the entry holding it,
whether its row lives in the table, and its serve count.  It has two sides:

- the store's, called with the store's lock held: :meth:`~SlotHolders.hold` a slot for
  a new entry, :meth:`~SlotHolders.let_go` of the slot of a removed one,
  :meth:`~SlotHolders.pin` the held slots for a snapshot and
  :meth:`~SlotHolders.apply_releases` of the snapshots released since (a freed slot
  drops what it references: its entry, the objects of its table row);
- the snapshot's (the *pin API*), which takes no store lock:
  :meth:`~SlotHolders.entry_at`, :meth:`~SlotHolders.slotted`,
  :meth:`~SlotHolders.in_table` and :meth:`~SlotHolders.add_served` read and count the
  pinned slots, and :meth:`Pin.release` queues the snapshot's release, once, from any
  thread (an iterator's finalizer), to be applied at the store's next call.

A pinned slot keeps its entry until the release is applied, so what a snapshot reads
never changes under it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

import numpy as np

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.slots import SlotPool
from dask_reservoir._core.store.table import SlotTable

__all__ = ["Pin", "SlotHolders"]

_NONE_FREED = np.empty(0, np.int64)
_NONE_FREED.flags.writeable = False


class Pin:
    """One snapshot's pin on the slots it reads: released once, from any thread, without a lock.

    Parameters
    ----------
    number : int
        The snapshot's number in the store's pool.
    released : collections.deque of int
        Where the numbers of released snapshots wait for the store.

    Examples
    --------
    >>> queue = deque()
    >>> pin = Pin(3, queue)
    >>> pin.release()
    >>> pin.release()  # idempotent
    >>> list(queue), pin.released
    ([3], True)
    """

    def __init__(self, number: int, released: deque[int]) -> None:
        self._number = [number]  # emptied, atomically, by the first release
        self._released = released

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return not self._number

    def release(self) -> None:
        """Queue the snapshot's number for release, once (the store applies it at its next call)."""
        try:
            value = self._number.pop()  # atomic: a second release finds the list empty
        except IndexError:
            return
        self._released.append(value)

    def __repr__(self) -> str:
        return f"<Pin: {'released' if self.released else f'snapshot {self._number[0]}'}>"


class SlotHolders:
    """The store's slots: the entry holding each, its serve count, and the snapshots that pin them.

    Parameters
    ----------
    size : int
        Number of slots (the store's ``capacity + headroom``); never grows.

    Attributes
    ----------
    size : int
        Number of slots.
    table : SlotTable or None
        The table of slotted rows, one row per slot (None until a row is slotted).
    kept_as_rows : int
        Held slots whose entry keeps its rows as dicts (not in the table).

    Examples
    --------
    >>> holders = SlotHolders(3)
    >>> a, b = Entry("a", 0, ()), Entry("b", 1, ({"x": 2},))
    >>> table = SlotTable.infer({"x": 1}, size=3)
    >>> slots = [holders.hold(a, table), holders.hold(b, None)]  # a's row goes in the table
    >>> holders.table is table, holders.kept_as_rows, holders.in_table(np.array(slots)).tolist()
    (True, 1, [True, False])
    >>> pin = holders.pin()  # a snapshot reads both
    >>> holders.let_go(slots[0])  # a is removed while pinned: its slot is retired
    False
    >>> holders.entry_at(slots[0]) is a, holders.retired
    (True, 1)
    >>> holders.add_served(np.array(slots), np.array([0, 1]), np.array([2, 1]))
    >>> a.times_served, b.times_served, holders.positions_served
    (2, 1, 2)
    >>> pin.release()
    >>> holders.apply_releases().tolist()  # the retired slot is free again
    [0]
    >>> holders.entry_at(slots[0]) is None, a.times_served, holders.live
    (True, 2, 0)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.table: SlotTable | None = None
        self.kept_as_rows = 0
        self._pool = SlotPool(size)
        self._in_table = np.zeros(size, bool)  # per slot: holds a table row
        self._entry_at: list[Entry | None] = [None] * size  # slot -> entry (or retired)
        self._served = np.zeros(size, np.int64)  # per slot: times its entry was served
        self._served_lock = threading.RLock()  # epochs may end in two threads at once
        self._ever_served = np.zeros(16, bool)  # per source position: some entry of it was served
        self._released: deque[int] = deque()  # numbers of released snapshots
        self._live = 0

    # ------------------------------------------------------------------ the store's side
    def available(self) -> int:
        """Slots :meth:`hold` can hand out now."""
        return self._pool.available()

    def next_slot(self) -> int:
        """The slot :meth:`hold` would hand out, without taking it."""
        return self._pool.next_slot()

    def hold(self, entry: Entry, table: SlotTable | None) -> int:
        """Give ``entry`` a slot, its row in ``table`` (then the table of every slot) or not; return the slot.

        The row is written into the table at :meth:`next_slot` by the caller.
        """
        handle = self._pool.claim()
        self._entry_at[handle] = entry
        entry.count_in(self._served, handle)
        if table is not None:
            self.table = table
            self._in_table[handle] = True
        else:
            self._in_table[handle] = False
            self.kept_as_rows += 1
        return handle

    def let_go(self, handle: int) -> bool:
        """The entry holding ``handle`` is removed; return whether the slot is free (else retired)."""
        if not self._in_table[handle]:
            self.kept_as_rows -= 1
        if not self._pool.release(handle):
            return False
        if self.table is not None and self._in_table[handle] and self.table.has_objects:
            self.table.forget(np.array([handle]))
        self._forget(handle)
        return True

    def pin(self) -> Pin:
        """A snapshot of the held slots starts: they stay as they are until its :class:`Pin` is released."""
        number = self._pool.open()
        self._live += 1
        return Pin(number, self._released)

    def apply_releases(self) -> np.ndarray:
        """Unpin the slots of the snapshots released since; return the slots this frees."""
        freed: list[np.ndarray] = []
        while True:
            try:
                number = self._released.popleft()
            except IndexError:
                break
            self._live -= 1
            slots = self._pool.close(number)
            if self.table is not None:
                self.table.forget(slots[self._in_table[slots]])
            for handle in slots.tolist():
                self._forget(handle)
            freed.append(slots)
        if not freed:
            return _NONE_FREED
        return freed[0] if len(freed) == 1 else np.concatenate(freed)

    def reset(self) -> None:
        """Free every slot, drop the table and start a new pool (when no snapshot is live and none is held)."""
        self.table = None
        self._pool = SlotPool(self.size)
        self._in_table[:] = False
        for handle in np.flatnonzero([e is not None for e in self._entry_at]).tolist():
            self._forget(handle)

    def pinned_held(self, newest_first: Iterable[Entry], count: int) -> int:
        """How many of the ``count`` held entries an open snapshot reads.

        All but those put since the newest snapshot opened; ``newest_first`` lists the
        entries from the newest, so counting takes time in the number put since.
        """
        newest = self._pool.newest_open
        if newest < 0:
            return 0
        added = self._pool.added
        newer = 0
        for entry in newest_first:
            if added[entry.handle] <= newest:
                break
            newer += 1
        return count - newer

    @property
    def live(self) -> int:
        """Snapshots pinned and not yet known released (see :meth:`apply_releases`)."""
        return self._live

    @property
    def retired(self) -> int:
        """Slots whose entry was removed while a live snapshot reads them."""
        return self._pool.retired

    @property
    def used(self) -> int:
        """Distinct slots ever handed out."""
        return self._pool.used

    @property
    def positions_served(self) -> int:
        """Distinct source positions some entry of which was ever served."""
        return int(np.count_nonzero(self._ever_served))

    def _forget(self, handle: int) -> None:
        """Slot ``handle`` is free again: drop its entry (which keeps its serve count from now on)."""
        entry = self._entry_at[handle]
        if entry is not None:
            entry.stop_counting(self._served, handle)
        self._entry_at[handle] = None

    # ------------------------------------------------------------------ the snapshot's side: the pin API
    def entry_at(self, handle: int) -> Entry | None:
        """The entry holding (or, retired, held) slot ``handle``; None when the slot is free."""
        return self._entry_at[handle]

    def slotted(self, handle: int) -> bool:
        """Whether the row of the entry in ``handle`` lives in the table."""
        return bool(self._in_table[handle])

    def in_table(self, handles: np.ndarray) -> np.ndarray:
        """Per slot of ``handles``: whether its entry's row lives in the table."""
        return self._in_table[handles]

    def add_served(self, handles: np.ndarray, positions: np.ndarray, counts: np.ndarray) -> None:
        """Add ``counts`` to the serve counts of pinned slots ``handles`` (source ``positions``).

        Vectorized, and safe from any thread (epochs may end in two at once).
        """
        with self._served_lock:
            self._served[handles] += counts
            self._note_served(positions)

    def _note_served(self, positions: np.ndarray) -> None:
        """Source ``positions`` had an entry in a batch (for coverage)."""
        if not len(positions):
            return
        top = int(positions.max())
        if top >= len(self._ever_served):
            grown = np.zeros(max(top + 1, 2 * len(self._ever_served)), bool)
            grown[: len(self._ever_served)] = self._ever_served
            self._ever_served = grown
        self._ever_served[positions] = True

    def __repr__(self) -> str:
        return (
            f"<SlotHolders: size={self.size} free={self.available()} retired={self.retired} "
            f"live_snapshots={self._live}>"
        )

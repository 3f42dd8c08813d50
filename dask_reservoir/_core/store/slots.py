"""Fixed slots for stored entries: a pool of slot numbers, pinned by epoch snapshots.

Pure code with no threads and no dask.

:class:`SlotPool` hands out slot numbers from a fixed range.  A slot is *free*,
*held* by an entry of the store, or *retired*: its entry was removed while a
live epoch snapshot still pinned it.  A snapshot pins exactly the slots of its
entries and unpins them when released; a retired slot becomes free as soon as
its last pin goes.  Freed slots are reused last-freed first; a never-used slot
is taken only when no freed one is left, so the slots ever written stay as few
as the workload allows.  The columns of slotted rows live in a
:class:`~dask_reservoir._core.store.table.SlotTable` of the pool's size.
"""

from __future__ import annotations

import bisect

import numpy as np

__all__ = ["SlotPool"]


class SlotPool:
    """A fixed range of slot numbers: free, held by an entry, or retired while pinned.

    Snapshots are numbered as they are opened.  A slot claimed after ``a``
    snapshots were opened and released after ``r`` were is read by exactly the
    snapshots numbered ``a .. r - 1``: releasing it retires it while one of those
    is open, and it becomes free when the last of them closes.  Opening a
    snapshot costs nothing per slot, so an epoch starts in time independent of
    the number of entries.

    Parameters
    ----------
    size : int
        Number of slots; never grows.

    Examples
    --------
    >>> pool = SlotPool(3)
    >>> a, b = pool.claim(), pool.claim()
    >>> snap = pool.open()  # a snapshot reads a and b
    >>> pool.release(a)  # its entry is removed: still read, so retired
    False
    >>> c = pool.claim()  # claimed after the snapshot: not read by it
    >>> pool.release(c)
    True
    >>> pool.available(), pool.retired
    (1, 1)
    >>> pool.close(snap).tolist()  # the snapshot is closed: a is free again
    [0]
    >>> pool.claim()  # freed slots are reused last-freed first
    0
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a slot pool needs at least one slot, got size={size}")
        self.size = size
        self.added = np.zeros(size, np.int64)  # snapshots opened before the slot was claimed
        self._removed = np.zeros(size, np.int64)  # ... before it was released (retired slots)
        self._retired: list[int] = []
        self._opened = 0  # snapshots opened so far: the next one's number
        self._live: list[int] = []  # numbers of open snapshots, ascending
        self._free: list[int] = []  # freed, unpinned: reused last-freed first
        self._fresh = 0  # slots >= this were never handed out

    @property
    def retired(self) -> int:
        """Slots whose entry was removed while an open snapshot reads them."""
        return len(self._retired)

    @property
    def used(self) -> int:
        """Distinct slots ever handed out."""
        return self._fresh

    @property
    def opened(self) -> int:
        """Snapshots opened so far (the number the next one gets)."""
        return self._opened

    @property
    def newest_open(self) -> int:
        """Number of the newest open snapshot, -1 when none is open."""
        return self._live[-1] if self._live else -1

    def available(self) -> int:
        """Slots :meth:`claim` can hand out now."""
        return len(self._free) + self.size - self._fresh

    def next_slot(self) -> int:
        """The slot :meth:`claim` would hand out, without taking it."""
        if self._free:
            return self._free[-1]
        if self._fresh < self.size:
            return self._fresh
        raise RuntimeError(f"all {self.size} slots are held or retired (pinned by live snapshots)")

    def claim(self) -> int:
        """Take a slot for a new entry (the one :meth:`next_slot` names)."""
        slot = self.next_slot()
        if self._free:
            self._free.pop()
        else:
            self._fresh += 1
        self.added[slot] = self._opened
        return slot

    def claim_many(self, count: int) -> np.ndarray:
        """Take ``count`` slots at once: the ones ``count`` calls of :meth:`claim` would take, in order.

        Examples
        --------
        >>> pool = SlotPool(4)
        >>> first = pool.claim_many(3)
        >>> pool.release_many(first[[2, 0]]).tolist(), pool.claim_many(3).tolist()  # last-freed first
        ([True, True], [0, 2, 3])
        """
        if count > self.available():
            raise RuntimeError(
                f"cannot claim {count} slots: {self.available()} of {self.size} are free "
                "(the others are held or retired, pinned by live snapshots)"
            )
        reused = min(count, len(self._free))
        slots = np.empty(count, np.int64)
        if reused:
            slots[:reused] = self._free[: -reused - 1 : -1]  # popped from the end, one after another
            del self._free[-reused:]
        slots[reused:] = np.arange(self._fresh, self._fresh + count - reused)
        self._fresh += count - reused
        self.added[slots] = self._opened
        return slots

    def release_many(self, slots: np.ndarray) -> np.ndarray:
        """:meth:`release` each of ``slots`` in order; per slot, whether it is free (else retired)."""
        slots = np.asarray(slots, dtype=np.int64)
        free = np.ones(len(slots), bool)
        if self._live and len(slots):  # read by an open snapshot numbered added .. opened - 1
            live = np.asarray(self._live, np.int64)
            at = np.searchsorted(live, self.added[slots])
            free = ~((at < len(live)) & (live[np.minimum(at, len(live) - 1)] < self._opened))
            retired = slots[~free]
            self._removed[retired] = self._opened
            self._retired.extend(retired.tolist())
        self._free.extend(slots[free].tolist())
        return free

    def _read_by_open(self, added: int, removed: int) -> bool:
        """Whether an open snapshot numbered in ``added .. removed - 1`` exists."""
        i = bisect.bisect_left(self._live, added)
        return i < len(self._live) and self._live[i] < removed

    def release(self, slot: int) -> bool:
        """The entry in ``slot`` is removed; return whether the slot is free (else retired)."""
        if self._read_by_open(int(self.added[slot]), self._opened):
            self._removed[slot] = self._opened
            self._retired.append(slot)
            return False
        self._free.append(slot)
        return True

    def open(self) -> int:
        """A snapshot of the held slots starts: return its number, for :meth:`close`."""
        number = self._opened
        self._opened += 1
        self._live.append(number)  # numbers only grow: the list stays sorted
        return number

    def close(self, number: int) -> np.ndarray:
        """Snapshot ``number`` is released; return the retired slots this frees."""
        i = bisect.bisect_left(self._live, number)
        if i == len(self._live) or self._live[i] != number:
            raise ValueError(f"snapshot {number} is not open (open: {self._live[:5]!r})")
        del self._live[i]
        if not self._retired:
            return np.empty(0, np.int64)
        retired = np.array(self._retired, np.int64)
        live = np.array(self._live, np.int64)
        at = np.searchsorted(live, self.added[retired])
        if len(live):
            still = (at < len(live)) & (live[np.minimum(at, len(live) - 1)] < self._removed[retired])
        else:
            still = np.zeros(len(retired), bool)
        freed = retired[~still]
        self._retired = retired[still].tolist()
        self._free.extend(freed.tolist())
        return freed

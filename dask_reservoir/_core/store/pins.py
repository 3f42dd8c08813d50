"""What each slot of the store holds, how often it was served, and the snapshots pinning them.

Pure code with no threads started and no dask.  :class:`SlotHolders` owns the store's
:class:`~dask_reservoir._core.store.slots.SlotPool`, its columnar
:class:`~dask_reservoir._core.store.table.SlotTable` and, per slot, in arrays: the source
position, UID, load time and serve count of the entry holding it, and whether its row
lives in the table (the rows of the others are kept by slot).  No Python object per
entry: claiming, recording and letting go of ``k`` slots are a few numpy operations.  It
has two sides:

- the store's, called with the store's lock held: :meth:`~SlotHolders.claim` slots,
  :meth:`~SlotHolders.hold` them for new entries, :meth:`~SlotHolders.let_go` of the
  slots of removed ones, :meth:`~SlotHolders.pin` the held slots for a snapshot and
  :meth:`~SlotHolders.apply_releases` of the snapshots released since (a freed slot
  drops what it references: its UID, its rows, the objects of its table row);
- the snapshot's (the *pin API*), which takes no store lock:
  :meth:`~SlotHolders.entry_at`, :meth:`~SlotHolders.rows_at`,
  :meth:`~SlotHolders.slotted`, :meth:`~SlotHolders.in_table` and
  :meth:`~SlotHolders.add_served` read and count the pinned slots, and
  :meth:`Pin.release` queues the snapshot's release, once, from any thread (an
  iterator's finalizer), to be applied at the store's next call.

A pinned slot keeps what it holds until the release is applied, so what a snapshot
reads never changes under it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Sequence

import numpy as np

from dask_reservoir._core.store.entry import Entry, Row
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
    >>> table = SlotTable.infer({"x": 1}, size=3)
    >>> a, b = holders.claim(2).tolist()
    >>> holders.hold(np.array([a]), positions=np.array([0]), uids=["a"], loaded_at=np.zeros(1), table=table)
    >>> holders.hold(np.array([b]), positions=np.array([1]), uids=["b"], loaded_at=np.zeros(1), rows=[({"x": 2},)])
    >>> holders.table is table, holders.kept_as_rows, holders.in_table(np.array([a, b])).tolist()
    (True, 1, [True, False])
    >>> pin = holders.pin()  # a snapshot reads both
    >>> holders.let_go(np.array([a])).tolist()  # a is removed while pinned: its slot is retired
    [False]
    >>> holders.entry_at(a).uid, holders.retired
    ('a', 1)
    >>> holders.add_served(np.array([a, b]), np.array([0, 1]), np.array([2, 1]))
    >>> holders.entry_at(a).times_served, holders.entry_at(b).times_served, holders.positions_served
    (2, 1, 2)
    >>> pin.release()
    >>> holders.apply_releases().tolist()  # the retired slot is free again
    [0]
    >>> holders.entry_at(a) is None, holders.live
    (True, 0)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.table: SlotTable | None = None
        self.kept_as_rows = 0
        self._pool = SlotPool(size)
        self._in_table = np.zeros(size, bool)  # per slot: holds a table row
        self._position = np.full(size, -1, np.int64)  # per slot: its entry's source position (-1: free)
        self._uid = np.empty(size, object)  # per slot: its entry's UID
        self._loaded_at = np.zeros(size)  # per slot: when its entry's job finished (monotonic)
        self._load_seconds = np.zeros(size)  # per slot: its entry's running time on the worker
        self._rows: dict[int, tuple[Row, ...]] = {}  # the rows of the slots not in the table
        self._served = np.zeros(size, np.int64)  # per slot: times its entry was served
        self.slot_nbytes = np.zeros(size, np.int64)  # per slot: bytes its entry's rows take (0: free)
        self.bytes_held = 0  # bytes of the slots held or retired
        self._served_lock = threading.RLock()  # epochs may end in two threads at once
        self._ever_served = np.zeros(16, bool)  # per source position: some entry of it was served
        self._released: deque[int] = deque()  # numbers of released snapshots
        self._live = 0

    # ------------------------------------------------------------------ the store's side
    def available(self) -> int:
        """Slots :meth:`claim` can hand out now."""
        return self._pool.available()

    def next_slot(self) -> int:
        """The slot :meth:`claim` would hand out first, without taking it."""
        return self._pool.next_slot()

    def claim(self, count: int) -> np.ndarray:
        """Take ``count`` slots for new entries (written by the caller, then :meth:`hold`)."""
        return self._pool.claim_many(count)

    def hold(
        self,
        slots: np.ndarray,
        *,
        positions: np.ndarray,
        uids: Sequence[Hashable] | np.ndarray,
        loaded_at: np.ndarray,
        load_seconds: np.ndarray | None = None,
        table: SlotTable | None = None,
        rows: Sequence[tuple[Row, ...]] | None = None,
        nbytes: np.ndarray | None = None,
    ) -> None:
        """Record the new entries holding ``slots`` (claimed).

        Their rows live in ``table`` (from now on the table of every slot), or are kept
        as ``rows`` (one tuple per slot); ``nbytes``: the bytes each takes (default 0).
        """
        count = len(slots)
        if nbytes is not None:
            self.slot_nbytes[slots] = nbytes
            self.bytes_held += int(self.slot_nbytes[slots].sum())
        self._position[slots] = positions
        self._uid[slots] = uids if isinstance(uids, np.ndarray) else np.fromiter(uids, object, count=count)
        self._loaded_at[slots] = loaded_at
        self._load_seconds[slots] = 0.0 if load_seconds is None else load_seconds
        self._served[slots] = 0
        if rows is None:
            self.table = table
            self._in_table[slots] = True
        else:
            self._in_table[slots] = False
            self._rows.update(zip(slots.tolist(), rows, strict=True))
            self.kept_as_rows += count

    def set_served(self, slot: int, count: int) -> None:
        """Start the serve count of the entry in ``slot`` at ``count`` (an entry put again)."""
        self._served[slot] = count

    def let_go(self, slots: np.ndarray) -> np.ndarray:
        """The entries holding ``slots`` are removed; per slot, whether it is free (else retired)."""
        slots = np.asarray(slots, dtype=np.int64)
        if not len(slots):
            return np.zeros(0, bool)
        self.kept_as_rows -= int(np.count_nonzero(~self._in_table[slots]))
        free = self._pool.release_many(slots)
        freed = slots[free]
        if len(freed):
            if self.table is not None and self.table.has_objects:
                self.table.forget(freed[self._in_table[freed]])
            self._forget(freed)
        return free

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
            self._forget(slots)
            freed.append(slots)
        if not freed:
            return _NONE_FREED
        return freed[0] if len(freed) == 1 else np.concatenate(freed)

    def reset(self) -> None:
        """Free every slot, drop the table and start a new pool (when no snapshot is live and none is held)."""
        self.table = None
        self._pool = SlotPool(self.size)
        self._in_table[:] = False
        self._forget(np.flatnonzero(self._position >= 0))

    @property
    def opened(self) -> int:
        """Snapshots opened so far (the number the next one gets)."""
        return self._pool.opened

    @property
    def newest_open(self) -> int:
        """Number of the newest open snapshot, -1 when none is open."""
        return self._pool.newest_open

    def _forget(self, slots: np.ndarray) -> None:
        """``slots`` are free again: drop what they reference."""
        self.bytes_held -= int(self.slot_nbytes[slots].sum())
        self.slot_nbytes[slots] = 0
        self._position[slots] = -1
        self._uid[slots] = None
        if self._rows:
            for slot in slots.tolist():
                self._rows.pop(slot, None)

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

    # ------------------------------------------------------------------ per slot, in arrays
    def uids_at(self, slots: np.ndarray) -> list[Hashable]:
        """The UIDs of the entries holding ``slots``."""
        return list(self._uid[slots].tolist()) if len(slots) else []

    def loaded_at(self, slots: np.ndarray) -> np.ndarray:
        """When the entries holding ``slots`` finished loading (``time.monotonic()``)."""
        return self._loaded_at[slots]

    def served(self, slots: np.ndarray) -> np.ndarray:
        """How many times the entries holding ``slots`` were served."""
        return self._served[slots]

    # ------------------------------------------------------------------ the snapshot's side: the pin API
    def entry_at(self, handle: int) -> Entry | None:
        """A copy of the entry holding (or, retired, held) slot ``handle``; None when the slot is free."""
        position = int(self._position[handle])
        if position < 0:
            return None
        slotted = bool(self._in_table[handle])
        return Entry(
            self._uid[handle],
            position,
            () if slotted else self._rows[handle],
            float(self._loaded_at[handle]),
            float(self._load_seconds[handle]),
            slot=handle if slotted else None,
            handle=handle,
            times_served=int(self._served[handle]),
        )

    def rows_at(self, handle: int) -> tuple[Row, ...]:
        """The stored rows of the entry in ``handle`` (not in the table): read them, do not change them."""
        return self._rows[handle]

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

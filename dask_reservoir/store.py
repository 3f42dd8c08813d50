"""The reservoir store: a bounded, UID-keyed, oldest-first collection of entries.

Pure synchronous code with no threads started and no dask.  An
:class:`Entry` holds the rows produced for one UID; putting an entry whose
UID is present replaces the old one (and makes it the newest); beyond
``capacity`` entries the oldest are evicted.  Single-row entries whose
columns have fixed shapes and dtypes are kept in a columnar
:class:`~dask_reservoir.slots.SlotTable`, so that a batch is gathered with one
``numpy.take`` per column; other entries keep their rows as dicts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .slots import SlotTable

__all__ = ["Entry", "ReservoirStore", "Snapshot"]

Row = dict[str, Any]

SLOT_HEADROOM = 64
"""Slots allocated beyond the capacity, so that a replacement need not grow the table."""


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
        the row lives in a slot of the store's table.
    loaded_at : float
        ``time.monotonic()`` when the job finished on the client side.
    load_seconds : float
        Running time of ``function_to_run`` on the worker.
    times_served : int
        How many times the entry was put in a batch (counted when each epoch ends).
    slot : int or None
        Slot of the store's :class:`SlotTable` holding the row, if any.
    """

    uid: Hashable
    position: int
    rows: tuple[Row, ...]
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    times_served: int = 0
    slot: int | None = None


@dataclass(eq=False)
class Snapshot:
    """The entries of one epoch, frozen at ``iter()``, in source order.

    Attributes
    ----------
    entries : list of Entry
        In source order.
    slots : numpy.ndarray
        Slot of each entry, -1 for entries kept as rows.
    arrays : dict of str to numpy.ndarray, or None
        The table's column arrays when the snapshot was taken.
    all_slotted : bool
        Whether every entry lives in a slot (batches are then gathered).
    generation : int
        Number of the snapshot, used to keep its slots from being reused.
    """

    entries: list[Entry]
    slots: np.ndarray
    arrays: dict[str, np.ndarray] | None
    table: SlotTable | None
    all_slotted: bool
    generation: int
    store: ReservoirStore

    def rows_at(self, index: int) -> tuple[Row, ...]:
        """The rows of entry ``index`` as they were at the snapshot (copies of slotted rows)."""
        slot = int(self.slots[index])
        if slot < 0 or self.arrays is None or self.table is None:
            return self.entries[index].rows
        return (self.table.read_row(slot, self.arrays),)

    def release(self) -> None:
        """Stop reading: the snapshot's freed slots may be reused (idempotent)."""
        self.store._release(self.generation)


class ReservoirStore:
    """A bounded mapping UID -> :class:`Entry`, ordered from oldest to newest.

    Parameters
    ----------
    capacity : int
        Maximum number of entries; putting more evicts the oldest.
    columnar : bool, keyword-only
        Keep fixed-shape single-row entries in a columnar slot table.

    Examples
    --------
    >>> store = ReservoirStore(2)
    >>> for position, uid in enumerate(["a", "b", "c"]):
    ...     evicted = store.put(Entry(uid, position=position, rows=({"x": 1},)))
    >>> store.uids()
    ['b', 'c']
    >>> store.put(Entry("b", position=1, rows=({"x": 2},)))  # replaces "b", now the newest
    []
    >>> store.uids(), store.evicted, store.replaced
    (['c', 'b'], 1, 1)
    >>> store.rows_of(store.get("b"))
    ({'x': 2},)
    """

    def __init__(self, capacity: int, *, columnar: bool = True) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__}: {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._columnar = columnar
        self.table: SlotTable | None = None
        self._generation = 0
        self._live: dict[int, int] = {}
        self._live_lock = threading.RLock()  # releases may come from a finalizer in any thread
        self.ingested = 0
        self.evicted = 0
        self.replaced = 0
        # source order, kept incrementally: sorted positions plus changes since the last snapshot
        self._at_position: dict[int, Entry] = {}
        self._sorted = np.empty(0, np.int64)
        self._sorted_entries: list[Entry] = []
        self._changed: set[int] = set()
        self._slot_at = np.full(16, -1, np.int64)  # position -> slot (-1: kept as rows)

    def put(self, entry: Entry) -> list[Entry]:
        """Insert ``entry`` as the newest; return the entries evicted to make room.

        An entry with no rows is ignored: an empty result means "nothing new for
        this UID" and any older entry of the UID stays.
        """
        if not entry.rows:
            return []
        present = self._at_position.get(entry.position)
        if present is not None and present.uid != entry.uid:
            raise ValueError(
                f"entry positions must be unique: position {entry.position} holds UID {present.uid!r}, "
                f"got UID {entry.uid!r}"
            )
        self.ingested += 1
        old = self._entries.pop(entry.uid, None)
        if old is not None:
            self.replaced += 1
            self._remove(old)
        evicted: list[Entry] = []
        while len(self._entries) >= self.capacity:
            _, oldest = self._entries.popitem(last=False)
            self._remove(oldest)
            evicted.append(oldest)
        self._place(entry)
        self._entries[entry.uid] = entry
        self._at_position[entry.position] = entry
        self._changed.add(entry.position)
        if entry.position >= len(self._slot_at):
            grown = np.full(max(entry.position + 1, 2 * len(self._slot_at)), -1, np.int64)
            grown[: len(self._slot_at)] = self._slot_at
            self._slot_at = grown
        self._slot_at[entry.position] = -1 if entry.slot is None else entry.slot
        self.evicted += len(evicted)
        return evicted

    def _remove(self, entry: Entry) -> None:
        self._free(entry)
        del self._at_position[entry.position]
        self._changed.add(entry.position)

    def _place(self, entry: Entry) -> None:
        if not self._columnar or len(entry.rows) != 1:
            return
        row = entry.rows[0]
        if self.table is None:
            self.table = SlotTable.infer(row, self.capacity + SLOT_HEADROOM)
            if self.table is None:
                self._columnar = False
                return
        if self.table.fits(row):
            with self._live_lock:
                oldest_live = min(self._live) if self._live else None
            entry.slot = self.table.write(row, oldest_live=oldest_live)
            entry.rows = ()

    def _free(self, entry: Entry) -> None:
        if entry.slot is not None and self.table is not None:
            self.table.release(entry.slot)  # snapshots read it through their own slot array
            entry.slot = None

    def rows_of(self, entry: Entry) -> tuple[Row, ...]:
        """The rows of ``entry`` (copies when they live in a slot)."""
        if entry.slot is not None and self.table is not None:
            return (self.table.read_row(entry.slot),)
        return entry.rows

    def get(self, uid: Hashable) -> Entry | None:
        """The entry of ``uid``, or None."""
        return self._entries.get(uid)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        return list(self._entries)

    def snapshot(self) -> Snapshot:
        """The entries in source order (by ``position``), frozen for an epoch.

        Call :meth:`Snapshot.release` when done reading it; until then, slots it
        reads are not overwritten.
        """
        self._refresh_order()
        positions = self._sorted
        entries = list(self._sorted_entries)
        n = len(entries)
        slots = self._slot_at[positions]
        slotted = slots[slots >= 0]
        with self._live_lock:
            generation = self._generation
            self._generation += 1
            self._live[generation] = self._live.get(generation, 0) + 1
        if self.table is not None and len(slotted):
            self.table.mark_read(slotted, generation)
        return Snapshot(
            entries=entries,
            slots=slots,
            arrays=self.table.arrays if self.table is not None else None,
            table=self.table,
            all_slotted=n > 0 and len(slotted) == n,
            generation=generation,
            store=self,
        )

    def _refresh_order(self) -> None:
        """Bring the source-ordered positions and entries up to date with the changes."""
        changed = self._changed
        if not changed:
            return
        at = self._at_position
        if len(changed) > max(8, len(at) // 64):
            self._sorted = np.sort(np.fromiter(at, dtype=np.int64, count=len(at)))
            self._sorted_entries = [at[p] for p in self._sorted.tolist()]
            changed.clear()
            return
        current, entries = self._sorted, self._sorted_entries
        touched = np.sort(np.fromiter(changed, dtype=np.int64, count=len(changed)))
        where = np.searchsorted(current, touched)
        in_current = np.zeros(len(touched), dtype=bool)
        if len(current):
            in_current = (where < len(current)) & (current[np.minimum(where, len(current) - 1)] == touched)
        present = np.fromiter((p in at for p in touched.tolist()), dtype=bool, count=len(touched))
        for i, p in zip(
            where[in_current & present].tolist(), touched[in_current & present].tolist(), strict=True
        ):
            entries[i] = at[p]  # replaced: same position, fresh entry
        gone = where[in_current & ~present]
        for i in sorted(gone.tolist(), reverse=True):
            del entries[i]
        current = np.delete(current, gone)
        new = touched[present & ~in_current]
        slots = np.searchsorted(current, new)
        for k, (i, p) in enumerate(zip(slots.tolist(), new.tolist(), strict=True)):
            entries.insert(i + k, at[p])
        self._sorted = np.insert(current, slots, new)
        changed.clear()

    def _release(self, generation: int) -> None:
        with self._live_lock:
            count = self._live.get(generation)
            if count is None:
                return
            if count <= 1:
                del self._live[generation]
            else:
                self._live[generation] = count - 1

    @property
    def live_snapshots(self) -> int:
        """Snapshots taken and not released."""
        with self._live_lock:
            return sum(self._live.values())

    def clear(self) -> None:
        """Drop every entry and the slot table (counters are kept)."""
        self._entries.clear()
        self._at_position.clear()
        self._sorted = np.empty(0, np.int64)
        self._sorted_entries = []
        self._changed.clear()
        self.table = None

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __repr__(self) -> str:
        return (
            f"<ReservoirStore: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )

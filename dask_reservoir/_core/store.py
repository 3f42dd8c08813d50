"""The reservoir store: a bounded, UID-keyed, oldest-first collection of entries.

Pure synchronous code with no threads started and no dask.  An
:class:`Entry` holds the rows produced for one UID; putting an entry whose
UID is present replaces the old one (and makes it the newest); beyond
``capacity`` entries the oldest are evicted.  Single-row entries whose
columns have fixed shapes and dtypes are kept in a columnar
:class:`~dask_reservoir._core.slots.SlotTable`, so that a batch is gathered with one
``numpy.take`` per column; other entries keep their rows as dicts, with their
arrays made read-only.

Memory bound
------------
Every entry, slotted or kept as rows, holds one slot of a fixed
:class:`~dask_reservoir._core.slots.SlotPool` of ``capacity + headroom`` slots,
``headroom = ceil(capacity / 2)``; the table's arrays have that many rows,
allocated once (rows never written cost no resident memory).  An epoch
:class:`Snapshot` pins exactly the slots of its entries until released; an
entry removed meanwhile is *retired* and keeps its slot until its last pin
goes.  So:

- with no live snapshot, a full reservoir writes at most ``capacity + 1``
  distinct slots (a put writes the new entry before evicting, and freed slots
  are reused last-freed first);
- with live snapshots, at most ``capacity + headroom`` (about 1.5 x a full
  reservoir).  When every slot is held or retired, :meth:`ReservoirStore.room`
  is 0 and :meth:`ReservoirStore.put` raises :class:`NoRoomError`: a held
  iterator throttles refreshing instead of growing memory.

Stored data never changes under a reader: batches and rows handed to a
``collate_fn`` are copies (see :class:`~dask_reservoir._runtime.batches.BatchIterator`).
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import BlockRow
from dask_reservoir._core.collate import dtype_family, is_immutable, private_rows
from dask_reservoir._core.slots import SlotPool, SlotTable, StoreError

__all__ = ["UNLIMITED_ROOM", "Entry", "NoRoomError", "ReservoirStore", "Snapshot", "StoreError"]

Row = dict[str, Any]

UNLIMITED_ROOM = sys.maxsize
"""What :meth:`ReservoirStore.room` returns when no put can fail before the next snapshot."""


class NoRoomError(RuntimeError):
    """``put()`` found every slot held by an entry or retired (pinned by a live snapshot)."""


def headroom(capacity: int) -> int:
    """Slots beyond ``capacity`` for entries removed while a live snapshot reads them.

    Examples
    --------
    >>> headroom(1), headroom(4), headroom(5)
    (1, 2, 3)
    """
    return math.ceil(capacity / 2)


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
        Slot of the store's :class:`SlotTable` holding the row, if any.
    handle : int or None
        Slot of the store's pool the entry holds (equal to ``slot`` when slotted).
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
    """

    handles: np.ndarray
    table: SlotTable | None
    all_slotted: bool
    positions: np.ndarray
    _number: list[int] = field(repr=False)  # emptied, atomically, by the first release
    _store: ReservoirStore = field(repr=False)

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
        return handles if self.all_slotted else np.where(self._store._in_table[handles], handles, -1)

    def entry(self, index: int) -> Entry:
        """Entry ``index`` (in source order); its slot is pinned, so it is this snapshot's entry."""
        entry = self._store._entry_at[int(self.handles[index])]
        if entry is None:  # pragma: no cover - a pinned slot always keeps its entry
            raise RuntimeError(f"snapshot entry {index} was released while the snapshot is live")
        return entry

    @property
    def entries(self) -> list[Entry]:
        """The entries, in source order (a new list)."""
        return [self.entry(i) for i in range(len(self))]

    def add_served(self, counts: np.ndarray) -> None:
        """Add ``counts[i]`` to ``times_served`` of entry ``i`` (before :meth:`release`).

        Vectorized: the store keeps the counts per slot, and its slots are pinned.
        """
        served = np.flatnonzero(counts)
        store = self._store
        with store._served_lock:
            store._served[self.handles[served]] += counts[served]
            store._note_served(self.positions[served])

    def rows_at(self, index: int, *, copy: bool = True) -> tuple[Row, ...]:
        """The rows of entry ``index`` as they were at the snapshot.

        With ``copy`` (default), new dicts the caller may modify freely (see
        :func:`~dask_reservoir._core.collate.private_rows`).  Without, the stored data:
        read-only arrays and shared objects, to read only.
        """
        handle = int(self.handles[index])
        if self.table is not None and self._store._in_table[handle]:
            return (self.table.read_row(handle, copy=copy),)
        rows = self.entry(index).rows
        return tuple(private_rows(rows)) if copy else rows

    def release(self) -> None:
        """Stop reading: the slots only this snapshot pins may be reused.

        Idempotent, and safe from any thread (an iterator's finalizer calls it).  A
        snapshot nobody references any more is released too (whatever interrupted its
        owner: an exception, a ``KeyboardInterrupt``), so none is pinned forever.
        """
        _release_number(self._number, self._store._released)


def _release_number(number: list[int], released: deque[int]) -> None:
    """Queue snapshot ``number[0]`` for release, once (the store applies it at its next call)."""
    try:
        value = number.pop()  # atomic: a second release finds the list empty
    except IndexError:
        return
    released.append(value)


def _check_servable(uid: Hashable, column: str, value: object) -> None:
    """Refuse a value a batch could not be built from without sharing or breaking it.

    Mutable objects are deep-copied into every batch (so users cannot change what is
    stored): one that cannot be deep-copied (a lock, a file handle) is refused here,
    once, rather than failing every epoch.  ``numpy.matrix`` cannot be stacked along a
    new axis (it stays 2-D).
    """
    if isinstance(value, np.matrix):
        raise StoreError(
            f"column {column!r} holds a numpy.matrix for UID {uid!r}, which cannot be stacked into a "
            "batch; return an ndarray (numpy.asarray)",
            uid=uid,
            column=column,
            dtype="numpy.matrix",
        )
    if is_immutable(value) or (type(value) is np.ndarray and value.dtype != object):
        return
    try:
        copy.deepcopy(value)
    except Exception as exc:
        raise StoreError(
            f"column {column!r} holds a {type(value).__name__} for UID {uid!r} that cannot be "
            f"deep-copied ({type(exc).__name__}: {exc}); batches copy mutable values so that "
            "users cannot change what is stored: return plain data instead (numbers, str, "
            "arrays, or objects that can be copied)",
            uid=uid,
            column=column,
            dtype=type(value).__name__,
        ) from exc


class ReservoirStore:
    """A bounded mapping UID -> :class:`Entry`, ordered from oldest to newest.

    Parameters
    ----------
    capacity : int
        Maximum number of entries; putting more evicts the oldest.
    columnar : bool, keyword-only
        Keep fixed-shape single-row entries in a columnar slot table.
    uid_column : str, keyword-only
        The column of each row holding its entry's UID.
    uid_type : type, optional, keyword-only
        The numpy scalar type UIDs are stored as in ``uid_column`` (see
        :attr:`~dask_reservoir._core.uid_index.UidIndex.stored_type`); None: as given.
    stackable : bool, keyword-only
        Refuse (``StoreError``) a row that the default collate could not stack with
        the stored ones: other columns, an array of another shape, an array where
        the others hold scalars or the reverse.  The first entry put in an empty
        store sets each column's shape (see :meth:`put`).

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

    def __init__(
        self,
        capacity: int,
        *,
        columnar: bool = True,
        uid_column: str = "sample_uid",
        uid_type: Callable[[Any], Any] | None = None,
        stackable: bool = False,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__}: {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.pool_size = capacity + headroom(capacity)
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._columnar = columnar
        self._uid_column = uid_column
        self._uid_type = uid_type
        self._stackable = stackable
        self._layout: Layout | None = None  # stackable: what every stored row looks like (None: empty)
        self.table: SlotTable | None = None
        self._pool = SlotPool(self.pool_size)
        self._in_table = np.zeros(self.pool_size, bool)  # per pool slot: holds a table row
        self._lock = threading.RLock()  # never taken by Snapshot.release (finalizers)
        self._released: deque[int] = deque()  # numbers of released snapshots
        self._live = 0
        self._entry_at: list[Entry | None] = [None] * self.pool_size  # pool slot -> entry (or retired)
        self._served = np.zeros(self.pool_size, np.int64)  # per pool slot: times its entry was served
        self._ever_served = np.zeros(16, bool)  # per source position: some entry of it was served
        self._served_lock = threading.RLock()  # epochs may end in two threads at once
        self._kept_as_rows = 0  # entries not in the table
        self._warned: set[str] = set()  # columns whose change was reported
        self.ingested = 0
        self.evicted = 0
        self.replaced = 0
        # source order, kept incrementally: sorted positions plus changes since the last snapshot
        self._at_position: dict[int, Entry] = {}
        self._sorted = np.empty(0, np.int64)
        self._sorted_handles = _read_only(np.empty(0, np.int64))  # shared with snapshots
        self._changed: set[int] = set()
        self._handle_at = np.full(16, -1, np.int64)  # position -> pool slot

    # ------------------------------------------------------------------ putting
    def put(self, entry: Entry) -> list[Entry]:
        """Insert ``entry`` as the newest; return the entries evicted to make room.

        An entry with no rows is ignored: an empty result means "nothing new for
        this UID" and any older entry of the UID stays.  Atomic: when it raises,
        the store is as before.

        Raises
        ------
        NoRoomError
            When :meth:`room` is 0.
        StoreError
            When a row is not a dict or a value cannot be stored (names the UID,
            column and dtype); with ``stackable``, when a row has other columns, or an
            array of another shape, than the stored rows (unless this put removes
            every other entry: an empty store takes any row).
        ValueError
            When another UID holds ``entry.position``.

        Warns
        -----
        UserWarning
            Once per column, when a single-row entry changes the dtype or shape of a
            column (it is then kept as rows and collated per batch).
        """
        if not entry.rows:
            return []
        if any(type(row) is BlockRow for row in entry.rows):
            entry.rows = tuple(row.as_dict() if type(row) is BlockRow else row for row in entry.rows)
        for i, row in enumerate(entry.rows):
            if not isinstance(row, dict):
                raise StoreError(
                    f"each row of an entry must be a dict, got {type(row).__name__} at index {i} for UID "
                    f"{entry.uid!r}",
                    uid=entry.uid,
                )
            for column, value in row.items():
                _check_servable(entry.uid, column, value)
        if self._uid_type is not None:
            entry.rows = tuple(self._typed_uid(row) for row in entry.rows)
        with self._lock:
            self._apply_releases()
            layout = self._check_stackable(entry) if self._stackable else None
            if self._entries.get(entry.uid) is entry:  # put again: store it as a new entry
                entry = replace(entry, slot=None, handle=None)
            present = self._at_position.get(entry.position)
            if present is not None and present.uid != entry.uid:
                raise ValueError(
                    f"entry positions must be unique: position {entry.position} holds UID {present.uid!r}, "
                    f"got UID {entry.uid!r}"
                )
            if self._pool.available() == 0:
                raise NoRoomError(self._no_room_message(entry))
            slot = self._pool.next_slot()
            table = self._table_for(entry)  # may warn: nothing is changed yet
            if table is not None:
                try:
                    table.write(slot, entry.rows[0])
                except StoreError as exc:
                    exc.uid = entry.uid
                    exc.args = (f"{exc.args[0]} for UID {entry.uid!r}",)
                    raise
            self._commit(entry, table)
            evicted = self._make_room(entry)
            if layout is not None:
                self._layout = layout
            return evicted

    def _typed_uid(self, row: Row) -> Row:
        """``row`` with its UID column as ``uid_type`` (a new dict; the row itself is the caller's)."""
        uid = row.get(self._uid_column)
        if uid is None or self._uid_type is None:
            return row
        return {**row, self._uid_column: self._uid_type(uid)}

    def _check_stackable(self, entry: Entry) -> Layout | None:
        """Raise ``StoreError`` when a row of ``entry`` would not stack with the stored rows.

        Returns the layout the store takes when this put leaves no other entry (None:
        it keeps its own).  Called with the lock held, before anything changes.
        """
        others = len(self._entries) - (entry.uid in self._entries)
        layout = None if min(others, self.capacity - 1) > 0 else layout_of(entry.rows[0])
        expected = self._layout if layout is None else layout
        for row in entry.rows:
            found = layout_of(row)
            if found != expected:
                raise _unstackable(entry, found, cast(Layout, expected), self._uid_column, self._holder())
        return layout

    def _holder(self) -> Hashable:
        """A UID whose rows set the layout (the newest entry), for messages."""
        return next(reversed(self._entries)) if self._entries else None

    def put_many(self, entries: list[Entry]) -> list[tuple[Entry, StoreError]]:
        """:meth:`put` each entry in order; return those that could not be stored, with why.

        Entries of a vectorized job whose one row each lives in the same
        :class:`~dask_reservoir._worker.chunks.ColumnBlock` are written to the table with
        one assignment per column (at most ``capacity`` at a time, so that none
        evicts another of the same write).  :class:`NoRoomError` and ``ValueError``
        propagate as from :meth:`put`.
        """
        rejected: list[tuple[Entry, StoreError]] = []
        i, n = 0, len(entries)
        while i < n:
            block = _single_block(entries[i])
            j = i + 1
            if block is not None:
                while j < n and j - i < self.capacity and _single_block(entries[j]) is block:
                    j += 1
                if self._put_block(entries[i:j], block):
                    i = j
                    continue
                j = i + 1
            for entry in entries[i:j]:
                try:
                    self.put(entry)
                except StoreError as exc:
                    rejected.append((entry, exc))
            i = j
        return rejected

    def _put_block(self, entries: list[Entry], block: Any) -> bool:
        """Put entries whose row ``k`` is row ``entries[k].rows[0].at`` of ``block``; False: not here."""
        if not self._columnar:
            return False
        uid_values = block.columns.get(self._uid_column)
        if self._uid_type is not None and uid_values is not None:
            wanted = np.dtype(cast(Any, self._uid_type))
            if uid_values.dtype != wanted:  # the chunk's UIDs, checked equal to the source's
                block.columns[self._uid_column] = uid_values.astype(wanted)
        schema = SlotTable.block_columns(block.columns)
        if schema is None:
            return False
        rows = np.fromiter((cast(BlockRow, e.rows[0]).at for e in entries), np.intp, count=len(entries))
        layout: Layout = {}
        for name, values in block.columns.items():
            layout[name] = (
                (values.shape[1:], dtype_family(values.dtype))
                if values.ndim > 1 and values.dtype != object
                else None
            )
            if values.dtype == object:
                try:
                    for entry, value in zip(entries, values[rows].tolist(), strict=True):
                        _check_servable(entry.uid, name, value)
                        if self._stackable and isinstance(value, np.ndarray):
                            return False  # put() one by one: it checks each array's shape
                except StoreError:
                    return False  # put() one by one: only the entries that cannot be stored fail
        with self._lock:
            self._apply_releases()
            table = self.table
            if table is None:
                table = SlotTable(schema, self.pool_size)
            elif table.columns != schema:
                return False  # put() one by one: it warns about the change
            if self._stackable and self._layout not in (None, layout):
                return False  # put() one by one: it refuses the rows that would not stack
            if self.room() < len(entries):
                return False  # put() one by one: it raises NoRoomError where room runs out
            for entry in entries:
                present = self._at_position.get(entry.position)
                if present is not None and present.uid != entry.uid:
                    raise ValueError(
                        f"entry positions must be unique: position {entry.position} holds UID "
                        f"{present.uid!r}, got UID {entry.uid!r}"
                    )
            handles = np.empty(len(entries), np.intp)
            for k, entry in enumerate(entries):
                self._commit(entry, table)
                handles[k] = cast(int, entry.handle)
                self._make_room(entry)
            table.write_many(handles, block.columns, rows)
            if self._stackable and self._layout is None:
                self._layout = layout
            return True

    def _table_for(self, entry: Entry) -> SlotTable | None:
        """The table the entry's row goes in (a new one for the first row), or None."""
        if not self._columnar or len(entry.rows) != 1:
            return None
        row = entry.rows[0]
        if self.table is None:
            return SlotTable.infer(row, self.pool_size)
        if self.table.fits(row):
            return self.table
        for change in self.table.changes(row):
            column, old, new = change
            if column not in self._warned:
                self._warned.add(column)
                warnings.warn(
                    f"column {column!r} changed from {old} to {new} at UID {entry.uid!r}: entries unlike "
                    "the first stored row are kept as rows and collated per batch (slower), and batches "
                    "mixing them change dtype or fail to stack; return one dtype and shape per column "
                    "(warned once per column: later changes of this column are not reported)",
                    UserWarning,
                    stacklevel=3,
                )
        return None

    def _commit(self, entry: Entry, table: SlotTable | None) -> None:
        handle = self._pool.claim()
        entry.handle = handle
        self._entry_at[handle] = entry
        self._served[handle] = entry.times_served
        entry._counts, entry._count_at = self._served, handle
        if table is not None:
            self.table = table
            entry.slot = handle
            entry.rows = ()
            self._in_table[handle] = True
        else:
            entry.slot = None
            entry.rows = tuple(_frozen(row) for row in entry.rows)
            self._in_table[handle] = False
            self._kept_as_rows += 1

    def _make_room(self, entry: Entry) -> list[Entry]:
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
        self._entries[entry.uid] = entry
        self._at_position[entry.position] = entry
        self._changed.add(entry.position)
        if entry.position >= len(self._handle_at):
            grown = np.full(max(entry.position + 1, 2 * len(self._handle_at)), -1, np.int64)
            grown[: len(self._handle_at)] = self._handle_at
            self._handle_at = grown
        self._handle_at[entry.position] = -1 if entry.handle is None else entry.handle
        self.evicted += len(evicted)
        return evicted

    def _remove(self, entry: Entry) -> None:
        position = entry.position
        del self._at_position[position]
        self._changed.add(position)
        handle = int(self._handle_at[position])  # the store's record, whatever the entry says
        self._handle_at[position] = -1
        if not self._in_table[handle]:
            self._kept_as_rows -= 1
        if self._pool.release(handle):
            self._freed_one(handle)
        entry.slot = entry.handle = None

    def _note_served(self, positions: np.ndarray) -> None:
        """Source ``positions`` had an entry in a batch (vectorized; for coverage)."""
        if not len(positions):
            return
        top = int(positions.max())
        if top >= len(self._ever_served):
            grown = np.zeros(max(top + 1, 2 * len(self._ever_served)), bool)
            grown[: len(self._ever_served)] = self._ever_served
            self._ever_served = grown
        self._ever_served[positions] = True

    @property
    def positions_served(self) -> int:
        """Distinct source positions some entry of which was ever put in a batch."""
        return int(np.count_nonzero(self._ever_served))

    def _freed_one(self, handle: int) -> None:
        """:meth:`_freed` of one slot, without building arrays (each eviction calls it)."""
        if self.table is not None and self._in_table[handle] and self.table.has_objects:
            self.table.forget(np.array([handle]))
        entry = self._entry_at[handle]
        if entry is not None and entry._counts is self._served:
            entry._served, entry._counts = int(self._served[handle]), None
        self._entry_at[handle] = None

    def _freed(self, handles: np.ndarray) -> None:
        """Slots free again: drop what they still reference."""
        if self.table is not None:
            self.table.forget(handles[self._in_table[handles]])
        served = self._served
        for handle in handles.tolist():
            entry = self._entry_at[handle]
            if entry is not None and entry._counts is served:
                entry._served, entry._counts = int(served[handle]), None
            self._entry_at[handle] = None

    def _no_room_message(self, entry: Entry) -> str:
        return (
            f"cannot put UID {entry.uid!r}: all {self.pool_size} slots (capacity {self.capacity} + "
            f"headroom {self.pool_size - self.capacity}) are held by {len(self)} entries and "
            f"{self._pool.retired} removed entries that {self._live} live snapshots (iterators) still "
            "read; exhaust or drop an iterator, or check room() before put()"
        )

    # ------------------------------------------------------------------ room and pins
    def room(self) -> int:
        """How many :meth:`put` calls succeed in a row from now, whatever their UIDs.

        A put claims a free slot; the entry it replaces or evicts frees its slot,
        unless a live snapshot pins it (it is then retired).  So puts never fail
        before the next snapshot (returns :data:`UNLIMITED_ROOM`) when the free
        slots outnumber the pinned entries plus the empty places; otherwise at
        least the free slots' number of puts succeed, and a put succeeds exactly
        when ``room() > 0``.

        Examples
        --------
        >>> store = ReservoirStore(2)  # 2 + 1 slots
        >>> for uid in range(2):
        ...     _ = store.put(Entry(uid, uid, ({"x": uid},)))
        >>> store.room() == UNLIMITED_ROOM  # each put frees the slot of the entry it evicts
        True
        >>> snap = store.snapshot()  # pins both entries
        >>> store.room()
        1
        >>> _ = store.put(Entry(2, 2, ({"x": 2},)))  # evicts pinned entry 0: retired
        >>> store.room(), store.pinned_retired
        (0, 1)
        >>> snap.release()
        >>> store.room() == UNLIMITED_ROOM, store.pinned_retired
        (True, 0)
        """
        with self._lock:
            self._apply_releases()
            free = self._pool.available()
            if free > self.capacity:  # more than any puts before the next snapshot can retire
                return UNLIMITED_ROOM
            at_risk = self._pinned_held() + self.capacity - len(self._entries)
            return UNLIMITED_ROOM if free > at_risk else free

    def _pinned_held(self) -> int:
        """Entries an open snapshot reads: all but those put since the newest one opened.

        Entries are kept oldest first and the snapshot count only grows, so the ones
        put since are at the newest end: counted in time proportional to their number.
        """
        newest = self._pool.newest_open
        if newest < 0:
            return 0
        added = self._pool.added
        newer = 0
        for entry in reversed(self._entries.values()):
            if added[entry.handle] <= newest:
                break
            newer += 1
        return len(self._entries) - newer

    def _apply_releases(self) -> None:
        """Unpin the slots of snapshots released since (called with the lock held)."""
        while True:
            try:
                number = self._released.popleft()
            except IndexError:
                return
            self._live -= 1
            self._freed(self._pool.close(number))

    @property
    def live_snapshots(self) -> int:
        """Snapshots taken and not released."""
        with self._lock:
            self._apply_releases()
            return self._live

    @property
    def pinned_retired(self) -> int:
        """Entries removed from the store whose slot a live snapshot still pins."""
        with self._lock:
            self._apply_releases()
            return self._pool.retired

    @property
    def slots_used(self) -> int:
        """Distinct pool slots ever handed out (at most :attr:`pool_size`)."""
        return self._pool.used

    def columnar_bytes(self) -> int:
        """Bytes of table slots ever written (high-water, not the preallocated arrays)."""
        return 0 if self.table is None else self.table.nbytes()

    # ------------------------------------------------------------------ reading
    def rows_of(self, entry: Entry) -> tuple[Row, ...]:
        """The rows of ``entry``: copies when they live in a slot, else the stored rows.

        Stored rows have read-only arrays; do not modify their other values.
        """
        if entry.slot is not None and self.table is not None:
            return (self.table.read_row(entry.slot),)
        return entry.rows

    def get(self, uid: Hashable) -> Entry | None:
        """The entry of ``uid``, or None."""
        return self._entries.get(uid)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        with self._lock:
            return list(self._entries)

    def copies(self, uids: Iterable[Hashable]) -> list[Entry]:
        """New entries holding copies of the stored rows of ``uids`` (those present), atomically.

        Examples
        --------
        >>> store = ReservoirStore(2)
        >>> _ = store.put(Entry("a", 0, ({"x": 1},)))
        >>> [(e.uid, e.rows) for e in store.copies(["b", "a"])]
        [('a', ({'x': 1},))]
        """
        with self._lock:
            return [
                Entry(e.uid, e.position, self.rows_of(e), e.loaded_at, e.load_seconds)
                for uid in uids
                if (e := self._entries.get(uid)) is not None
            ]

    def snapshot(self) -> Snapshot:
        """The entries in source order (by ``position``), frozen for an epoch.

        Call :meth:`Snapshot.release` when done reading it; until then, the slots
        of its entries are not reused.  Costs time in the entries changed since the
        last snapshot (plus one vectorized copy of 8 bytes per entry when some
        changed), not a Python step per entry.
        """
        with self._lock:
            self._apply_releases()
            self._refresh_order()
            handles = self._sorted_handles
            number = [self._pool.open()]
            self._live += 1
            snapshot = Snapshot(
                handles=handles,
                table=self.table,
                all_slotted=len(handles) > 0 and self._kept_as_rows == 0 and self.table is not None,
                positions=self._sorted,
                _number=number,
                _store=self,
            )
            # released when collected, if nothing released it before (an owner interrupted
            # between taking it and handing it over, or while releasing it)
            weakref.finalize(snapshot, _release_number, number, self._released).atexit = False
            return snapshot

    def _refresh_order(self) -> None:
        """Bring the source-ordered positions and their slots up to date with the changes.

        New arrays each time: a live snapshot shares the previous ones.
        """
        changed = self._changed
        if not changed:
            return
        at = self._at_position
        current = self._sorted
        touched = np.sort(np.fromiter(changed, dtype=np.int64, count=len(changed)))
        where = np.searchsorted(current, touched)
        in_current = np.zeros(len(touched), dtype=bool)
        if len(current):
            in_current = (where < len(current)) & (current[np.minimum(where, len(current) - 1)] == touched)
        present = np.fromiter((p in at for p in touched.tolist()), dtype=bool, count=len(touched))
        current = np.delete(current, where[in_current & ~present])
        new = touched[present & ~in_current]
        self._sorted = _read_only(np.insert(current, np.searchsorted(current, new), new))
        self._sorted_handles = _read_only(self._handle_at[self._sorted])
        changed.clear()

    def clear(self) -> None:
        """Drop every entry (counters are kept); the table too once no snapshot pins it."""
        with self._lock:
            self._apply_releases()
            for entry in self._entries.values():
                self._remove(entry)
            self._entries.clear()
            self._at_position.clear()
            self._sorted = np.empty(0, np.int64)
            self._sorted_handles = _read_only(np.empty(0, np.int64))
            self._changed.clear()
            self._layout = None
            if self._live == 0:
                self.table = None
                self._pool = SlotPool(self.pool_size)
                self._in_table[:] = False
                self._freed(np.flatnonzero([e is not None for e in self._entry_at]))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __iter__(self) -> Iterator[Entry]:
        with self._lock:  # a copy: other threads may put meanwhile
            return iter(list(self._entries.values()))

    def __repr__(self) -> str:
        return (
            f"<ReservoirStore: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )


def _single_block(entry: Entry) -> Any:
    """The block holding the one row of ``entry``, or None."""
    rows = entry.rows
    return rows[0].block if len(rows) == 1 and type(rows[0]) is BlockRow else None


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _frozen(row: Row) -> Row:
    """A new dict of ``row`` whose arrays are read-only (the store's own view of the row).

    The flags of the caller's arrays are never changed: on a threaded cluster they are
    the function's own (a buffer it may fill again).  A writeable array is kept as a
    read-only view, without a copy: what tasks hand over is theirs to keep (a task run in
    the client's process copies its results, see :class:`~dask_reservoir._worker.calls.TaskOptions`).
    """
    return {
        k: _read_only_view(v) if isinstance(v, np.ndarray) and v.flags.writeable else v
        for k, v in row.items()
    }


def _read_only_view(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


Layout = dict[str, tuple[tuple[int, ...], str] | None]
"""Per column: the shape and dtype family of its arrays, or None for values that are not arrays."""


def layout_of(row: Row) -> Layout:
    """What the default collate needs alike in every row of a batch: columns, array shapes and kinds.

    Examples
    --------
    >>> layout_of({"x": np.zeros((2, 3)), "label": 1, "name": "a"})
    {'x': ((2, 3), 'number'), 'label': None, 'name': None}
    """
    return {
        k: (v.shape, dtype_family(v.dtype)) if isinstance(v, np.ndarray) else None for k, v in row.items()
    }


def _unstackable(
    entry: Entry, found: Layout, expected: Layout, uid_column: str, holder: Hashable
) -> StoreError:
    """The error of a row that would not stack with the stored rows (naming the UID and column)."""
    kept = f" (UID {holder!r} among them)" if holder is not None else ""
    extra = [c for c in found if c not in expected]
    missing = [c for c in expected if c not in found]
    if extra or missing:
        column = (extra or missing)[0]
        return StoreError(
            f"UID {entry.uid!r} has columns {list(found)!r} but the stored rows{kept} have "
            f"{list(expected)!r}: every row must have the same columns to be collated into "
            "a batch (a collate_fn may take rows of any columns)",
            uid=entry.uid,
            column=column,
        )
    column = next(c for c in found if found[c] != expected[c])

    def what(array: tuple[tuple[int, ...], str] | None) -> str:
        if array is None:
            return "a value that is not an array"
        shape, family = array
        kinds = {a[1] for a in (found[column], expected[column]) if a is not None}
        return f"an array of shape {shape}" + (f" and {family} values" if len(kinds) > 1 else "")

    return StoreError(
        f"column {column!r} holds {what(found[column])} for UID {entry.uid!r} but the stored rows"
        f"{kept} hold {what(expected[column])}: rows must be alike to be stacked into a batch "
        "(return one shape and kind of values per column, or pad in a collate_fn)",
        uid=entry.uid,
        column=column,
        dtype=what(found[column]),
    )

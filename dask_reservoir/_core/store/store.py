"""The reservoir store: a bounded, UID-keyed, oldest-first collection of entries.

Pure synchronous code with no threads started and no dask.  An
:class:`~dask_reservoir._core.store.entry.Entry` holds the rows produced for one UID;
putting an entry whose UID is present replaces the old one (and makes it the
newest); beyond ``capacity`` entries the oldest are evicted.  Single-row entries
whose columns have fixed shapes and dtypes are kept in a columnar
:class:`~dask_reservoir._core.store.table.SlotTable`, so that a batch is gathered with one
``numpy.take`` per column; other entries keep their rows as dicts, with their
arrays made read-only.

Memory bound
------------
Every entry, slotted or kept as rows, holds one slot of a fixed
:class:`~dask_reservoir._core.store.slots.SlotPool` of ``capacity + headroom`` slots,
``headroom = ceil(capacity / 2)``; the table's arrays have that many rows,
allocated once (rows never written cost no resident memory).  An epoch
:class:`~dask_reservoir._core.store.snapshot.Snapshot` pins exactly the slots of its
entries until released; an entry removed meanwhile is *retired* and keeps its
slot until its last pin goes (see :mod:`~dask_reservoir._core.store.pins`).  So:

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

import math
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import replace
from typing import Any, cast

import numpy as np

from dask_reservoir._core.store.admission import Admission, block_run
from dask_reservoir._core.store.entry import Entry, Row
from dask_reservoir._core.store.layout import frozen_row
from dask_reservoir._core.store.members import Members
from dask_reservoir._core.store.pins import SlotHolders
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._core.store.table import SlotTable, StoreError

__all__ = ["UNLIMITED_ROOM", "NoRoomError", "ReservoirStore"]

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


class ReservoirStore:
    """A bounded mapping UID -> :class:`~dask_reservoir._core.store.entry.Entry`, ordered from oldest to newest.

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
        self._admission = Admission(
            columnar=columnar, uid_column=uid_column, uid_type=uid_type, stackable=stackable
        )
        self._holders = SlotHolders(self.pool_size)  # the slots and table, the snapshots pinning them
        self._members = Members(capacity, self._holders)  # the entries, by UID and in source order
        self._lock = threading.RLock()  # never taken by Snapshot.release (finalizers)

    @property
    def table(self) -> SlotTable | None:
        """The columnar table of the slotted rows (None before the first, and after :meth:`clear`)."""
        return self._holders.table

    @property
    def ingested(self) -> int:
        """Entries put (a replacement counts)."""
        return self._members.ingested

    @property
    def evicted(self) -> int:
        """Entries evicted as the oldest beyond ``capacity``."""
        return self._members.evicted

    @property
    def replaced(self) -> int:
        """Entries replaced by a put of their UID."""
        return self._members.replaced

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
        self._admission.prepare(entry)
        with self._lock:
            self._holders.apply_releases()  # unpin the slots of the snapshots released since
            layout = None  # with stackable: the layout this put sets, if it leaves no other entry
            if self._admission.stackable:  # raises for a row that would not stack, before any change
                alone = min(self._members.others(entry.uid), self.capacity - 1) <= 0
                layout = self._admission.stackable_layout(
                    entry, alone=alone, holder=self._members.newest_uid()
                )
            if self._members.get(entry.uid) is entry:  # put again: store it as a new entry
                entry = replace(entry, slot=None, handle=None)
            self._members.check_position(entry)
            if self._holders.available() == 0:
                raise NoRoomError(self._no_room_message(entry))
            slot = self._holders.next_slot()
            table = self._admission.table_for(entry, self.table, size=self.pool_size)  # may warn
            if table is not None:
                try:
                    table.write(slot, entry.rows[0])
                except StoreError as exc:
                    exc.uid = entry.uid
                    exc.args = (f"{exc.args[0]} for UID {entry.uid!r}",)
                    raise
            self._commit(entry, table)
            evicted = self._members.add(entry)
            self._admission.took(layout)
            return evicted

    def put_many(self, entries: list[Entry]) -> list[tuple[Entry, StoreError]]:
        """:meth:`put` each entry in order; return those that could not be stored, with why.

        Entries of a vectorized job whose one row each lives in the same
        :class:`~dask_reservoir._worker.chunks.ColumnBlock` are written to the table with
        one assignment per column (at most ``capacity`` at a time, so that none
        evicts another of the same write).  :class:`NoRoomError` and ``ValueError``
        propagate as from :meth:`put`.
        """
        rejected: list[tuple[Entry, StoreError]] = []
        i = 0
        while i < len(entries):
            end, block = block_run(entries, i, self.capacity)
            if block is not None and self._put_block(entries[i:end], block):
                i = end
                continue
            try:  # not from a block, or not written at once: this entry alone, then the next run
                self.put(entries[i])
            except StoreError as exc:
                rejected.append((entries[i], exc))
            i += 1
        return rejected

    def _put_block(self, entries: list[Entry], block: Any) -> bool:
        """Put entries whose row ``k`` is row ``entries[k].rows[0].at`` of ``block``; False: not here."""
        prepared = self._admission.block(entries, block)
        if prepared is None:
            return False  # put() one by one: only the entries that cannot be stored fail
        schema, rows, layout = prepared
        with self._lock:
            self._holders.apply_releases()
            table = self.table
            if table is None:
                table = SlotTable(schema, self.pool_size)
            elif table.columns != schema:
                return False  # put() one by one: it warns about the change
            if not self._admission.fits_block(layout):
                return False  # put() one by one: it refuses the rows that would not stack
            if self.room() < len(entries):
                return False  # put() one by one: it raises NoRoomError where room runs out
            for entry in entries:
                self._members.check_position(entry)
            handles = np.empty(len(entries), np.intp)
            for k, entry in enumerate(entries):
                self._commit(entry, table)
                handles[k] = cast(int, entry.handle)
                self._members.add(entry)
            table.write_many(handles, block.columns, rows)
            self._admission.took_block(layout)
            return True

    def _commit(self, entry: Entry, table: SlotTable | None) -> None:
        """``entry`` takes a slot (its row written in ``table`` at that slot, or kept as rows)."""
        entry.handle = self._holders.hold(entry, table)
        if table is not None:
            entry.slot = entry.handle
            entry.rows = ()
        else:
            entry.slot = None
            entry.rows = tuple(frozen_row(row) for row in entry.rows)

    def _no_room_message(self, entry: Entry) -> str:
        return (
            f"cannot put UID {entry.uid!r}: all {self.pool_size} slots (capacity {self.capacity} + "
            f"headroom {self.pool_size - self.capacity}) are held by {len(self)} entries and "
            f"{self._holders.retired} removed entries that {self._holders.live} live snapshots "
            "(iterators) still read; exhaust or drop an iterator, or check room() before put()"
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
            self._holders.apply_releases()
            free = self._holders.available()
            if free > self.capacity:  # more than any puts before the next snapshot can retire
                return UNLIMITED_ROOM
            held = len(self._members)
            at_risk = self._holders.pinned_held(self._members.newest_first(), held) + self.capacity - held
            return UNLIMITED_ROOM if free > at_risk else free

    @property
    def live_snapshots(self) -> int:
        """Snapshots taken and not released."""
        with self._lock:
            self._holders.apply_releases()
            return self._holders.live

    @property
    def pinned_retired(self) -> int:
        """Entries removed from the store whose slot a live snapshot still pins."""
        with self._lock:
            self._holders.apply_releases()
            return self._holders.retired

    @property
    def slots_used(self) -> int:
        """Distinct pool slots ever handed out (at most :attr:`pool_size`)."""
        return self._holders.used

    @property
    def positions_served(self) -> int:
        """Distinct source positions some entry of which was ever put in a batch."""
        return self._holders.positions_served

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
        return self._members.get(uid)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        with self._lock:
            return self._members.uids()

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
                if (e := self._members.get(uid)) is not None
            ]

    def snapshot(self) -> Snapshot:
        """The entries in source order (by ``position``), frozen for an epoch.

        Call :meth:`Snapshot.release` when done reading it; until then, the slots
        of its entries are not reused.  Costs time in the entries changed since the
        last snapshot (plus one vectorized copy of 8 bytes per entry when some
        changed), not a Python step per entry.
        """
        with self._lock:
            self._holders.apply_releases()
            positions, handles = self._members.in_source_order()
            return Snapshot(
                handles=handles,
                table=self.table,
                all_slotted=len(handles) > 0 and self._holders.kept_as_rows == 0 and self.table is not None,
                positions=positions,
                holders=self._holders,
                pin=self._holders.pin(),
            )

    def clear(self) -> None:
        """Drop every entry (counters are kept); the table too once no snapshot pins it."""
        with self._lock:
            self._holders.apply_releases()
            self._members.clear()
            self._admission.clear()
            if self._holders.live == 0:
                self._holders.reset()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, uid: object) -> bool:
        return uid in self._members

    def __iter__(self) -> Iterator[Entry]:
        with self._lock:  # a copy: other threads may put meanwhile
            return iter(self._members.entries())

    def __repr__(self) -> str:
        return (
            f"<ReservoirStore: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )

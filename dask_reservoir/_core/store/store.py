"""The reservoir store: a bounded, oldest-first collection of entries, one per source position.

Pure synchronous code with no threads started and no dask.  An entry holds the rows
produced for one UID; putting an entry whose position (that is, whose UID) is present
replaces the old one (and makes it the newest); beyond ``capacity`` entries the oldest
are evicted.  The store keeps no Python object per entry: what it knows of each lives
in arrays per slot and per position (see :mod:`~dask_reservoir._core.store.pins` and
:mod:`~dask_reservoir._core.store.members`), so that a finished task's ``k`` entries
go in with a few numpy operations and one assignment per column
(:meth:`ReservoirStore.put_block`).  Single-row entries whose columns have fixed shapes
and dtypes are kept in a columnar :class:`~dask_reservoir._core.store.table.SlotTable`,
so that a batch is gathered with one ``numpy.take`` per column; other entries keep
their rows as dicts, with their arrays made read-only.  UIDs are looked up (``get``,
``in``, ``copies``) through a table built on first use after a change: not a hot path.

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

With ``max_bytes``, entries are also evicted, oldest first, until the stored entries take
at most ``max_bytes`` (:mod:`~dask_reservoir._core.store.nbytes` says what an entry weighs).

Stored data never changes under a reader: batches and rows handed to a
``collate_fn`` are copies (see :class:`~dask_reservoir._runtime.batches.BatchIterator`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import replace
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import ColumnBlock
from dask_reservoir._core.store.admission import Admission
from dask_reservoir._core.store.entry import Entry, Row
from dask_reservoir._core.store.layout import frozen_row
from dask_reservoir._core.store.members import Members
from dask_reservoir._core.store.nbytes import check_weight, rows_nbytes
from dask_reservoir._core.store.pins import SlotHolders
from dask_reservoir._core.store.room import UNLIMITED_ROOM, NoRoomError, headroom, no_room_message, room
from dask_reservoir._core.store.runs import put_all
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._core.store.table import SlotTable, StoreError

__all__ = ["UNLIMITED_ROOM", "NoRoomError", "ReservoirStore"]


class ReservoirStore:
    """At most ``capacity`` entries, one per source position, ordered from the oldest put to the newest.

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
        max_bytes: int | None = None,
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
        self.max_bytes = max_bytes
        self._members = Members(capacity, self._holders, max_bytes)  # the entries, by UID and in source order
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
        the store is as before.  The store keeps a copy of what ``entry`` says, not the
        object.

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
        entry = replace(entry)  # the caller's object is left as it is
        self._admission.prepare(entry)
        with self._lock:
            self._holders.apply_releases()  # unpin the slots of the snapshots released since
            members = self._members
            layout = None  # with stackable: the layout this put sets, if it leaves no other entry
            if self._admission.stackable:  # raises for a row that would not stack, before any change
                alone = min(members.others(entry.position, entry.uid), self.capacity - 1) <= 0
                layout = self._admission.stackable_layout(entry, alone=alone, holder=members.newest_uid())
            positions = np.array([entry.position], np.int64)
            members.check_position(positions, [entry.uid])
            if self._holders.available() == 0:
                raise NoRoomError(
                    no_room_message(entry.uid, self.pool_size, self.capacity, len(self), self._holders)
                )
            slot = self._holders.next_slot()
            table = self._admission.table_for(entry, self.table, size=self.pool_size)  # may warn
            nbytes = table.row_nbytes if table is not None else rows_nbytes(entry.rows)
            check_weight(entry.uid, nbytes, self.max_bytes)
            if table is not None:
                try:
                    table.write(slot, entry.rows[0])
                except StoreError as exc:
                    exc.uid = entry.uid
                    exc.args = (f"{exc.args[0]} for UID {entry.uid!r}",)
                    raise
            slots = self._holders.claim(1)  # written before evicting: a failed write changes nothing
            replaced, _, gone = members.make_room(positions, nbytes)
            evicted_entries = [  # copies: what they held, no longer in any slot
                replace(cast(Entry, self._holders.entry_at(s)), slot=None, handle=None) for s in gone.tolist()
            ]
            self._holders.let_go(np.concatenate([replaced, gone]))
            self._holders.hold(
                slots,
                positions=positions,
                uids=[entry.uid],
                loaded_at=np.array([entry.loaded_at]),
                load_seconds=np.array([entry.load_seconds]),
                table=table,
                rows=None if table is not None else [tuple(frozen_row(row) for row in entry.rows)],
                nbytes=np.array([nbytes]),
            )
            self._holders.set_served(int(slots[0]), entry.times_served)
            members.insert(positions, slots)
            self._admission.took(layout)
            return evicted_entries

    def put_many(self, entries: list[Entry]) -> list[tuple[Entry, StoreError]]:
        """:meth:`put` each entry in order; return those that could not be stored, with why.

        Runs of entries whose one row each lives in the same
        :class:`~dask_reservoir._core.blocks.ColumnBlock` are stored with :meth:`put_block`
        (see :func:`~dask_reservoir._core.store.runs.put_all`).  :class:`NoRoomError` and
        ``ValueError`` propagate as from :meth:`put`.
        """
        return cast(list[tuple[Entry, StoreError]], put_all(self, entries)[1])

    def put_block(
        self,
        positions: np.ndarray,
        uids: list[Hashable],
        block: ColumnBlock,
        rows: np.ndarray,
        *,
        loaded_at: np.ndarray,
        load_seconds: np.ndarray,
    ) -> bool:
        """Store, at once, one entry per row ``rows[k]`` of ``block``: UID ``uids[k]``, source ``positions[k]``.

        Bookkeeping for the ``k`` entries is a few numpy operations, their data one
        assignment per column: no Python object per entry.  Entries whose position holds
        an entry replace it, then the oldest beyond ``capacity`` are evicted.  Returns
        False, changing nothing, when they cannot be stored at once (not columnar, not
        slottable, another table schema, rows that a ``stackable`` store would refuse,
        positions repeated, more than ``capacity`` entries, or less room than entries):
        the caller then puts them one by one.

        Raises
        ------
        ValueError
            When another UID holds one of ``positions``.
        """
        count = len(positions)
        if not count or count > self.capacity or len(np.unique(positions)) < count:
            return False
        prepared = self._admission.block(uids, block, rows)
        if prepared is None:
            return False
        schema, layout = prepared
        with self._lock:
            self._holders.apply_releases()
            table = self.table
            if table is None:
                table = SlotTable(schema, self.pool_size)
            elif table.columns != schema:
                return False  # put() one by one: it warns about the change
            if not self._admission.fits_block(layout):
                return False  # put() one by one: it refuses the rows that would not stack
            if self.room() < count:
                return False  # put() one by one: it raises NoRoomError where room runs out
            if self.max_bytes is not None and count * table.row_nbytes > self.max_bytes:
                return False  # put() one by one: each evicts what it needs
            members = self._members
            members.check_position(positions, uids)
            replaced, _, gone = members.make_room(positions, count * table.row_nbytes)
            self._holders.let_go(np.concatenate([replaced, gone]))  # freed first: reused at once
            slots = self._holders.claim(count)
            table.write_many(slots, block.columns, rows)
            self._holders.hold(
                slots,
                positions=positions,
                uids=uids,
                loaded_at=loaded_at,
                load_seconds=load_seconds,
                table=table,
                nbytes=np.full(count, table.row_nbytes),
            )
            members.insert(positions, slots)
            self._admission.took_block(layout)
            return True

    # ------------------------------------------------------------------ room and pins
    def room(self) -> int:
        """How many :meth:`put` calls succeed in a row from now, whatever their UIDs.

        A put succeeds exactly when ``room() > 0``; see
        :func:`~dask_reservoir._core.store.room.room`.

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
            if free > self.capacity:  # no need to count the pinned entries
                return UNLIMITED_ROOM
            members = self._members
            return room(free=free, capacity=self.capacity, held=len(members), pinned=members.pinned_held())

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

    def nbytes(self) -> tuple[int, int]:
        """``(stored, pinned)``: bytes of the entries, and of those removed that live snapshots still read."""
        with self._lock:
            self._holders.apply_releases()
            stored = self._members.nbytes
            return stored, self._holders.bytes_held - stored

    def columnar_bytes(self) -> int:
        """Bytes of table slots ever written (high-water, not the preallocated arrays)."""
        return 0 if self.table is None else self.table.nbytes()

    # ------------------------------------------------------------------ reading
    def rows_of(self, entry: Entry) -> tuple[Row, ...]:
        """The rows of ``entry`` (one the store handed back): copies when they live in a slot.

        Stored rows have read-only arrays; do not modify their other values.
        """
        if entry.slot is not None and self.table is not None:
            return (self.table.read_row(entry.slot),)
        return entry.rows

    def get(self, uid: Hashable) -> Entry | None:
        """A copy of the entry of ``uid``, or None."""
        with self._lock:
            position = self._members.position_of(uid)
            return None if position is None else self._holders.entry_at(self._members.slot_of(position))

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        with self._lock:
            return self._members.uids()

    def member_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The entries' slots, load times and serve counts, from the oldest to the newest (arrays)."""
        with self._lock:
            slots = self._members.oldest_first()[1]
            return slots, self._holders.loaded_at(slots), self._holders.served(slots)

    def uids_at(self, slots: np.ndarray) -> list[Hashable]:
        """The UIDs of the entries holding ``slots`` (from :meth:`member_arrays`)."""
        with self._lock:
            return self._holders.uids_at(slots)

    def copies(self, uids: Iterable[Hashable]) -> list[Entry]:
        """New entries holding copies of the stored rows of ``uids`` (those present), atomically."""
        with self._lock:
            out = []
            for uid in uids:
                e = self.get(uid)
                if e is not None:
                    out.append(Entry(e.uid, e.position, self.rows_of(e), e.loaded_at, e.load_seconds))
            return out

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
            self._holders.let_go(self._members.clear())
            self._admission.clear()
            if self._holders.live == 0:
                self._holders.reset()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, uid: object) -> bool:
        return uid in self._members

    def __iter__(self) -> Iterator[Entry]:
        """Copies of the entries, from the oldest to the newest (one object each: not for hot paths)."""
        with self._lock:  # copies: other threads may put meanwhile
            slots = self._members.oldest_first()[1]
            return iter([cast(Entry, self._holders.entry_at(slot)) for slot in slots.tolist()])

    def __repr__(self) -> str:
        return (
            f"<ReservoirStore: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )

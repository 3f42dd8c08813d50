"""The entries a store holds: by source position, from the oldest to the newest, in arrays.

Pure code with no threads and no dask.  :class:`Members` keeps at most ``capacity``
entries, one per source position, with no Python object per entry: the slot of each
position in one array, and the order of the puts in a first-in first-out array of
positions (an entry replaced or evicted leaves a dead item there, skipped and
compacted away).  Storing ``k`` entries, with the replacements and evictions they
cause, is a few numpy operations (see :meth:`Members.make_room` and
:meth:`Members.insert`); what the entries hold lives in the slots (see
:class:`~dask_reservoir._core.store.pins.SlotHolders`).  The store calls it with its lock
held.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from dask_reservoir._core.store.pins import SlotHolders
from dask_reservoir._core.store.source_order import SourceOrder

__all__ = ["Members"]

_NO_SLOTS = np.empty(0, np.int64)


class Members:
    """At most ``capacity`` entries, one per source position, oldest first and in source order.

    Parameters
    ----------
    capacity : int
        Most entries held; storing more evicts the oldest.
    holders : SlotHolders
        The slots the entries hold.
    max_bytes : int, optional
        Most bytes the entries take (``holders.slot_nbytes``); storing more evicts the oldest.

    Attributes
    ----------
    ingested, evicted, replaced : int
        Entries stored; removed as the oldest beyond ``capacity`` (or ``max_bytes``); replaced
        by an entry of their position.
    nbytes : int
        Bytes the entries take.

    Examples
    --------
    >>> holders = SlotHolders(3)
    >>> members = Members(2, holders)
    >>> def put(uid, position):
    ...     positions = np.array([position])
    ...     replaced, evicted, gone = members.make_room(positions)
    ...     holders.let_go(np.concatenate([replaced, gone]))
    ...     slots = holders.claim(1)
    ...     holders.hold(slots, positions=positions, uids=[uid], loaded_at=np.zeros(1), rows=[({"x": 1},)])
    ...     members.insert(positions, slots)
    ...     return evicted.tolist()
    >>> put("a", 5), put("b", 1), put("c", 3), put("b", 1)  # c evicts a; b is put again
    ([], [], [5], [])
    >>> members.uids(), members.in_source_order()[0].tolist()
    (['c', 'b'], [1, 3])
    >>> members.ingested, members.evicted, members.replaced
    (4, 1, 1)
    """

    def __init__(self, capacity: int, holders: SlotHolders, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.ingested = 0
        self.evicted = 0
        self.replaced = 0
        self._holders = holders
        self._size = 0
        self._slot_at = np.full(16, -1, np.int32)  # per source position: the slot of its entry, -1: none
        self._seq = np.zeros(holders.size, np.int64)  # per slot: the number of the put of its entry
        self._next_seq = 0
        # the puts in order: (position, put number, snapshots opened before it); dead items skipped
        self._fifo = np.empty((3, 64), np.int64)
        self._head = 0
        self._tail = 0
        self._order = SourceOrder()
        self._lookup: dict[Hashable, int] | None = None  # UID -> position, built when asked

    # ------------------------------------------------------------------ storing
    def make_room(
        self, positions: np.ndarray, incoming_bytes: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Remove what storing entries for ``positions`` (unique, at most ``capacity``) replaces and evicts.

        Returns the slots of the replaced entries, and the positions and slots of the
        entries evicted (the oldest beyond ``capacity``, then beyond ``max_bytes`` with the
        ``incoming_bytes`` of the new entries, oldest first); the caller lets go of those
        slots, then :meth:`insert` s the new entries.
        """
        self._grow(int(positions.max()) + 1 if len(positions) else 0)
        old = self._slot_at[positions]
        replaced_slots = old[old >= 0].astype(np.int64)
        self._kill(positions[old >= 0])
        self.replaced += len(replaced_slots)
        excess = self._size + len(positions) - self.capacity
        evicted = self._pop_oldest(excess) if excess > 0 else _NO_SLOTS
        evicted_slots = self._slot_at[evicted].astype(np.int64)
        self._kill(evicted)
        if self.max_bytes is not None and self.nbytes + incoming_bytes > self.max_bytes:
            more, more_slots = self._evict_bytes(self.nbytes + incoming_bytes - self.max_bytes)
            evicted, evicted_slots = (
                np.concatenate([evicted, more]),
                np.concatenate([evicted_slots, more_slots]),
            )
        self.evicted += len(evicted)
        return replaced_slots, evicted, evicted_slots

    def _evict_bytes(self, excess: int) -> tuple[np.ndarray, np.ndarray]:
        """Remove the oldest members until they take ``excess`` bytes fewer; their positions and slots."""
        positions: list[np.ndarray] = []
        slots: list[np.ndarray] = []
        while excess > 0 and self._size:
            mean = max(1, self.nbytes // self._size)
            count = min(self._size, max(1, -(-excess // mean)))  # a guess: looked at, then just enough
            oldest = self._pop_oldest(count, peek=True)
            freed = np.cumsum(self._holders.slot_nbytes[self._slot_at[oldest]])
            keep = min(len(oldest), int(np.searchsorted(freed, excess)) + 1)
            popped = self._pop_oldest(keep)
            excess -= int(freed[keep - 1])
            positions.append(popped)
            slots.append(self._slot_at[popped].astype(np.int64))
            self._kill(popped)
        if not positions:
            return _NO_SLOTS, _NO_SLOTS
        return np.concatenate(positions), np.concatenate(slots)

    def insert(self, positions: np.ndarray, slots: np.ndarray) -> None:
        """Store the entries of ``positions`` (after :meth:`make_room`), held in ``slots``, as the newest."""
        count = len(positions)
        seqs = np.arange(self._next_seq, self._next_seq + count, dtype=np.int64)
        self._next_seq += count
        self._slot_at[positions] = slots
        self.nbytes += int(self._holders.slot_nbytes[slots].sum())
        self._seq[slots] = seqs
        self._append(positions, seqs, self._holders.opened)
        self._size += count
        self.ingested += count
        self._order.changed(positions)
        self._lookup = None

    def _kill(self, positions: np.ndarray) -> None:
        """The entries of ``positions`` are no longer members (their FIFO items are dead from now on)."""
        if len(positions):
            self.nbytes -= int(self._holders.slot_nbytes[self._slot_at[positions]].sum())
            self._slot_at[positions] = -1
            self._size -= len(positions)
            self._order.changed(positions)
            self._lookup = None

    def _alive(self, start: int, stop: int) -> np.ndarray:
        """Per FIFO item in ``start:stop``: whether its entry is still a member."""
        positions, seqs = self._fifo[0, start:stop], self._fifo[1, start:stop]
        slots = self._slot_at[positions]
        return (slots >= 0) & (self._seq[np.maximum(slots, 0)] == seqs)

    def _pop_oldest(self, count: int, *, peek: bool = False) -> np.ndarray:
        """Remove the ``count`` oldest members from the FIFO; their positions, oldest first.

        ``peek``: only look (the FIFO is left as it is).
        """
        found: list[np.ndarray] = []
        head = self._head
        while count > 0:
            if head >= self._tail:  # pragma: no cover - fewer members than counted
                raise RuntimeError(f"the store counts {self._size} entries but holds fewer")
            stop = min(self._tail, head + max(2 * count, 64))
            alive = np.flatnonzero(self._alive(head, stop))[:count]
            found.append(self._fifo[0, head + alive])
            count -= len(alive)
            head = head + int(alive[-1]) + 1 if count == 0 else stop
        if not peek:
            self._head = head
        return np.concatenate(found) if len(found) > 1 else found[0]

    def _append(self, positions: np.ndarray, seqs: np.ndarray, opened: int) -> None:
        count = len(positions)
        if self._tail + count > self._fifo.shape[1]:  # compact: keep the live items only
            alive = self._alive(self._head, self._tail)
            kept = self._fifo[:, self._head : self._tail][:, alive]
            fifo = np.empty((3, max(64, 2 * (kept.shape[1] + count))), np.int64)
            fifo[:, : kept.shape[1]] = kept
            self._fifo, self._head, self._tail = fifo, 0, kept.shape[1]
        self._fifo[0, self._tail : self._tail + count] = positions
        self._fifo[1, self._tail : self._tail + count] = seqs
        self._fifo[2, self._tail : self._tail + count] = opened
        self._tail += count

    def _grow(self, positions: int) -> None:
        if positions > len(self._slot_at):
            grown = np.full(max(positions, 2 * len(self._slot_at)), -1, np.int32)
            grown[: len(self._slot_at)] = self._slot_at
            self._slot_at = grown

    # ------------------------------------------------------------------ reading
    def slot_of(self, position: int) -> int:
        """The slot of the entry of ``position``, -1 when none is stored."""
        return int(self._slot_at[position]) if 0 <= position < len(self._slot_at) else -1

    def slots_of(self, positions: np.ndarray) -> np.ndarray:
        """The slots of the entries of ``positions`` (-1: none), vectorized."""
        inside = (positions >= 0) & (positions < len(self._slot_at))
        out = np.full(len(positions), -1, np.int64)
        out[inside] = self._slot_at[positions[inside]]
        return out

    def oldest_first(self) -> tuple[np.ndarray, np.ndarray]:
        """The members' positions and slots, from the oldest put to the newest."""
        alive = self._alive(self._head, self._tail)
        positions = self._fifo[0, self._head : self._tail][alive]
        return positions, self._slot_at[positions].astype(np.int64)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        return self._holders.uids_at(self.oldest_first()[1])

    def newest_uid(self) -> Hashable:
        """The UID of the newest entry, or None."""
        stop = self._tail
        while stop > self._head:
            start = max(self._head, stop - 64)
            alive = np.flatnonzero(self._alive(start, stop))
            if len(alive):
                return self._holders.uids_at(np.array([self._slot_at[self._fifo[0, start + alive[-1]]]]))[0]
            stop = start
        return None

    def others(self, position: int, uid: Hashable) -> int:
        """How many entries would stay beside one of ``uid`` at ``position`` (which replaces its own)."""
        slot = self.slot_of(position)
        same = slot >= 0 and self._holders.uids_at(np.array([slot]))[0] == uid
        return self._size - same

    def check_position(self, positions: np.ndarray, uids: list[Hashable]) -> None:
        """Raise ``ValueError`` when another UID holds one of ``positions`` (``uids``: theirs, in order)."""
        slots = self.slots_of(positions)
        held = np.flatnonzero(slots >= 0)
        if not len(held):
            return
        present = self._holders.uids_at(slots[held])
        for i, stored in zip(held.tolist(), present, strict=True):
            if stored != uids[i]:
                raise ValueError(
                    f"entry positions must be unique: position {int(positions[i])} holds UID {stored!r}, "
                    f"got UID {uids[i]!r}"
                )

    def pinned_held(self) -> int:
        """How many members an open snapshot reads: all but those put since the newest one opened.

        Costs time in the entries put since (the FIFO is in the order of the puts).
        """
        newest = self._holders.newest_open
        if newest < 0:
            return 0
        since = self._head + int(
            np.searchsorted(self._fifo[2, self._head : self._tail], newest, side="right")
        )
        return self._size - int(np.count_nonzero(self._alive(since, self._tail)))

    def position_of(self, uid: Hashable) -> int | None:
        """The position of the member of ``uid``, or None (a table built on first use after a change)."""
        if self._lookup is None:
            positions, slots = self.oldest_first()
            self._lookup = dict(zip(self._holders.uids_at(slots), positions.tolist(), strict=True))
        try:
            return self._lookup.get(uid)
        except TypeError:  # an unhashable value is no UID
            return None

    def in_source_order(self) -> tuple[np.ndarray, np.ndarray]:
        """The entries' source positions, ascending, and their slots (read-only arrays to share)."""
        return self._order.current(self._slot_at)

    def clear(self) -> np.ndarray:
        """Remove every entry (the counters are kept); return the slots they held."""
        slots = self.oldest_first()[1]
        self._slot_at[:] = -1
        self._size = 0
        self.nbytes = 0
        self._head = self._tail = 0
        self._order.clear()
        self._lookup = None
        return slots

    def __len__(self) -> int:
        return self._size

    def __contains__(self, uid: object) -> bool:
        return self.position_of(uid) is not None

    def __repr__(self) -> str:
        return (
            f"<Members: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )

"""The entries a store holds: by UID from the oldest to the newest, and by source position.

Pure code with no threads and no dask.  :class:`Members` keeps at most ``capacity``
entries: adding one replaces the entry of its UID and evicts the oldest beyond
``capacity``; each removed entry lets go of its slot (see
:class:`~dask_reservoir._core.store.pins.SlotHolders`).  The store calls it with its lock
held.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator

import numpy as np

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.pins import SlotHolders
from dask_reservoir._core.store.source_order import SourceOrder

__all__ = ["Members"]


class Members:
    """At most ``capacity`` entries, one per UID, from the oldest to the newest, and in source order.

    Parameters
    ----------
    capacity : int
        Most entries held; adding more evicts the oldest.
    holders : SlotHolders
        The slots the entries hold (an added entry holds one already).

    Attributes
    ----------
    ingested, evicted, replaced : int
        Entries added; removed as the oldest beyond ``capacity``; replaced by an entry of their UID.

    Examples
    --------
    >>> holders = SlotHolders(3)
    >>> members = Members(2, holders)
    >>> def add(uid, position):
    ...     entry = Entry(uid, position, ({"x": 1},))
    ...     entry.handle = holders.hold(entry, None)
    ...     return [e.uid for e in members.add(entry)]
    >>> add("a", 5), add("b", 1), add("c", 3), add("b", 1)
    ([], [], ['a'], [])
    >>> members.uids(), members.in_source_order()[0].tolist()
    (['c', 'b'], [1, 3])
    >>> members.ingested, members.evicted, members.replaced
    (4, 1, 1)
    """

    def __init__(self, capacity: int, holders: SlotHolders) -> None:
        self.capacity = capacity
        self.ingested = 0
        self.evicted = 0
        self.replaced = 0
        self._holders = holders
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._order = SourceOrder()

    def get(self, uid: Hashable) -> Entry | None:
        """The entry of ``uid``, or None."""
        return self._entries.get(uid)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        return list(self._entries)

    def entries(self) -> list[Entry]:
        """The entries from the oldest to the newest (a new list)."""
        return list(self._entries.values())

    def newest_first(self) -> Iterator[Entry]:
        """The entries from the newest to the oldest (not a copy: do not add meanwhile)."""
        return reversed(self._entries.values())

    def newest_uid(self) -> Hashable:
        """The UID of the newest entry, or None."""
        return next(reversed(self._entries)) if self._entries else None

    def others(self, uid: Hashable) -> int:
        """How many entries would stay beside one of ``uid`` (which replaces its UID's)."""
        return len(self._entries) - (uid in self._entries)

    def check_position(self, entry: Entry) -> None:
        """Raise ``ValueError`` when another UID holds ``entry.position``."""
        present = self._order.get(entry.position)
        if present is not None and present.uid != entry.uid:
            raise ValueError(
                f"entry positions must be unique: position {entry.position} holds UID {present.uid!r}, "
                f"got UID {entry.uid!r}"
            )

    def add(self, entry: Entry) -> list[Entry]:
        """Add ``entry`` (holding its slot) as the newest; return the entries evicted to make room."""
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
        self._order.add(entry)
        self.evicted += len(evicted)
        return evicted

    def _remove(self, entry: Entry) -> None:
        handle = self._order.remove(entry.position)  # the order's record, whatever the entry says
        self._holders.let_go(handle)
        entry.slot = entry.handle = None

    def in_source_order(self) -> tuple[np.ndarray, np.ndarray]:
        """The entries' source positions, ascending, and their slots (read-only arrays to share)."""
        return self._order.current()

    def clear(self) -> None:
        """Remove every entry (the counters are kept)."""
        for entry in self._entries.values():
            self._remove(entry)
        self._entries.clear()
        self._order.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uid: object) -> bool:
        return uid in self._entries

    def __repr__(self) -> str:
        return (
            f"<Members: size={len(self)}/{self.capacity} ingested={self.ingested} "
            f"evicted={self.evicted} replaced={self.replaced}>"
        )

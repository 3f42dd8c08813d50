"""The reservoir store: a bounded, UID-keyed, oldest-first collection of entries.

Pure synchronous code with no threads and no dask.  An :class:`Entry` holds
the rows produced for one UID; putting an entry whose UID is present replaces
the old one (and makes it the newest); beyond ``capacity`` entries the oldest
are evicted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "ReservoirStore"]

Row = dict[str, Any]


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
        The produced rows, each carrying ``uid`` in the UID column.
    loaded_at : float
        ``time.monotonic()`` when the job finished on the client side.
    load_seconds : float
        Running time of ``function_to_run`` on the worker.
    times_served : int
        How many times the entry was put in a batch.
    """

    uid: Hashable
    position: int
    rows: tuple[Row, ...]
    loaded_at: float = 0.0
    load_seconds: float = 0.0
    times_served: int = 0


class ReservoirStore:
    """A bounded mapping UID -> :class:`Entry`, ordered from oldest to newest.

    Parameters
    ----------
    capacity : int
        Maximum number of entries; putting more evicts the oldest.

    Examples
    --------
    >>> store = ReservoirStore(2)
    >>> for uid in ["a", "b", "c"]:
    ...     evicted = store.put(Entry(uid, position=0, rows=({"x": 1},)))
    >>> store.uids()
    ['b', 'c']
    >>> store.put(Entry("b", position=0, rows=({"x": 2},)))  # replaces "b", now the newest
    []
    >>> store.uids(), store.evicted, store.replaced
    (['c', 'b'], 1, 1)
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, got {type(capacity).__name__}: {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self.ingested = 0
        self.evicted = 0
        self.replaced = 0

    def put(self, entry: Entry) -> list[Entry]:
        """Insert ``entry`` as the newest; return the entries evicted to make room.

        An entry with no rows is ignored: an empty result means "nothing new for
        this UID" and any older entry of the UID stays.
        """
        if not entry.rows:
            return []
        self.ingested += 1
        if entry.uid in self._entries:
            self.replaced += 1
            del self._entries[entry.uid]
        self._entries[entry.uid] = entry
        evicted: list[Entry] = []
        while len(self._entries) > self.capacity:
            _, old = self._entries.popitem(last=False)
            evicted.append(old)
        self.evicted += len(evicted)
        return evicted

    def get(self, uid: Hashable) -> Entry | None:
        """The entry of ``uid``, or None."""
        return self._entries.get(uid)

    def uids(self) -> list[Hashable]:
        """UIDs from the oldest entry to the newest."""
        return list(self._entries)

    def snapshot(self) -> list[Entry]:
        """The entries in source order (by ``position``), as a new list.

        The list is independent of later puts; the entries themselves are shared
        so that ``times_served`` counts across snapshots.
        """
        return sorted(self._entries.values(), key=lambda e: e.position)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()

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

"""Submission numbers, and the deterministic release of finished rows in submission order.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_sequence.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable

from dask_reservoir._core.records import Completed

__all__ = ["Sequencer"]


class Sequencer:
    """Numbers each submitted row; when deterministic, lets finished rows out in that order.

    Every submitted row gets the next sequence number (a checkpoint lists the rows out
    in submission order).  With ``deterministic=True`` a row that finished early is held
    back until every row submitted before it finished or gave no entry, so the entries
    come out in the same order whatever the workers' timing.

    Parameters
    ----------
    deterministic : bool
        Release finished rows in submission order (else as they arrive).

    Examples
    --------
    >>> from dask_reservoir._core.records import Completed
    >>> seq = Sequencer(deterministic=True)
    >>> seq.number(["a", "b", "c"], keep={"a", "b", "c"})
    >>> seq.arrive("b", Completed("b", 1, (), 0.0, 0.0))  # "a" first
    []
    >>> seq.held, seq.held_entries
    (1, 1)
    >>> seq.arrive("a", None)  # "a" gave no entry: "b" may go
    [Completed(uid='b', position=1, rows=(), load_seconds=0.0, loaded_at=0.0)]
    >>> seq.held
    0
    """

    def __init__(self, *, deterministic: bool = False) -> None:
        self._deterministic = deterministic
        self._next = 0  # sequence number of the next row submitted
        self._number_of: dict[Hashable, int] = {}  # UID -> sequence number of its last submission
        self._held: dict[int, Completed | None] = {}  # finished out of order (None: no entry)
        self._release_next = 0  # the next sequence number to release

    @property
    def deterministic(self) -> bool:
        """Whether finished rows come out in submission order."""
        return self._deterministic

    def number(self, uids: Iterable[Hashable], *, keep: Collection[Hashable]) -> None:
        """Give the rows of ``uids`` (just submitted) the next sequence numbers.

        ``keep`` are the UIDs still out: when the table has grown beyond four times
        their number (plus 16), the numbers of the others are forgotten.

        Examples
        --------
        >>> seq = Sequencer()
        >>> seq.number(["a", "b"], keep={"a", "b"})
        >>> seq.key("b"), seq.key("a"), seq.key("never")  # an unknown UID sorts last
        (1, 0, 2)
        """
        for uid in uids:
            self._number_of[uid] = self._next
            self._next += 1
        if len(self._number_of) > 4 * (len(keep) + 16):  # forget rows long gone
            self._number_of = {u: self._number_of[u] for u in keep if u in self._number_of}

    def key(self, uid: Hashable) -> int:
        """Sort key of ``uid`` in submission order (its last number; above every number if none)."""
        return self._number_of.get(uid, self._next)

    def arrive(self, uid: Hashable, item: Completed | None) -> list[Completed]:
        """A submitted row finished (``item``) or gave no entry (None): the entries that may go now.

        Examples
        --------
        >>> from dask_reservoir._core.records import Completed
        >>> entry = Completed("a", 0, (), 0.0, 0.0)
        >>> Sequencer().arrive("a", entry) == [entry], Sequencer().arrive("a", None)
        (True, [])
        """
        if not self._deterministic:
            return [] if item is None else [item]
        seq = self._number_of.get(uid)
        if seq is None or seq < self._release_next:  # pragma: no cover - not submitted by us
            return [] if item is None else [item]
        self._held[seq] = item
        released: list[Completed] = []
        while self._release_next in self._held:
            entry = self._held.pop(self._release_next)
            self._release_next += 1
            if entry is not None:
                released.append(entry)
        return released

    @property
    def held(self) -> int:
        """Rows held back (with an entry or not): they still count in the bound."""
        return len(self._held)

    @property
    def held_entries(self) -> int:
        """Entries held back (rows held with no entry not counted)."""
        return sum(1 for item in self._held.values() if item)

    def clear(self) -> None:
        """Drop what is held back (the reservoir closes)."""
        self._held.clear()

"""Finished rows waiting to be taken, shipped ones not yet acknowledged, and the UIDs out.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_waiting.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence, Set

import numpy as np

from dask_reservoir._core.blocks import BlockRow, ChunkLoaded, CompletedBlock, gc_paused
from dask_reservoir._core.ledger.sequence import Sequencer
from dask_reservoir._core.records import Completed
from dask_reservoir._core.uid_index import same_uid

__all__ = ["Waiting", "chunk_block", "chunk_entries"]


def chunk_entries(
    uids: Sequence[Hashable], positions: Sequence[int], chunk: ChunkLoaded, *, now: float
) -> list[Completed] | None:
    """One :class:`~dask_reservoir._core.records.Completed` per UID of a chunk, its rows referring to the chunk's block.

    ``chunk.counts[i]`` rows of the block, in order, belong to ``uids[i]``; each entry's
    load time is an equal share of the chunk's.  None when the worker reported other UIDs,
    or the same in another order, than ``uids``.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_reservoir._core.blocks import ColumnBlock
    >>> chunk = ChunkLoaded(["a", "b"], np.array([2, 1]), ColumnBlock({"x": np.arange(3)}), 3.0)
    >>> [([r.at for r in c.rows], c.load_seconds) for c in chunk_entries(["a", "b"], [0, 1], chunk, now=0.0)]
    [([0, 1], 1.5), ([2], 1.5)]
    >>> chunk_entries(["b", "a"], [1, 0], chunk, now=0.0) is None  # reported in another order
    True
    """
    reported = chunk.uids
    if len(reported) != len(uids) or any(
        r is not u and not same_uid(r, u) for r, u in zip(reported, uids, strict=True)
    ):
        return None
    counts = chunk.counts.tolist()
    block = chunk.block
    seconds = chunk.seconds_per_uid().tolist()
    row = tuple.__new__  # BlockRow(block, i), without the named tuple's keyword handling
    with gc_paused():
        if len(block) == len(uids) and all(c == 1 for c in counts):  # one row per UID: the usual case
            return [
                Completed(uid, position, (row(BlockRow, (block, i)),), took, now)
                for i, (uid, position, took) in enumerate(zip(uids, positions, seconds, strict=True))
            ]
        items = []
        start = 0
        for uid, position, count, took in zip(uids, positions, counts, seconds, strict=True):
            rows = tuple(row(BlockRow, (block, i)) for i in range(start, start + count))
            start += count
            items.append(Completed(uid, position, rows, took, now))
        return items


def chunk_block(
    uids: list[Hashable], positions: Sequence[int], chunk: ChunkLoaded, *, now: float
) -> CompletedBlock | None:
    """A chunk of one row per UID, reported as submitted, as one block waiting; None otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_reservoir._core.blocks import ColumnBlock
    >>> chunk = ChunkLoaded(["a", "b"], np.array([1, 1]), ColumnBlock({"x": np.arange(2)}), 3.0)
    >>> chunk_block(["a", "b"], [4, 7], chunk, now=1.0).positions.tolist()
    [4, 7]
    >>> chunk_block(["b", "a"], [4, 7], chunk, now=1.0) is None  # reported otherwise: row by row
    True
    """
    if len(chunk.block) != len(uids) or not bool((chunk.counts == 1).all()) or chunk.uids != uids:
        return None
    at = np.asarray(positions, dtype=np.int64)
    return CompletedBlock(uids, at, chunk.block, np.arange(len(uids)), chunk.seconds_per_uid(), now)


class Waiting:
    """The entries waiting to be taken, those shipped and not yet acknowledged, and the UIDs out.

    A UID is out from its submission until its entry is taken (or acknowledged when
    shipped), or until its row failed or goes again: a UID out is not submitted again.
    Rows finished out of submission order wait in the :class:`~dask_reservoir._core.ledger.sequence.Sequencer`
    when deterministic.

    Parameters
    ----------
    deterministic : bool
        Entries come out in submission order, whatever the workers' timing.

    Examples
    --------
    >>> from dask_reservoir._core.records import Completed
    >>> waiting = Waiting()
    >>> waiting.submitted(["a", "b"])
    >>> waiting.arrived("a", Completed("a", 0, (), 0.0, 0.0))
    >>> waiting.occupied, sorted(waiting.out)
    (1, ['a', 'b'])
    >>> [c.uid for c in waiting.take()], sorted(waiting.out)
    (['a'], ['b'])
    """

    def __init__(self, *, deterministic: bool = False) -> None:
        self._sequence = Sequencer(deterministic=deterministic)
        self._entries: deque[Completed | CompletedBlock] = deque()  # a finished task's rows: one block
        self._count = 0  # entries in _entries
        self._shipped = 0  # taken by ship(), not yet acknowledged: still within the bound
        self._out: set[Hashable] = set()  # in flight or waiting
        # chosen for a job not yet submitted, in choice order: their last number is an older submission's
        self._unnumbered: dict[Hashable, None] = {}

    @property
    def deterministic(self) -> bool:
        """Whether entries come out in submission order."""
        return self._sequence.deterministic

    # ------------------------------------------------------------------ rows going out
    @property
    def out(self) -> Set[Hashable]:
        """UIDs in flight, waiting, or shipped and not yet acknowledged."""
        return self._out

    def submitted(self, uids: Iterable[Hashable]) -> None:
        """These UIDs are on their way (chosen for a job)."""
        chosen = dict.fromkeys(uids)
        self._out.update(chosen)
        self._unnumbered.update(chosen)

    def numbered(self, uids: Iterable[Hashable]) -> None:
        """The job of these UIDs was submitted: number them in submission order."""
        uids = list(uids)
        unnumbered = self._unnumbered
        for uid in uids:
            unnumbered.pop(uid, None)
        self._sequence.number(uids, keep=self._out)

    def pending(self) -> list[Hashable]:
        """The UIDs out, in submission order; those chosen for a job not yet submitted last, in choice order.

        Examples
        --------
        >>> waiting = Waiting(deterministic=True)
        >>> waiting.submitted(["a", "b"]); waiting.numbered(["a", "b"])
        >>> waiting.dropped("a"); waiting.dropped("b")  # back, no longer out
        >>> waiting.submitted(["c"]); waiting.numbered(["c"])
        >>> waiting.submitted(["b", "a"])  # chosen again, not yet submitted: their numbers are old ones
        >>> waiting.pending()
        ['c', 'b', 'a']
        """
        unnumbered = self._unnumbered
        numbered = sorted((u for u in self._out if u not in unnumbered), key=self._sequence.key)
        return numbered + [u for u in unnumbered if u in self._out]

    # ------------------------------------------------------------------ rows coming back
    def arrived(self, uid: Hashable, item: Completed | None) -> None:
        """A submitted row finished (``item``) or gave no entry (None)."""
        self._add(self._sequence.arrive(uid, item))

    def dropped(self, uid: Hashable) -> None:
        """A submitted row gave no entry and is no longer out (it failed, or goes again)."""
        self._add(self._sequence.arrive(uid, None))
        self._out.discard(uid)
        self._unnumbered.pop(uid, None)

    def arrived_chunk(self, uids: Sequence[Hashable], items: Sequence[Completed]) -> None:
        """The entries of a vectorized job, one per UID, arrived at once."""
        if self._sequence.deterministic:
            for uid, item in zip(uids, items, strict=True):
                self.arrived(uid, item)
        else:
            self._add(items)

    def arrived_block(self, item: CompletedBlock) -> None:
        """A task's rows arrived as one block (not when deterministic: those arrive row by row)."""
        if self._sequence.deterministic:
            raise RuntimeError("deterministic entries arrive row by row, in submission order")
        self._entries.append(item)
        self._count += len(item)

    def _add(self, items: Sequence[Completed]) -> None:
        self._entries.extend(items)
        self._count += len(items)

    # ------------------------------------------------------------------ taking
    def take(self, limit: int | None = None) -> list[Completed | CompletedBlock]:
        """Remove and return up to ``limit`` waiting entries, oldest first: their UIDs are no longer out.

        A task's rows that arrived as one block come out as one
        :class:`~dask_reservoir._core.blocks.CompletedBlock` (split at ``limit``).
        """
        taken = self._pop(limit)
        out = self._out
        for item in taken:
            if isinstance(item, CompletedBlock):
                out.difference_update(item.uids)
            else:
                out.discard(item.uid)
        return taken

    def _pop(self, limit: int | None) -> list[Completed | CompletedBlock]:
        """Up to ``limit`` entries from the front of the queue (a block split at the limit)."""
        left = self._count if limit is None else min(limit, self._count)
        taken: list[Completed | CompletedBlock] = []
        entries = self._entries
        while left > 0:
            item = entries.popleft()
            if type(item) is CompletedBlock:
                if len(item) > left:
                    item, rest = item.split(left)
                    entries.appendleft(rest)
                left -= len(item)
                self._count -= len(item)
            else:
                left -= 1
                self._count -= 1
            taken.append(item)
        return taken

    def ship(self, limit: int | None = None) -> list[Completed]:
        """Like :meth:`take`, but the entries stay out until :meth:`acknowledge`.

        Examples
        --------
        >>> from dask_reservoir._core.records import Completed
        >>> waiting = Waiting()
        >>> waiting.submitted(["a"])
        >>> waiting.arrived("a", Completed("a", 0, (), 0.0, 0.0))
        >>> len(waiting.ship()), waiting.occupied, "a" in waiting.out
        (1, 1, True)
        >>> waiting.acknowledge(["a"])
        >>> waiting.occupied, "a" in waiting.out
        (0, False)
        """
        shipped: list[Completed] = []
        for item in self._pop(limit):  # one per row: the loader process ships rows
            if isinstance(item, CompletedBlock):
                shipped.extend(item.items())
            else:
                shipped.append(item)
        self._shipped += len(shipped)
        return shipped

    def acknowledge(self, uids: Sequence[Hashable]) -> None:
        """The consumer took (or dropped) these shipped entries: they are no longer out."""
        self._shipped = max(0, self._shipped - len(uids))
        for uid in uids:
            self._out.discard(uid)

    # ------------------------------------------------------------------ how much
    @property
    def unsent(self) -> bool:
        """Whether UIDs were chosen for a job that is not submitted yet."""
        return bool(self._unnumbered)

    @property
    def has_entries(self) -> bool:
        """Whether entries wait to be taken."""
        return bool(self._entries)

    @property
    def occupied(self) -> int:
        """Rows counted in the bound besides those in flight: waiting, shipped, held back."""
        return self._count + self._shipped + self._sequence.held

    @property
    def busy(self) -> bool:
        """Whether entries wait or are shipped and not yet acknowledged."""
        return bool(self._entries) or bool(self._shipped)

    @property
    def entries(self) -> int:
        """Entries waiting, including those held back for the submission order."""
        return self._count + self._sequence.held_entries

    def clear(self) -> None:
        """Drop every entry, shipped or held back, and forget the UIDs out (the reservoir closes)."""
        self._entries.clear()
        self._count = 0
        self._sequence.clear()
        self._shipped = 0
        self._out.clear()
        self._unnumbered.clear()

"""The source cursor: which source rows to submit next, in which order, pass after pass.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_cursor.py``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Hashable, Sequence

import numpy as np

from dask_reservoir._core.checkpoint import order_digest
from dask_reservoir._core.order import pass_order
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.uid_index import UidIndex

__all__ = ["SourceCursor", "uids_at"]


def position_in(uids: Sequence[Hashable], uid: Hashable) -> int | None:
    """The source position of ``uid`` in ``uids``, or None (a lookup: not for hot paths).

    Examples
    --------
    >>> position_in(["a", "b"], "b"), position_in(UidIndex(["a", "b"]), "a"), position_in(["a"], "z")
    (1, 0, None)
    """
    try:
        if isinstance(uids, UidIndex):
            return uids.position(uid)
        return list(uids).index(uid)
    except (KeyError, ValueError):
        return None


def known_in(uids: Sequence[Hashable], named: Sequence[Hashable]) -> list[Hashable]:
    """The UIDs of ``named`` that are in ``uids``, in order (one scan of a UidIndex: no set of every UID).

    Examples
    --------
    >>> known_in(UidIndex(np.array([3, 4])), [4, 9]), known_in(["a", "b"], ["z", "a"])
    ([4], ['a'])
    """
    if isinstance(uids, UidIndex):
        found = uids.positions(named)
        return [u for u, p in zip(named, found.tolist(), strict=True) if p >= 0]
    present = set(uids)
    return [u for u in named if u in present]


def uids_at(uids: Sequence[Hashable], positions: Sequence[int]) -> list[Hashable]:
    """``[uids[p] for p in positions]``, with one numpy take when ``uids`` is a UidIndex.

    Examples
    --------
    >>> uids_at(["a", "b", "c"], [2, 0])
    ['c', 'a']
    """
    take = getattr(uids, "take", None)
    return take(positions) if take is not None else [uids[p] for p in positions]


class SourceCursor:
    """Where submission stands in the source: the pass, the position in its order, the rows to go first.

    Each pass over the source follows the source sampler's order (this rank's shard of
    it, see :func:`~dask_reservoir._core.order.pass_order`); when a pass is through,
    the next one starts.  Rows requeued (a job lost, a UID released from quarantine)
    go before the rest of the pass.

    Parameters
    ----------
    uids : sequence
        The UID of each source row.
    order : Sampler
        Order of the rows in each pass over the source.
    skip_first_pass : collection
        UIDs not submitted in the first pass (their entries are loaded already).
    rank, world_size : int
        Submit only this rank's shard of each pass.
    deterministic : bool
        A row whose earlier load is still out is waited for, not skipped: which rows
        go next does not depend on the workers' timing.
    max_passes : int, optional
        Passes to start, then nothing more but the rows requeued (``passes=``); None: forever.

    Examples
    --------
    >>> from dask_reservoir import SequentialSampler
    >>> cursor = SourceCursor(["a", "b", "c"], SequentialSampler())
    >>> cursor.next_positions(2, out=set(), barred=set())
    ([0, 1], [])
    >>> cursor.next_positions(2, out={"a"}, barred=set())  # "c", then the second pass; "a" is out
    ([2, 1], [])
    >>> cursor.position()
    (2, 2)
    """

    def __init__(
        self,
        uids: Sequence[Hashable],
        order: Sampler,
        *,
        skip_first_pass: Sequence[Hashable] = (),
        rank: int = 0,
        world_size: int = 1,
        deterministic: bool = False,
        max_passes: int | None = None,
    ) -> None:
        self._uids = uids
        self._max_passes = max_passes
        self._sampler = order
        self._rank, self._world_size = rank, world_size
        self._deterministic = deterministic
        self._skip_first_pass = set(skip_first_pass)
        self._retry: deque[int] = deque()  # positions to submit first
        self._deferred: deque[int] = deque()  # max_passes: rows of a pass whose UID was out, to go later
        self._order: np.ndarray = np.empty(0, np.int64)  # positions of the current pass
        self._digest: tuple[int, str] | None = None  # (pass, digest of its order), for checkpoints
        self._cursor = 0  # index into the current pass's order
        self._pass = 0  # passes started

    # ------------------------------------------------------------------ what to submit
    def next_positions(
        self, limit: int, *, out: Container[Hashable], barred: Container[Hashable]
    ) -> tuple[list[int], list[int]]:
        """Up to ``limit`` positions to submit next, and the positions skipped as loaded already.

        Requeued rows first, then the pass goes on (a new pass starts when one is
        through; at most one source's worth of rows is looked at per call).  Rows of a
        UID in ``barred`` (quarantined) are passed over; rows of a UID ``out`` (in flight
        or not yet taken) are passed over too, or waited for when deterministic.  The
        second list holds the positions of the UIDs of ``skip_first_pass`` passed over in the first pass.
        """
        n = len(self._uids)
        uids = self._uids
        found: list[int] = []
        chosen: set[Hashable] = set()  # UIDs found by this call: out from now on
        while self._retry and len(found) < limit:
            pos = self._retry.popleft()
            uid = uids[pos]
            busy = uid in chosen or uid in out
            if self._deterministic and busy and uid not in barred:
                self._retry.appendleft(pos)  # its earlier load is not taken yet: wait, keep the order
                return found, []
            if not busy and uid not in barred:
                found.append(pos)
                chosen.add(uid)
        if self._deferred and len(found) < limit:
            self._take_deferred(found, chosen, limit, out=out, barred=barred)
        skipped: list[int] = []
        scanned = 0
        while len(found) < limit and scanned < n:
            if self._cursor >= len(self._order):
                if self._max_passes is not None and self._pass >= self._max_passes:
                    break  # the last pass is through: only requeued rows go from now on
                self._order = self._pass_order(self._pass)
                self._pass += 1
                self._cursor = 0
                if not len(self._order):
                    break
            # the UIDs of the next candidates at once (one numpy take, not one lookup per row)
            window = self._order[self._cursor : self._cursor + min(limit - len(found), n - scanned)].tolist()
            waiting = False
            for pos, uid in zip(window, uids_at(uids, window), strict=True):
                self._cursor += 1
                scanned += 1
                if uid in barred:
                    continue
                if uid in chosen or uid in out:
                    if self._deterministic:  # wait for it rather than skip it: skipping depends on timing
                        self._cursor -= 1
                        waiting = True
                        break
                    if self._max_passes is not None:  # each pass loads each row: later, not never
                        self._deferred.append(pos)
                    continue
                if self._pass == 1 and uid in self._skip_first_pass:
                    skipped.append(pos)
                    continue
                found.append(pos)
                chosen.add(uid)
            if waiting:
                break
        return found, skipped

    def _take_deferred(
        self,
        found: list[int],
        chosen: set[Hashable],
        limit: int,
        *,
        out: Container[Hashable],
        barred: Container[Hashable],
    ) -> None:
        """Move deferred rows whose UID is no longer out into ``found`` (quarantined ones are dropped)."""
        kept: deque[int] = deque()
        for pos in self._deferred:
            uid = self._uids[pos]
            if uid in barred:
                continue
            if len(found) < limit and uid not in chosen and uid not in out:
                found.append(pos)
                chosen.add(uid)
            else:
                kept.append(pos)
        self._deferred = kept

    def hold_back(self, positions: Sequence[int]) -> None:
        """Put ``positions`` (just returned, not submitted) back in front, in their order.

        Examples
        --------
        >>> from dask_reservoir import SequentialSampler
        >>> cursor = SourceCursor(["a", "b", "c"], SequentialSampler())
        >>> cursor.requeue([2])
        >>> cursor.hold_back([0, 1])
        >>> cursor.retry_uids()
        ['a', 'b', 'c']
        """
        self._retry.extendleft(reversed(positions))

    def requeue(self, positions: Sequence[int]) -> None:
        """Submit ``positions`` again before the rest of the pass, after those requeued earlier."""
        self._retry.extend(positions)

    def requeue_uids(self, uids: Sequence[Hashable]) -> None:
        """Submit the rows of ``uids`` again (see :meth:`requeue`), the last row of a UID named twice in the source.

        Examples
        --------
        >>> from dask_reservoir import SequentialSampler
        >>> cursor = SourceCursor(["a", "b", "a"], SequentialSampler())
        >>> cursor.requeue_uids(["b", "a", "zz"])
        >>> cursor.next_positions(2, out=set(), barred=set())
        ([1, 2], [])
        """
        names = set(uids)
        positions = {u: i for i, u in enumerate(self._uids) if u in names}
        self._retry.extend(positions[u] for u in uids if u in positions)

    def _pass_order(self, pass_number: int) -> np.ndarray:
        """Source positions of pass ``pass_number``, in the source sampler's order (this rank's shard)."""
        return pass_order(self._sampler, len(self._uids), pass_number, self._rank, self._world_size)

    # ------------------------------------------------------------------ where it stands
    def position(self) -> tuple[int, int]:
        """``(pass, cursor)``: passes started and the position in the current pass's order."""
        return self._pass, self._cursor

    @property
    def passes_done(self) -> int:
        """Passes over the source whose every row was submitted.

        Examples
        --------
        >>> from dask_reservoir import SequentialSampler
        >>> cursor = SourceCursor(["a", "b"], SequentialSampler())
        >>> cursor.passes_done
        0
        >>> _ = cursor.next_positions(1, out=set(), barred=set())
        >>> cursor.passes_done
        0
        >>> _ = cursor.next_positions(1, out=set(), barred=set())
        >>> cursor.passes_done
        1
        """
        return self._pass - (1 if self._cursor < len(self._order) else 0)

    @property
    def exhausted(self) -> bool:
        """Whether every row of the last of ``max_passes`` passes was submitted and none waits to go again.

        Examples
        --------
        >>> from dask_reservoir import SequentialSampler
        >>> cursor = SourceCursor(["a", "b"], SequentialSampler(), max_passes=1)
        >>> cursor.next_positions(5, out=set(), barred=set()), cursor.exhausted
        (([0, 1], []), True)
        >>> cursor.requeue([1])
        >>> cursor.exhausted, cursor.next_positions(5, out=set(), barred=set()), cursor.exhausted
        (False, ([1], []), True)
        """
        if self._max_passes is None or self._retry or self._deferred:
            return False
        return self._pass >= self._max_passes and self._cursor >= len(self._order)

    def retry_uids(self) -> list[Hashable]:
        """UIDs of the rows to submit first, in their order (then rows of a pass deferred while out)."""
        return [self._uids[p] for p in (*self._retry, *self._deferred)]

    def digest(self) -> str | None:
        """The :func:`~dask_reservoir._core.checkpoint.order_digest` of the current pass, None before the first.

        Computed once per pass.
        """
        if self._pass == 0:
            return None
        if self._digest is None or self._digest[0] != self._pass:
            self._digest = (self._pass, order_digest(self._order))
        return self._digest[1]

    def restore(
        self, *, source_pass: int, source_cursor: int, first: Sequence[int], order: np.ndarray | None = None
    ) -> None:
        """Go on from a checkpoint: pass ``source_pass`` at ``source_cursor``, ``first`` submitted first.

        ``order``: the order of pass ``source_pass - 1`` when the caller computed it (not drawn again).

        Examples
        --------
        >>> from dask_reservoir import SequentialSampler
        >>> cursor = SourceCursor(list("abcd"), SequentialSampler())
        >>> cursor.restore(source_pass=1, source_cursor=2, first=[0])
        >>> cursor.next_positions(4, out=set(), barred=set())  # row 0, then pass 1 from 2 on, then pass 2
        ([0, 2, 3, 1], [])
        """
        if source_pass > 0:
            self._order = order if order is not None else self._pass_order(source_pass - 1)
            self._pass = source_pass
            self._cursor = min(source_cursor, len(self._order))
        self._retry.extend(first)

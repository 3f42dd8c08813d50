"""The plan of one epoch: which entries of its snapshot go in each batch, and the batch itself.

A :class:`~dask_reservoir._runtime.batches.BatchIterator` serves one epoch over a fixed
snapshot of the store's entries, in the order a sampler gave.  Its :class:`EpochPlan`
decides what the next batch holds (``batch_size`` entries from a cursor into that order,
within the epoch's ``max_samples`` rows, a short last batch dropped with ``drop_last``)
and builds it: one ``numpy.take`` per column when every entry lives in the store's
columnar slot table and no ``collate_fn`` is given, else the rows collated with
:func:`~dask_reservoir._core.collate.collate_rows` or the ``collate_fn``.  A batch built
ahead and dropped unserved is built again (:meth:`EpochPlan.rewind`).  When the epoch
ends, :func:`end_epoch` folds its serve counts into the entries and releases the
snapshot, after any build in progress.  No thread is started here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from dask_reservoir._core.augment import EpochTransform
from dask_reservoir._core.collate import collate_rows
from dask_reservoir._core.store import ReservoirStore
from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._core.store.table import SlotTable
from dask_reservoir._runtime.prefetch import BatchBuilder

__all__ = ["Built", "EpochPlan", "end_epoch", "snapshot_of"]


def snapshot_of(entries: list[Entry]) -> Snapshot:
    """A snapshot of plain entries (for tests and examples).

    Examples
    --------
    >>> snap = snapshot_of([Entry("a", 0, ({"sample_uid": "a", "x": 1},))])
    >>> len(snap), snap.rows_at(0, copy=False)[0]["x"]
    (1, 1)
    """
    store = ReservoirStore(max(1, len(entries)), columnar=False)
    for e in entries:
        store.put(e)
    return store.snapshot()


def end_epoch(snapshot: Snapshot, served_counts: np.ndarray, builder: BatchBuilder | None) -> None:
    """Fold the epoch's serve counts into its entries and release the snapshot (runs once).

    With a builder, after the builds already submitted: none of them reads a released slot.
    """

    def end() -> None:
        try:
            snapshot.add_served(served_counts)
        finally:  # whatever interrupts the counting, the entries are released
            snapshot.release()

    if builder is None:
        end()
    else:
        builder.after(end)


Built = tuple[Any, int, np.ndarray, bool, tuple[int, int]]
"""A built batch: (batch, rows in it, snapshot indices it holds, whether it is the epoch's last,
and the plan's ``(cursor, rows)`` before it was built, to build it again after a drop)."""


class EpochPlan:
    """The building side of an epoch: which entries go in the next batch, and the batch itself.

    Its ``build()`` calls run one at a time, in order (in the consumer's thread, or
    all in the builder's), so the cursor needs no lock.

    Parameters
    ----------
    snapshot : Snapshot
        The epoch's entries, in source order.
    order : numpy.ndarray of int64
        Indices into the snapshot, in serving order.
    batch_size, drop_last, collate_fn, uid_column, max_samples
        As for :class:`~dask_reservoir._runtime.batches.BatchIterator`.
    convert : callable, optional
        Applied to each batch built (to tensors, say).
    transform : EpochTransform, optional
        ``transform=``: applied to each row's private copy before collation, or to the
        collated batch with ``transform_batched=True`` (before ``convert``).

    Examples
    --------
    >>> snap = snapshot_of([Entry(i, i, ({"sample_uid": i, "x": i * 10},)) for i in range(3)])
    >>> plan = EpochPlan(
    ...     snap, np.array([2, 0, 1]), batch_size=2, drop_last=False, collate_fn=None,
    ...     uid_column="sample_uid", max_samples=None,
    ... )
    >>> batch, rows, chunk, last, mark = plan.build()
    >>> batch["x"].tolist(), rows, chunk.tolist(), last, mark
    ([20, 0], 2, [2, 0], False, (0, 0))
    >>> plan.rewind(mark)  # the batch was dropped unserved: built again
    >>> plan.build()[0]["x"].tolist(), plan.build()[0]["x"].tolist(), plan.build(), plan
    ([20, 0], [10], None, <EpochPlan: cursor=3/3 rows=3 ended=True>)
    >>> snap.release()
    """

    def __init__(
        self,
        snapshot: Snapshot,
        order: np.ndarray,
        *,
        batch_size: int,
        drop_last: bool,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None,
        uid_column: str,
        max_samples: int | None,
        convert: Callable[[dict[str, np.ndarray]], Any] | None = None,
        transform: EpochTransform | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.convert = convert
        self.transform = transform
        self.order = order
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.collate_fn = collate_fn
        self.uid_column = uid_column
        self.max_samples = max_samples
        per_row = transform is not None and not transform.batched  # rows, each transformed, then collated
        gather = snapshot.all_slotted and collate_fn is None and not per_row
        self.table: SlotTable | None = snapshot.table if gather else None
        self.cursor = 0
        self.rows = 0  # rows built so far
        self.ended = False  # the last batch, or the end, was built

    def build(self) -> Built | None:
        """The next batch, or None when the epoch has no more."""
        mark = (self.cursor, self.rows)
        if self.table is not None:
            built = self._gathered()
        else:
            built = self._collated()
        if built is None:
            self.ended = True
            return None
        batch, n_rows, chunk = built
        if self.transform is not None and self.transform.batched:
            batch = self.transform.batch(batch, start=mark[0])
        if self.convert is not None:
            batch = self.convert(batch)
        self.rows += n_rows
        remaining = len(self.order) - self.cursor
        budget = self._budget()
        if budget is not None:
            remaining = min(remaining, budget)
        # the last batch the epoch yields: nothing left, or only a short batch that drop_last drops
        last = remaining <= 0 or (self.drop_last and remaining < self.batch_size)
        self.ended = last
        return batch, n_rows, chunk, last, mark

    def rewind(self, mark: tuple[int, int]) -> None:
        """Go back to before the build that started at ``mark`` (its batch was dropped unserved)."""
        self.cursor, self.rows = mark
        self.ended = False

    def __repr__(self) -> str:
        return f"<EpochPlan: cursor={self.cursor}/{len(self.order)} rows={self.rows} ended={self.ended}>"

    def _budget(self) -> int | None:
        return None if self.max_samples is None else self.max_samples - self.rows

    def _gathered(self) -> tuple[Any, int, np.ndarray] | None:
        take = self.batch_size
        budget = self._budget()
        if budget is not None:
            take = min(take, budget)
        chunk = self.order[self.cursor : self.cursor + take]
        if len(chunk) == 0 or (self.drop_last and len(chunk) < self.batch_size):
            return None
        self.cursor += len(chunk)
        table = cast(SlotTable, self.table)  # set whenever batches are gathered
        return table.gather(self.snapshot.handles[chunk]), len(chunk), chunk

    def _collated(self) -> tuple[Any, int, np.ndarray] | None:
        start = self.cursor
        rows: list[dict[str, Any]] = []
        taken: list[int] = []
        order = self.order
        snapshot = self.snapshot
        per_row = self.transform if self.transform is not None and not self.transform.batched else None
        private = self.collate_fn is not None or per_row is not None  # the default collate copies
        while len(taken) < self.batch_size and self.cursor < len(order):
            budget = self._budget()
            if budget is not None and budget - len(rows) <= 0:
                break
            index = int(order[self.cursor])
            self.cursor += 1
            taken.append(index)
            entry_rows = snapshot.rows_at(index, copy=private)
            rows.extend(entry_rows if budget is None else entry_rows[: budget - len(rows)])
        if not taken or (self.drop_last and len(taken) < self.batch_size):
            return None
        if per_row is not None:
            rows = per_row.rows(rows, start=start)
        if self.collate_fn is not None:
            batch = self.collate_fn(rows)
        else:
            batch = collate_rows(rows, uid_column=self.uid_column)
        return batch, len(rows), np.asarray(taken, np.int64)

"""One epoch: a snapshot of entries, ordered by a sampler, collated into batches.

Pure synchronous code: no threads started, no dask.  When every entry of the
snapshot lives in the store's columnar slot table and no ``collate_fn`` is
given, a batch is gathered with one ``numpy.take`` per column; otherwise the
rows are collated with :func:`~dask_reservoir.collate.collate_rows`.  The
reservoir hands a ``check`` callback that raises when the reservoir was closed
or a job failed with ``on_error="raise"``; it runs before every batch.

Nothing handed out shares memory with the store: gathered and collated batches
are new arrays, and a ``collate_fn`` receives copies of the rows.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np

from .collate import collate_rows
from .samplers import Sampler
from .slots import SlotTable
from .store import Entry, ReservoirStore, Snapshot

__all__ = ["BatchIterator", "epoch_order"]


def epoch_order(
    sampler: Sampler,
    n: int,
    epoch: int,
    *,
    name: str = "reservoir_sampler",
    of: str = "entries in the reservoir",
) -> np.ndarray:
    """The sampler's indices for one epoch, checked to lie in ``range(n)``.

    Examples
    --------
    >>> from dask_reservoir.samplers import SequentialSampler
    >>> epoch_order(SequentialSampler(), 3, 0).tolist()
    [0, 1, 2]
    """
    raw: Any = sampler.indices(n, epoch=epoch)
    order = raw if isinstance(raw, np.ndarray) else np.asarray(list(raw))
    if order.size and not np.issubdtype(order.dtype, np.integer):
        raise TypeError(f"{name} {sampler!r} must yield int indices, got {order.dtype} values")
    order = order.astype(np.int64, copy=False).ravel()
    bad = order[(order < 0) | (order >= n)]
    if bad.size:
        raise ValueError(
            f"{name} {sampler!r} must yield indices in range({n}) ({n} {of}), got {bad[:5].tolist()!r}"
        )
    return order


def snapshot_of(entries: list[Entry]) -> Snapshot:
    """A snapshot of plain entries (for tests and examples)."""
    store = ReservoirStore(max(1, len(entries)), columnar=False)
    for e in entries:
        store.put(e)
    return store.snapshot()


def _end_epoch(snapshot: Snapshot, served_counts: np.ndarray) -> None:
    """Fold the epoch's serve counts into its entries and release the snapshot (runs once)."""
    entries = snapshot.entries
    for i in np.flatnonzero(served_counts).tolist():
        entries[i].times_served += int(served_counts[i])
    snapshot.release()


class BatchIterator(Iterator[Any]):
    """Batches of one epoch over a fixed snapshot of entries.

    Parameters
    ----------
    snapshot : Snapshot
        The entries, in source order.
    order : numpy.ndarray of int
        Indices into the snapshot, in serving order.
    batch_size : int
        Entries per batch (each entry contributes all its rows).
    drop_last : bool
        Drop a final batch of fewer than ``batch_size`` entries.
    collate_fn : callable, optional
        Called with the list of row dicts of a batch; default :func:`collate_rows`.
        The rows are the caller's own copies (new dicts, copied arrays, deep
        copies of mutable objects): writing into them, as an in-place
        augmentation does, never changes what the reservoir stores.
    uid_column : str
        UID column, for error messages of the default collate.
    max_samples : int, optional
        Rows to yield at most in this epoch.
    check : callable, optional
        Called before each batch; raises to end the iteration with an error (the epoch
        ends: its snapshot is released at once).
    on_batch : callable, optional
        Called with the number of rows of each batch yielded.

    Notes
    -----
    Batches are fresh: gathered columns are new arrays (one ``numpy.take`` per
    column), collated ones are stacked anew, and mutable values of ``object``
    columns are deep copies.  The snapshot is released when the epoch is
    exhausted or the iterator is dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_reservoir.store import Entry
    >>> snap = snapshot_of([Entry(i, i, ({"sample_uid": i, "x": i * 10},)) for i in range(5)])
    >>> it = BatchIterator(snap, np.array([4, 3, 2, 1, 0]), batch_size=2, drop_last=False)
    >>> [b["x"].tolist() for b in it]
    [[40, 30], [20, 10], [0]]
    """

    def __init__(
        self,
        snapshot: Snapshot,
        order: np.ndarray,
        *,
        batch_size: int,
        drop_last: bool,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        uid_column: str = "sample_uid",
        max_samples: int | None = None,
        check: Callable[[], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._entries = snapshot.entries
        self._order = np.asarray(order, dtype=np.int64)
        self._batch_size = batch_size
        self._drop_last = drop_last
        self._collate_fn = collate_fn
        self._uid_column = uid_column
        self._max_samples = max_samples
        self._check = check
        self._on_batch = on_batch
        self._table: SlotTable | None = (
            snapshot.table if snapshot.all_slotted and collate_fn is None else None
        )
        self._cursor = 0
        self._served = 0
        self._done = False
        self._lock = threading.Lock()
        self._served_counts = np.zeros(len(self._entries), dtype=np.int64)
        self._finalizer = weakref.finalize(self, _end_epoch, snapshot, self._served_counts)

    def __iter__(self) -> BatchIterator:
        return self

    def __len__(self) -> int:
        """Number of batches this epoch yields in all (for single-row entries)."""
        n = len(self._order)
        if self._max_samples is not None:
            n = min(n, self._max_samples)
        return n // self._batch_size if self._drop_last else -(-n // self._batch_size)

    def _finish(self) -> None:
        self._done = True
        self._finalizer()

    def __next__(self) -> Any:
        with self._lock:
            if self._check is not None:
                try:
                    self._check()
                except BaseException:
                    # an epoch ended by an error (closed, a job error) is over: release its
                    # snapshot now rather than when the iterator is collected
                    self._finish()
                    raise
            if self._done:
                raise StopIteration
            if self._table is not None:
                batch, _, n_rows, chunk = self._next_gathered()
            else:
                batch, _, n_rows, chunk = self._next_collated()
            if batch is None:
                self._finish()
                raise StopIteration
            np.add.at(self._served_counts, chunk, 1)  # folded into the entries at the epoch's end
            self._served += n_rows
            exhausted = self._cursor >= len(self._order) or (
                self._max_samples is not None and self._served >= self._max_samples
            )
            if exhausted:
                self._finish()
        if self._on_batch is not None:
            self._on_batch(n_rows)
        return batch

    def _budget(self) -> int | None:
        return None if self._max_samples is None else self._max_samples - self._served

    def _next_gathered(self) -> tuple[Any, int, int, Any]:
        take = self._batch_size
        budget = self._budget()
        if budget is not None:
            take = min(take, budget)
        chunk = self._order[self._cursor : self._cursor + take]
        if len(chunk) == 0 or (self._drop_last and len(chunk) < self._batch_size):
            return None, 0, 0, []
        self._cursor += len(chunk)
        table = cast(SlotTable, self._table)  # set whenever batches are gathered
        batch = table.gather(self._snapshot.slots[chunk])
        return batch, len(chunk), len(chunk), chunk

    def _next_collated(self) -> tuple[Any, int, int, Any]:
        rows: list[dict[str, Any]] = []
        taken: list[int] = []
        order = self._order
        snapshot = self._snapshot
        private = self._collate_fn is not None  # the default collate copies as it stacks
        while len(taken) < self._batch_size and self._cursor < len(order):
            budget = self._budget()
            if budget is not None and budget - len(rows) <= 0:
                break
            index = int(order[self._cursor])
            self._cursor += 1
            taken.append(index)
            entry_rows = snapshot.rows_at(index, copy=private)
            rows.extend(entry_rows if budget is None else entry_rows[: budget - len(rows)])
        if not taken or (self._drop_last and len(taken) < self._batch_size):
            return None, 0, 0, []
        if self._collate_fn is not None:
            batch = self._collate_fn(rows)
        else:
            batch = collate_rows(rows, uid_column=self._uid_column)
        return batch, len(taken), len(rows), taken

    def __repr__(self) -> str:
        return (
            f"<BatchIterator: served={self._served} rows, position={self._cursor}/{len(self._order)}, "
            f"batch_size={self._batch_size}>"
        )

"""One epoch: a snapshot of entries, ordered by a sampler, collated into batches.

Pure synchronous code: no threads started, no dask.  The reservoir hands a
``check`` callback that raises when the reservoir was closed or a job failed
with ``on_error="raise"``; it runs before every batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .collate import collate_rows
from .samplers import Sampler
from .store import Entry

__all__ = ["BatchIterator", "epoch_order"]


def epoch_order(sampler: Sampler, n: int, epoch: int, *, name: str = "reservoir_sampler") -> list[int]:
    """The sampler's indices for one epoch, checked to lie in ``range(n)``.

    Examples
    --------
    >>> from dask_reservoir.samplers import SequentialSampler
    >>> epoch_order(SequentialSampler(), 3, 0)
    [0, 1, 2]
    """
    order = [int(i) for i in sampler.indices(n, epoch=epoch)]
    bad = [i for i in order if not 0 <= i < n]
    if bad:
        raise ValueError(
            f"{name} {sampler!r} must yield indices in range({n}) (the reservoir holds {n} "
            f"entries), got {bad[:5]!r}"
        )
    return order


class BatchIterator(Iterator[Any]):
    """Batches of one epoch over a fixed snapshot of entries.

    Parameters
    ----------
    entries : list of Entry
        The snapshot, in source order.
    order : sequence of int
        Indices into ``entries``, in serving order.
    batch_size : int
        Entries per batch (each entry contributes all its rows).
    drop_last : bool
        Drop a final batch of fewer than ``batch_size`` entries.
    collate_fn : callable, optional
        Called with the list of row dicts of a batch; default :func:`collate_rows`.
    uid_column : str
        UID column, for error messages of the default collate.
    max_samples : int, optional
        Rows to yield at most in this epoch.
    check : callable, optional
        Called before each batch; raises to end the iteration with an error.
    on_batch : callable, optional
        Called with the number of rows of each batch yielded.

    Examples
    --------
    >>> from dask_reservoir.store import Entry
    >>> entries = [Entry(i, i, ({"sample_uid": i, "x": i * 10},)) for i in range(5)]
    >>> it = BatchIterator(entries, [4, 3, 2, 1, 0], batch_size=2, drop_last=False)
    >>> [b["x"].tolist() for b in it]
    [[40, 30], [20, 10], [0]]
    """

    def __init__(
        self,
        entries: list[Entry],
        order: Sequence[int],
        *,
        batch_size: int,
        drop_last: bool,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        uid_column: str = "sample_uid",
        max_samples: int | None = None,
        check: Callable[[], None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._entries = entries
        self._order = order
        self._batch_size = batch_size
        self._drop_last = drop_last
        self._collate_fn = collate_fn
        self._uid_column = uid_column
        self._max_samples = max_samples
        self._check = check
        self._on_batch = on_batch
        self._cursor = 0
        self._served = 0
        self._done = False
        self._lock = threading.Lock()

    def __iter__(self) -> BatchIterator:
        return self

    def __len__(self) -> int:
        """Number of batches this epoch yields in all (for single-row entries)."""
        n = len(self._order)
        if self._max_samples is not None:
            n = min(n, self._max_samples)
        return n // self._batch_size if self._drop_last else -(-n // self._batch_size)

    def __next__(self) -> Any:
        with self._lock:
            if self._check is not None:
                self._check()
            if self._done:
                raise StopIteration
            rows: list[dict[str, Any]] = []
            taken: list[Entry] = []
            while len(taken) < self._batch_size and self._cursor < len(self._order):
                entry = self._entries[self._order[self._cursor]]
                budget = None if self._max_samples is None else self._max_samples - self._served - len(rows)
                if budget is not None and budget <= 0:
                    break
                self._cursor += 1
                taken.append(entry)
                rows.extend(entry.rows if budget is None else entry.rows[:budget])
            exhausted = self._cursor >= len(self._order) or (
                self._max_samples is not None and self._served + len(rows) >= self._max_samples
            )
            if not taken or (self._drop_last and len(taken) < self._batch_size):
                self._done = True
                raise StopIteration
            if exhausted:
                self._done = True
            batch = (
                self._collate_fn(rows)
                if self._collate_fn
                else collate_rows(rows, uid_column=self._uid_column)
            )
            for entry in taken:
                entry.times_served += 1
            self._served += len(rows)
        if self._on_batch is not None:
            self._on_batch(len(rows))
        return batch

    def __repr__(self) -> str:
        return (
            f"<BatchIterator: served={self._served} rows, position={self._cursor}/{len(self._order)}, "
            f"batch_size={self._batch_size}>"
        )

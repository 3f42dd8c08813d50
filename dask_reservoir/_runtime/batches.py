"""One epoch: a snapshot of entries, ordered by a sampler, collated into batches.

Pure synchronous code: no threads started, no dask.  What each batch holds, and how it
is built, is the epoch's plan (:mod:`~dask_reservoir._runtime.epoch_plan`): when every
entry of the snapshot lives in the store's columnar slot table and no ``collate_fn`` is
given, a batch is gathered with one ``numpy.take`` per column; otherwise the rows are
collated with :func:`~dask_reservoir._core.collate.collate_rows`.  The
:class:`BatchIterator` serves the plan's batches, built in ``next()`` or ahead by a
:class:`~dask_reservoir._runtime.prefetch.BatchBuilder`, and ends the epoch.  The
reservoir hands a ``check`` callback that raises when the reservoir was closed
or a job failed with ``on_error="raise"``; it runs before every batch.

Nothing handed out shares memory with the store: gathered and collated batches
are new arrays, and a ``collate_fn`` receives copies of the rows.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from dask_reservoir._core.augment import EpochTransform
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._runtime.epoch_plan import Built, EpochPlan, end_epoch
from dask_reservoir._runtime.prefetch import IDLE_SLICE, BatchBuilder
from dask_reservoir.errors import IteratorExpiredError

__all__ = ["BatchIterator"]


FINISH_WAIT = 5.0
"""Longest an ending epoch waits for its build in progress before leaving the release to the builder."""


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
        ends: its snapshot is released).
    on_batch : callable, optional
        Called after each ``next()`` with the number of rows of the batch yielded
        (0 for the one that ends the epoch), the seconds it took, and the seconds given
        to :meth:`carry_seconds` since the last call (the epoch's start: part of the
        first batch's wait, but not of this call's time).
    builder : BatchBuilder, optional
        Builds the next ``prefetch`` batches ahead of ``next()``, in its thread.
        None: each batch is built inside ``next()``.
    prefetch : int
        Batches built ahead when a builder is given (0: none), within the builder's
        budget shared by all its iterators (:meth:`BatchBuilder.submit_ahead`).
    epoch : int, optional
        The epoch's number, for messages.
    on_end : callable, optional
        Called with the iterator once its last batch is handed out (not when it is closed,
        expired or ended by an error): the reservoir prepares the next epoch then.

    Notes
    -----
    Batches are fresh: gathered columns are new arrays (one ``numpy.take`` per
    column), collated ones are stacked anew, and mutable values of ``object``
    columns are deep copies.  A batch built ahead and never handed out is not
    counted as served.  The snapshot is released when the epoch is exhausted, the
    iterator is dropped or closed (:meth:`close`), or it is expired (:meth:`note_newer_epoch`,
    :meth:`expire`), after any build in progress.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_reservoir._core.store import Entry
    >>> from dask_reservoir._runtime.epoch_plan import snapshot_of
    >>> snap = snapshot_of([Entry(i, i, ({"sample_uid": i, "x": i * 10},)) for i in range(5)])
    >>> it = BatchIterator(snap, np.array([4, 3, 2, 1, 0]), batch_size=2, drop_last=False)
    >>> len(it), [b["x"].tolist() for b in it]
    (3, [[40, 30], [20, 10], [0]])
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
        on_batch: Callable[[int, float, float], None] | None = None,
        builder: BatchBuilder | None = None,
        prefetch: int = 0,
        convert: Callable[[dict[str, np.ndarray]], Any] | None = None,
        epoch: int | None = None,
        owner: object = None,
        on_end: Callable[[BatchIterator], None] | None = None,
        transform: EpochTransform | None = None,
    ) -> None:
        self.owner = owner  # what must live while the epoch is served (the reservoir)
        self._served_counts = np.zeros(len(snapshot), dtype=np.int64)
        self._builder = builder if prefetch > 0 else None
        finalizer = None
        try:
            finalizer = self._finalizer = weakref.finalize(
                self, end_epoch, snapshot, self._served_counts, self._builder
            )
            self._order = np.asarray(order, dtype=np.int64)
            self._plan = EpochPlan(
                snapshot,
                self._order,
                batch_size=batch_size,
                drop_last=drop_last,
                collate_fn=collate_fn,
                uid_column=uid_column,
                max_samples=max_samples,
                convert=convert,
                transform=transform,
            )
            self._batch_size = batch_size
            self._drop_last = drop_last
            self._max_samples = max_samples
            self._check = check
            self._on_batch = on_batch
            self._prefetch = prefetch
            self._pending: deque[Future[Built | None]] = deque()
            self._served = 0
            self.inline_builds = 0  # batches built in next() because their build had not started
            self._carry = 0.0  # seconds reported with the next next()'s time (counted by who gave them)
            self._done = False
            self._epoch = epoch
            self._on_end = on_end
            self.snapshot_size = len(snapshot)
            self._behind = 0  # newer epochs started since the last next() (or since this one started)
            self._expired: IteratorExpiredError | None = None
            self._lock = threading.Lock()
            self._fill()
        except BaseException:  # e.g. KeyboardInterrupt: the caller never gets the iterator
            if finalizer is None:
                snapshot.release()
            else:
                self._pending = getattr(self, "_pending", deque())
                self._finish()
            raise

    def __iter__(self) -> BatchIterator:
        return self

    def __len__(self) -> int:
        """Number of batches this epoch yields in all (for single-row entries)."""
        n = self.rows
        return n // self._batch_size if self._drop_last else -(-n // self._batch_size)

    def carry_seconds(self, seconds: float) -> None:
        """Report ``seconds`` (the epoch's start) to ``on_batch`` with the next ``next()``, apart from its time."""
        self._carry += seconds

    def _fill(self) -> None:
        """Keep ``prefetch`` builds submitted (none once the plan reached its end)."""
        builder = self._builder
        if builder is None:
            return
        plan = self._plan
        while len(self._pending) < self._prefetch and not plan.ended:
            future = builder.submit_ahead(plan.build)
            if future is None:  # the builder's budget is taken: build in next() meanwhile
                return
            self._pending.append(future)

    def _drop_ahead(self) -> None:
        """Drop the batches built ahead (with the lock held); the next ``next()`` builds again.

        Builds not started are cancelled; those started are a prefix of the queue (the
        builder runs them in order): once they end, the plan goes back to before the
        first, so no entry is skipped.  Kept when one failed or ended the epoch.
        """
        started = [f for f in reversed(self._pending) if not f.cancel()]
        started.reverse()
        self._pending = deque(started)
        if not started:
            return
        wait(started, timeout=FINISH_WAIT)
        if not all(f.done() for f in started) or started[0].exception() is not None:
            return
        first = started[0].result()
        if first is None:
            return
        self._plan.rewind(first[4])
        self._pending.clear()

    def note_newer_epoch(self, max_stale: int) -> bool | None:
        """A newer epoch of the reservoir starts: drop the batches built ahead, expire if stale.

        An iterator not advanced while more than ``max_stale`` newer epochs started is
        expired (see :meth:`expire`).  An iterator inside ``next()`` now is being advanced:
        left as it is.

        Returns
        -------
        bool or None
            None when the epoch is over (exhausted, closed or expired before): nothing to
            track any more; True when this call expired it; False otherwise.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._done:
                return None
            self._behind += 1
            if self._behind > max_stale:
                self._expire(
                    f"not advanced while {self._behind} newer epochs started (max_stale_epochs={max_stale})"
                )
                return True
            self._drop_ahead()
            return False
        finally:
            self._lock.release()

    def expire(self, reason: str) -> bool:
        """End the epoch now: its next ``next()`` raises :class:`IteratorExpiredError` saying ``reason``.

        Its entries are released (after a build in progress) and its batches built ahead
        dropped.  Returns whether it was expired: not when it is inside ``next()`` now or
        its epoch is already over.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._done:
                return False
            self._expire(reason)
            return True
        finally:
            self._lock.release()

    def _expire(self, reason: str) -> None:
        epoch = "" if self._epoch is None else f" of epoch {self._epoch}"
        self._expired = IteratorExpiredError(
            f"this iterator{epoch} was expired: {reason}. Its entries were released and its batches "
            "built ahead dropped, so that the reservoir keeps refreshing whatever is held. Advance or "
            "exhaust an epoch's iterator before starting more newer ones, drop it (del it, or "
            "it.close()) when done with it, or raise AsyncReservoir(max_stale_epochs=...)",
            epoch=self._epoch,
            behind=self._behind,
        )
        self._finish()

    @property
    def behind(self) -> int:
        """Newer epochs started since this iterator was last advanced (or started)."""
        return self._behind

    @property
    def rows(self) -> int:
        """Entries this epoch serves: its order, cut at ``max_samples``."""
        n = len(self._order)
        return n if self._max_samples is None else min(n, self._max_samples)

    @property
    def ended(self) -> bool:
        """Whether the epoch is over: exhausted, closed, ended by an error, or expired."""
        return self._done

    @property
    def expired(self) -> bool:
        """Whether the iterator was expired (its ``next()`` raises :class:`IteratorExpiredError`)."""
        return self._expired is not None

    def close(self) -> None:
        """End the epoch now: release its entries; ``next()`` raises ``StopIteration`` from now on.

        Idempotent.  Dropping the iterator does the same (when it is collected).
        """
        with self._lock:
            if not self._done:
                self._finish()

    def _finish(self) -> None:
        """End the epoch: fold its serve counts and release its snapshot, after its builds."""
        self._done = True
        running = [f for f in self._pending if not f.cancel()]
        self._pending.clear()
        if running:
            wait(running, timeout=FINISH_WAIT)  # a build in progress reads the snapshot
        if all(f.done() for f in running):
            detached = self._finalizer.detach()
            if detached is not None:
                _, _, (snapshot, counts, _), _ = detached
                end_epoch(snapshot, counts, None)  # now, in this thread
                return
        self._finalizer()  # after the builds still running, in the builder's thread

    def _next_built(self) -> Built | None:
        if self._builder is None:
            return self._plan.build()
        if not self._pending:
            self._fill()
            if not self._pending:  # the plan ended: this build returns the end
                return self._plan.build()
        if not self._pending[0].done():
            # Not built yet.  Cancel from the last build back: the builder starts them in
            # order, so what cannot be cancelled (running or done) is a prefix, kept.
            kept = [f for f in reversed(self._pending) if not f.cancel()]
            self._pending = deque(reversed(kept))
            if not kept:
                # none started (the epoch's first batch, typically): building it here costs
                # less than handing the GIL to the builder and back
                self.inline_builds += 1
                return self._plan.build()
        future = self._pending.popleft()
        while True:
            try:
                return future.result(timeout=IDLE_SLICE)
            except FutureTimeout:
                if self._check is not None:
                    self._check()  # closed meanwhile: raise rather than wait on
            except CancelledError:
                if self._check is not None:
                    self._check()
                raise RuntimeError(f"the batch builder stopped ({self._builder!r})") from None

    def __next__(self) -> Any:
        t0 = time.perf_counter()
        with self._lock:
            self._behind = 0
            expired = self._expired
            if expired is not None:
                raise IteratorExpiredError(str(expired), epoch=expired.epoch, behind=expired.behind)
            if self._done:
                raise StopIteration
            try:
                if self._check is not None:
                    self._check()
                built = self._next_built()
            except BaseException:
                # an epoch ended by an error (closed, a job error) is over: release its
                # snapshot now rather than when the iterator is collected
                self._finish()
                raise
            if built is None:
                self._finish()
                self._report(0, t0)
                self._ended_served()
                raise StopIteration
            batch, n_rows, chunk, last, _ = built
            np.add.at(self._served_counts, chunk, 1)  # folded into the entries at the epoch's end
            self._served += n_rows
            if last:
                self._finish()
            else:
                self._fill()
        self._report(n_rows, t0)
        if last:
            self._ended_served()
        return batch

    @property
    def epoch(self) -> int | None:
        """The epoch's number (None when not given)."""
        return self._epoch

    def _ended_served(self) -> None:
        on_end, self._on_end = self._on_end, None  # once
        if on_end is not None:
            on_end(self)

    def _report(self, rows: int, t0: float) -> None:
        if self._on_batch is not None:
            carried, self._carry = self._carry, 0.0
            self._on_batch(rows, time.perf_counter() - t0, carried)

    def __repr__(self) -> str:
        return (
            f"<BatchIterator: served={self._served} rows, built={self._plan.cursor}/{len(self._order)} "
            f"entries, prefetched={len(self._pending)}, batch_size={self._batch_size}>"
        )

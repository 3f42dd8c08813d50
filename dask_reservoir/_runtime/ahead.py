"""The next epoch, prepared ahead on the batch builder's thread while the training step runs.

When the consumer takes the last batch of the newest epoch, :class:`EpochAhead` submits one
job to the :class:`~dask_reservoir._runtime.prefetch.BatchBuilder`: it ingests what arrived,
takes the snapshot, draws the order and queues the first ``prefetch_batches`` builds of the
next epoch.  The next ``iter()`` hands that epoch over (:meth:`EpochAhead.take`) when it is
still the epoch asked for and younger than :data:`PREPARED_MAX_AGE`; otherwise it is dropped
(its entries released) and ``iter()`` starts the epoch itself, as without preparation.

No dask here; the only thread is the builder's.  Every wait has a deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from dask_reservoir._runtime.batches import FINISH_WAIT, BatchIterator
from dask_reservoir._runtime.prefetch import BatchBuilder

__all__ = ["PREPARED_MAX_AGE", "EpochAhead", "Prepared"]

logger = logging.getLogger("dask_reservoir")

PREPARED_MAX_AGE = 1.0
"""Seconds a prepared epoch stays good: an ``iter()`` later than this (after an evaluation, a
pause) starts a fresh epoch over what is loaded by then, rather than serve an old snapshot."""


@dataclass
class Prepared:
    """An epoch prepared ahead: its iterator (not handed out yet), number and when it was taken."""

    iterator: BatchIterator
    epoch: int
    at: float  # time.monotonic() of the snapshot


class EpochAhead:
    """Prepares the next epoch once, on the builder's thread; hands it over or drops it.

    Parameters
    ----------
    builder : BatchBuilder
        Runs the preparation after the builds already submitted.
    prepare : callable
        Returns the :class:`Prepared` epoch, or None when there is nothing to prepare now
        (closed, below the minimum, the reservoir busy); runs in the builder's thread.

    Examples
    --------
    >>> builder = BatchBuilder(name="dask_reservoir-ahead-doctest")
    >>> ahead = EpochAhead(builder, lambda: None)
    >>> ahead.start()
    True
    >>> ahead.take(epoch=0) is None  # nothing was prepared
    True
    >>> ahead.close(); builder.close()
    >>> ahead
    <EpochAhead: prepared=0 handed=0 dropped=0 pending=False>
    """

    def __init__(self, builder: BatchBuilder, prepare: Callable[[], Prepared | None]) -> None:
        self._builder = builder
        self._prepare = prepare
        self._lock = threading.Lock()
        self._job: Future[Prepared | None] | None = None
        self._closed = False
        self._holding = 0  # 1 while a prepared epoch waits to be taken (its snapshot held)
        self.prepared = 0  # epochs prepared
        self.handed = 0  # prepared epochs handed to iter()
        self.dropped = 0  # prepared epochs dropped (too old, another epoch number, closed)

    def start(self) -> bool:
        """Prepare the next epoch in the builder, unless a preparation is pending; whether one was submitted."""
        with self._lock:
            if self._closed or self._job is not None:
                return False
            self._job = self._builder.submit(self._run)
            return True

    def _run(self) -> Prepared | None:
        with self._lock:
            self._holding = 1  # from before its snapshot is taken: stats() never counts it as an iterator
        prepared = None
        try:
            prepared = self._prepare()
        finally:
            with self._lock:
                if prepared is None:
                    self._holding = 0
                else:
                    self.prepared += 1
        return prepared

    @property
    def holding(self) -> int:
        """1 while an epoch is being prepared or waits to be handed over (its snapshot held), else 0."""
        return self._holding

    def take(self, *, epoch: int) -> BatchIterator | None:
        """The prepared iterator of epoch ``epoch``, or None (none prepared, or dropped).

        A preparation not started yet is cancelled; one running is waited for (up to
        ``FINISH_WAIT`` seconds: it only ingests, snapshots and orders).
        """
        with self._lock:
            job, self._job = self._job, None
        prepared = self._result(job)
        if prepared is None:
            return None
        with self._lock:
            self._holding = 0
        if prepared.epoch != epoch or time.monotonic() - prepared.at > PREPARED_MAX_AGE:
            self._drop(prepared)
            return None
        with self._lock:
            self.handed += 1
        return prepared.iterator

    def _result(self, job: Future[Prepared | None] | None) -> Prepared | None:
        if job is None or (not job.done() and job.cancel()):
            return None
        try:
            return job.result(timeout=FINISH_WAIT)
        except FutureTimeout:  # still running: whatever it prepares is dropped when it ends
            job.add_done_callback(self._drop_when_done)
            return None
        except (CancelledError, Exception):  # a failed preparation: iter() starts the epoch itself
            logger.debug("dask_reservoir: preparing the next epoch failed", exc_info=True)
            return None

    def _drop_when_done(self, job: Future[Prepared | None]) -> None:
        if not job.cancelled() and job.exception() is None and (prepared := job.result()) is not None:
            self._drop(prepared)

    def _drop(self, prepared: Prepared) -> None:
        prepared.iterator.close()  # releases its snapshot, after its builds
        with self._lock:
            self.dropped += 1
            self._holding = 0

    def close(self) -> None:
        """Drop what is prepared or being prepared; prepare nothing more (idempotent)."""
        with self._lock:
            self._closed = True
            job, self._job = self._job, None
        if job is not None and not job.cancel():
            job.add_done_callback(self._drop_when_done)

    def __repr__(self) -> str:
        return (
            f"<EpochAhead: prepared={self.prepared} handed={self.handed} dropped={self.dropped} "
            f"pending={self._job is not None}>"
        )

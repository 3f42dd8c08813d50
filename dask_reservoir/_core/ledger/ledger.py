"""The runner's bookkeeping: which rows are out, what waits, what failed, what to submit next.

:class:`Ledger` holds the one ``threading.Condition`` (the runner thread writes, consumers
read and take) around the parts of :mod:`~dask_reservoir._core.ledger`, each a plain
synchronous class owning its state.  No dask, no thread of its own.  Tested without a
cluster in ``tests/core/test_ledger.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import ChunkLoaded, CompletedBlock, as_rows
from dask_reservoir._core.ledger.bound import InFlightBound
from dask_reservoir._core.ledger.coverage import Coverage
from dask_reservoir._core.ledger.cursor import SourceCursor, known_in, position_in, uids_at
from dask_reservoir._core.ledger.failures import FailureBook, misreported
from dask_reservoir._core.ledger.tally import Tally
from dask_reservoir._core.ledger.waiting import Waiting, chunk_block, chunk_entries
from dask_reservoir._core.records import Completed, Outcome, RowFailed, RowLoaded, RunnerCounters
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.uid_index import same_uid
from dask_reservoir.errors import JobError

__all__ = ["Ledger"]


class Ledger:
    """Rows in flight, waiting and failed; the order of submission; the back-pressure bound.

    Parameters
    ----------
    uids : list
        The UID of each source row.
    order : Sampler
        Order of the rows in each pass over the source.
    max_rows, max_jobs, rows_per_job, auto_bound_threads, capacity
        The back-pressure bound and the task size: see
        :class:`~dask_reservoir._core.ledger.bound.InFlightBound` (``threads``: the worker
        threads at the start, see :meth:`set_worker_threads`).
    max_failures_per_uid : int or None
        Failures in a row after which a UID is quarantined.
    collect_errors : bool
        Keep a ``JobError`` per failure for :meth:`pop_error`.
    skip_first_pass : collection
        UIDs not submitted in the first pass (their entries are loaded already).
    rank, world_size : int
        Submit only this rank's shard of each pass (:mod:`~dask_reservoir._core.shards`).
    deterministic : bool
        Finished rows wait in submission order, whatever the workers' timing
        (:class:`~dask_reservoir._core.ledger.sequence.Sequencer`).

    Examples
    --------
    >>> from dask_reservoir import SequentialSampler
    >>> ledger = Ledger(["a", "b", "c"], SequentialSampler(), max_rows=2, rows_per_job=1)
    >>> def submit():
    ...     job = ledger.next_job()
    ...     if job:
    ...         ledger.submitted(job)
    ...     return job
    >>> submit(), submit(), submit()  # the bound is 2 rows
    ([0], [1], [])
    >>> ledger.finished([0], [RowLoaded("a", [{"x": 1}], 0.5)], now=1.0)
    >>> submit()  # row 0 waits to be taken: still 2 rows out
    []
    >>> [c.uid for c in ledger.take()], submit()
    (['a'], [2])
    """

    def __init__(
        self,
        uids: Sequence[Hashable],
        order: Sampler,
        *,
        max_rows: int | None,
        rows_per_job: int | None,
        max_jobs: int | None = None,
        auto_bound_threads: int | None = None,
        capacity: int | None = None,
        max_failures_per_uid: int | None = None,
        collect_errors: bool = False,
        skip_first_pass: Sequence[Hashable] = (),
        rank: int = 0,
        world_size: int = 1,
        deterministic: bool = False,
        max_passes: int | None = None,
        max_bytes: int | None = None,
        chunks: bool = False,
    ) -> None:
        self.cond = threading.Condition()
        self._uids = uids
        self._cursor = SourceCursor(
            uids,
            order,
            skip_first_pass=skip_first_pass,
            rank=rank,
            world_size=world_size,
            deterministic=deterministic,
            max_passes=max_passes,
        )
        self._bound = InFlightBound(
            len(uids),
            max_rows=max_rows,
            max_jobs=max_jobs,
            rows_per_job=rows_per_job,
            threads=auto_bound_threads,
            capacity=capacity,
            max_bytes=max_bytes,
            chunks=chunks,
        )
        self._book = FailureBook(max_failures_per_uid=max_failures_per_uid, collect_errors=collect_errors)
        self._coverage = Coverage(len(uids))
        self._tally = Tally()
        self._waiting = Waiting(deterministic=deterministic)
        self.status = "running"
        self.fatal: BaseException | None = None
        self.closed = False

    # ------------------------------------------------------------------ consumer side
    def take(self, limit: int | None = None) -> list[Completed | CompletedBlock]:
        """Remove and return up to ``limit`` waiting entries, oldest first (a task's block as one item)."""
        with self.cond:
            return self._waiting.take(limit)

    def ship(self, limit: int | None = None) -> list[Completed]:
        """Like :meth:`take`, but the entries stay counted in the bound until :meth:`acknowledge`.

        The loader process ships entries (:mod:`~dask_reservoir._runtime.loader.parent`): they occupy
        the bound, and their UIDs are not submitted again, until the consumer says it took them.
        """
        with self.cond:
            return self._waiting.ship(limit)

    def acknowledge(self, uids: Sequence[Hashable]) -> None:
        """The consumer took these shipped entries (or dropped them): free their room in the bound."""
        with self.cond:
            self._waiting.acknowledge(uids)
            self.cond.notify_all()

    def has_waiting(self) -> bool:
        """Whether finished entries wait to be taken."""
        with self.cond:
            return self._waiting.has_entries

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""
        with self.cond:
            quiet = not self._waiting.has_entries and not self._book.has_errors
            if quiet and self.fatal is None and not self.closed:
                self.cond.wait(timeout=max(0.0, timeout))

    def pop_error(self) -> JobError | None:
        """The oldest failure not yet reported, or None (kept only with ``collect_errors=True``).

        One at a time: each ``iter()``/``next()`` of an ``on_error="raise"`` reservoir raises the next.
        """
        with self.cond:
            return self._book.pop_error()

    def release_quarantine(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Submit quarantined UIDs again (all when ``uids`` is None); return those released.

        Their count of failures in a row starts again from zero; UIDs not quarantined are ignored.
        """
        with self.cond:
            wanted = self._book.release(uids)
            if wanted:
                self._cursor.requeue_uids(wanted)
                self.cond.notify_all()
            return wanted

    def counters(self) -> RunnerCounters:
        """A consistent copy of the counters."""
        with self.cond:
            book = self._book
            return RunnerCounters(
                **self._tally.counts(),
                jobs_in_flight=self._bound.jobs_in_flight,
                rows_in_flight=self._bound.rows_in_flight,
                entries_waiting=self._waiting.entries,
                uids_tried=self._coverage.tried_count,
                uids_loaded=self._coverage.loaded_count,
                source_passes=self._cursor.passes_done,
                # nothing left to choose, in flight, or chosen and not yet submitted (outside the lock)
                loading_done=self._cursor.exhausted
                and not self._bound.jobs_in_flight
                and not self._waiting.unsent,
                loading_held_seconds=self._bound.held_seconds(now=time.monotonic()),
                failures=book.records(),
                quarantined=book.quarantine_records(),
                unloadable=book.unloadable() | self._coverage.unloadable(),
                status=self.status,
            )

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last ``RECENT_LOADS`` rows loaded."""
        with self.cond:
            return self._tally.recent_load_seconds()

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time of ``function_to_run`` per source row."""
        return self._tally.mean_load_seconds

    rows_per_job = property(lambda self: self._bound.rows_per_job, doc="Source rows per task now.")
    max_rows = property(lambda self: self._bound.max_rows, doc="The bound now, in source rows.")
    max_jobs = property(lambda self: self._bound.max_jobs, doc="The bound in tasks (None: max_rows).")
    jobs_in_flight = property(lambda self: self._bound.jobs_in_flight, doc="Jobs submitted, not back.")
    rows_in_flight = property(lambda self: self._bound.rows_in_flight, doc="Rows of the jobs in flight.")

    def set_status(self, status: str, fatal: BaseException | None = None) -> None:
        """Record the connection status (and what stopped the runner, if anything)."""
        with self.cond:
            self.status = status
            if fatal is not None:
                self.fatal = fatal
            self.cond.notify_all()

    def close(self) -> None:
        """Drop what waits and wake every waiter (idempotent)."""
        with self.cond:
            self.closed = True
            self.status = "closed"
            self._waiting.clear()
            self.cond.notify_all()

    # ------------------------------------------------------------------ what to submit
    def next_job(self) -> list[int]:
        """Positions of the next job, or [] when the bound or the rule says to wait.

        Full jobs only: one task per ``rows_per_job`` freed rows, not one per freed row.
        A shorter job goes only when nothing is in flight or waiting (a source smaller
        than ``rows_per_job``, say).
        """
        with self.cond:
            quarantined = self._book.quarantined
            k = self._bound.job_rows(barred=len(quarantined))
            granted = self._bound.room(waiting=self._waiting.occupied) >= k
            self._bound.note_room(granted=granted, now=time.monotonic())
            if not granted:
                return []
            positions, skipped = self._cursor.next_positions(k, out=self._waiting.out, barred=quarantined)
            if skipped:
                self._coverage.skipped(np.asarray(skipped, dtype=np.int64))
            if positions and len(positions) < k and (self._bound.jobs_in_flight or self._waiting.busy):
                self._cursor.hold_back(positions)  # wait for a full job
                return []
            self._waiting.submitted(uids_at(self._uids, positions))
            return positions

    def checkpoint(self) -> tuple[int, int, tuple[Hashable, ...], str | None]:
        """:meth:`source_position` and the :func:`~dask_reservoir._core.checkpoint.order_digest` of the pass, at once.

        The digest is of the order of pass ``pass - 1`` (the one the cursor is in), None
        before the first pass; computed once per pass.
        """
        with self.cond:
            source_pass, cursor, pending = self.source_position()
            return source_pass, cursor, pending, self._cursor.digest()

    def source_position(self) -> tuple[int, int, tuple[Hashable, ...]]:
        """``(pass, cursor, pending UIDs)`` for a checkpoint.

        Passes started, the position in the current pass's order, and the UIDs
        submitted but not yet taken (in flight, waiting, or held for a retry).
        """
        with self.cond:
            pending = self._waiting.pending() + self._cursor.retry_uids()
            return (*self._cursor.position(), tuple(dict.fromkeys(pending)))

    def restore(
        self,
        *,
        source_pass: int,
        source_cursor: int,
        first: Sequence[int],
        quarantined: Sequence[Hashable],
        order: np.ndarray | None = None,
    ) -> None:
        """Go on from a checkpoint: the source order where it stopped, ``first`` submitted first.

        Call before the first job is submitted.  Quarantined UIDs stay quarantined.  ``order``:
        the interrupted pass's order, when the caller computed it already.
        """
        with self.cond:
            self._cursor.restore(
                source_pass=source_pass, source_cursor=source_cursor, first=first, order=order
            )
            named = list(quarantined)
            self._book.restore(named, known=known_in(self._uids, named))

    # ------------------------------------------------------------------ what happened to jobs
    def submitted(self, positions: Sequence[int]) -> None:
        """A job of ``positions`` was submitted."""
        with self.cond:
            self._waiting.numbered(uids_at(self._uids, positions))
            self._bound.sent(len(positions))
            self._tally.submitted(len(positions))

    def finished(self, positions: Sequence[int], outcomes: Sequence[Outcome], *, now: float) -> None:
        """A job returned one outcome per row (see :mod:`~dask_reservoir._worker.calls`)."""
        uids = uids_at(self._uids, positions)
        loaded_seconds: list[float] = []
        loaded_rows: list[list[dict[str, Any]]] = []
        with self.cond:
            book = self._book
            self._bound.done(len(positions))
            self._tally.completed(failed=False)
            self._coverage.tried(np.asarray(positions, dtype=np.int64))
            loaded_at: list[int] = []
            loaded_uids: list[Hashable] = []
            for position, uid, outcome in zip(positions, uids, outcomes, strict=True):
                reported = outcome.uid
                if reported is not uid and not same_uid(reported, uid):
                    self._waiting.dropped(uid)
                    self._failure(uid, "JobError", misreported(reported, uid), "", None)
                elif type(outcome) is RowLoaded:
                    rows, seconds = outcome.rows, outcome.seconds
                    loaded_seconds.append(seconds)
                    loaded_rows.append(rows)
                    self._waiting.arrived(uid, Completed(uid, position, tuple(rows), seconds, now))
                    book.loaded(uid)
                    loaded_at.append(position)
                    loaded_uids.append(uid)
                else:
                    failed = cast(RowFailed, outcome)
                    self._waiting.dropped(uid)
                    self._failure(uid, failed.exc_type, failed.message, failed.traceback, failed.exception)
            if loaded_seconds:
                counts = np.fromiter(map(len, loaded_rows), np.int64, count=len(loaded_rows))
                self._coverage.loaded(np.asarray(loaded_at, dtype=np.int64), loaded_uids, counts)
                self._tally.loaded(loaded_seconds)
                self._bound.observe_rows(loaded_seconds, loaded_rows)
            self.cond.notify_all()

    def finished_chunk(self, positions: Sequence[int], chunk: ChunkLoaded, *, now: float) -> None:
        """A job returned its rows as one column block (``batched=True``, or a row function's rows packed).

        One row per UID: the rows wait as one :class:`~dask_reservoir._core.blocks.CompletedBlock`;
        else each UID's entry refers to its rows in the block.
        """
        uids = uids_at(self._uids, positions)
        done = None if self._waiting.deterministic else chunk_block(uids, positions, chunk, now=now)
        items = None
        if done is None:
            items = chunk_entries(uids, positions, chunk, now=now)
            if items is None:  # rows in another order than submitted: nothing can be trusted
                self.finished(positions, as_rows(chunk), now=now)
                return
        with self.cond:
            self._bound.done(len(positions))
            self._tally.completed(failed=False)
            at = np.asarray(positions, dtype=np.int64)
            self._coverage.tried(at)
            self._coverage.loaded(at, uids, chunk.counts)
            self._book.loaded_chunk(uids)
            if done is not None:  # the usual case: the task's rows wait as one block
                self._waiting.arrived_block(done)
            else:
                self._waiting.arrived_chunk(uids, cast(list[Completed], items))
            self._tally.loaded_chunk(len(uids), chunk.seconds)
            self._bound.observe_block(chunk.seconds, chunk.block, len(uids))
            self.cond.notify_all()

    def failed(self, positions: Sequence[int], exc: BaseException, text: str) -> None:
        """A whole job failed (its task raised, ``KilledWorker``, ...)."""
        with self.cond:
            self._bound.done(len(positions))
            self._tally.completed(failed=True)
            self._coverage.tried(np.asarray(positions, dtype=np.int64))
            for position in positions:
                uid = self._uids[position]
                self._waiting.dropped(uid)
                self._failure(uid, type(exc).__name__, str(exc), text, exc)
            self.cond.notify_all()

    def cancelled(self, positions: Sequence[int]) -> None:
        """A job still in flight was cancelled because the reservoir closes."""
        with self.cond:
            self._bound.done(len(positions))
            self._tally.cancelled(len(positions))
            for position in positions:
                self._waiting.arrived(self._uids[position], None)
            self.cond.notify_all()

    def cached(self, counts: tuple[int, int, int, int]) -> None:
        """A task's persistent-tier counts came back: (hits, misses, bytes read, bytes written)."""
        with self.cond:
            self._tally.cached(counts)

    def set_worker_threads(self, threads: int) -> None:
        """The cluster now has ``threads`` worker threads: the default bound follows it.

        An explicit ``max_rows`` never moves (auto-sized tasks follow the threads within
        it); 0 threads (no worker yet) counts as one.
        """
        with self.cond:
            if self._bound.set_threads(threads):
                self.cond.notify_all()

    def set_workers(self, workers: int, *, lost: int = 0) -> None:
        """The cluster has ``workers`` workers now; ``lost`` of those seen before have left it."""
        with self.cond:
            self._tally.set_workers(workers, lost=lost)

    def rerun(self, rows: int) -> None:
        """Dask runs ``rows`` submitted rows again: the worker running them (or holding their result) left."""
        with self.cond:
            self._tally.rerun(rows)

    def rejected(self, uid: Hashable, exc: BaseException, position: int | None = None) -> None:
        """A loaded entry could not be stored (``StoreError``): a failure of its UID.

        The row no longer counts as loaded; the failure counts towards quarantine.
        ``position``: the UID's source position, when the caller knows it.
        """
        with self.cond:
            self._book.rejected(uid, exc)
            self._tally.rejected()
            where = position_in(self._uids, uid) if position is None else position
            if where is not None:
                self._coverage.unloaded(where)
            self.cond.notify_all()

    def requeued(self, positions: Sequence[int]) -> None:
        """A job was cancelled under us or its result never came: submit its rows again."""
        with self.cond:
            self._bound.done(len(positions))
            self._tally.requeued(len(positions))
            for position in positions:
                self._waiting.dropped(self._uids[position])  # it goes again, later in the order
                self._cursor.requeue((position,))

    def _failure(
        self, uid: Hashable, exc_type: str, message: str, text: str, exc: BaseException | None
    ) -> None:
        """A submitted row of ``uid`` failed; ``cond`` held."""
        self._tally.row_failed()
        self._book.failed(uid, exc_type, message, text, exc)

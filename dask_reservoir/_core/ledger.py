"""The runner's bookkeeping: which rows are out, what waits, what failed, what to submit next.

Plain synchronous state behind one ``threading.Condition`` (the runner thread
writes, consumers read and take); no dask, no thread of its own.  Tested
without a cluster in ``tests/test_ledger.py``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import BlockRow, ChunkLoaded, as_rows, gc_paused
from dask_reservoir._core.checkpoint import order_digest
from dask_reservoir._core.order import pass_order
from dask_reservoir._core.records import (
    Completed,
    FailureRecord,
    Outcome,
    RowFailed,
    RowLoaded,
    RunnerCounters,
)
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.sizing import ROW_OVERHEAD_BYTES, TaskSizer, mean_row_bytes
from dask_reservoir._core.uid_index import same_uid
from dask_reservoir.errors import JobError

__all__ = [
    "MIN_TASKS_IN_FLIGHT",
    "Completed",
    "Ledger",
    "RunnerCounters",
    "default_bound",
    "pass_order",
    "tasks_in_flight",
]

logger = logging.getLogger("dask_reservoir")

RECENT_LOADS = 1000
"""Rows whose load time feeds the percentiles of ``stats()``."""

MIN_TASKS_IN_FLIGHT = 8
"""Fewest tasks the default bound keeps out (in flight, or finished and not yet taken).

dask adds 15-20 ms of latency to each task (its batched sends), so a few tasks
in flight cap the rate: one-row tasks reach about 170 tasks/s with 2 in flight,
470 with 8 and the plateau of about 550-650 with 32 (``shared/notes/dask.md``).
The default bound holds ``max(2 x worker threads, MIN_TASKS_IN_FLIGHT)`` tasks,
so one-row tasks at the start, before tasks are sized, and slow rows that stay
one per task keep the workers busy; packed tasks need no more.
"""


def tasks_in_flight(threads: int) -> int:
    """Tasks the default bound keeps out for a cluster of ``threads`` worker threads.

    Examples
    --------
    >>> tasks_in_flight(1), tasks_in_flight(4), tasks_in_flight(16)
    (8, 8, 32)
    """
    return max(2 * threads, MIN_TASKS_IN_FLIGHT)


def default_bound(rows_per_job: int, threads: int, capacity: int | None) -> int:
    """The default back-pressure bound, in source rows.

    ``tasks_in_flight(threads)`` tasks of ``rows_per_job`` rows, but no more rows than
    the reservoir holds (``capacity``): entries waiting beyond it would evict each
    other at the next ingestion, loaded for nothing, and each ingestion would bring
    more than one reservoir's worth.  At least two tasks, so that one loads while
    the results of the other wait.

    Examples
    --------
    >>> default_bound(1, 2, None), default_bound(75, 2, 8192), default_bound(512, 2, 1000)
    (8, 600, 1024)
    >>> default_bound(1, 2, 4)  # a reservoir of 4 entries
    4
    """
    wanted = tasks_in_flight(threads) * rows_per_job
    if capacity is not None:
        wanted = min(wanted, capacity)
    return max(2 * rows_per_job, wanted)


def _take(uids: Sequence[Hashable], positions: Sequence[int]) -> list[Hashable]:
    """``[uids[p] for p in positions]``, with one numpy take when ``uids`` is a UidIndex."""
    take = getattr(uids, "take", None)
    return take(positions) if take is not None else [uids[p] for p in positions]


def _chunk_items(
    uids: list[Hashable], positions: Sequence[int], counts: list[int], block: Any, *, share: float, now: float
) -> list[Completed]:
    """One :class:`Completed` per UID of a chunk, its rows referring to the chunk's block."""
    row = tuple.__new__  # BlockRow(block, i), without the named tuple's keyword handling
    if len(block) == len(uids) and all(c == 1 for c in counts):  # one row per UID: the usual case
        return [
            Completed(uid, position, (row(BlockRow, (block, i)),), share, now)
            for i, (uid, position) in enumerate(zip(uids, positions, strict=True))
        ]
    items = []
    start = 0
    for uid, position, count in zip(uids, positions, counts, strict=True):
        rows = tuple(row(BlockRow, (block, i)) for i in range(start, start + count))
        start += count
        items.append(Completed(uid, position, rows, share, now))
    return items


class Ledger:
    """Rows in flight, waiting and failed; the order of submission; the back-pressure bound.

    Parameters
    ----------
    uids : list
        The UID of each source row.
    order : Sampler
        Order of the rows in each pass over the source.
    max_rows : int or None
        Most source rows in flight plus finished-but-not-taken; None: the bound follows
        the cluster and the task size (:func:`default_bound`).
    rows_per_job : int or None
        Rows per task; None sizes tasks to about ``AUTO_TASK_SECONDS`` from measured row
        times (:class:`~dask_reservoir._core.sizing.TaskSizer`), at most as many rows as let two
        tasks per worker thread fit in the bound (``max_rows``, else ``capacity``) and in
        the source.
    auto_bound_threads : int or None
        Worker threads at the start (see :meth:`set_worker_threads`).
    capacity : int or None
        The reservoir's capacity: the default bound holds no more rows (see :func:`default_bound`).
    max_failures_per_uid : int or None
        Failures in a row after which a UID is quarantined.
    collect_errors : bool
        Keep a ``JobError`` per failure for :meth:`pop_error`.
    skip_first_pass : collection
        UIDs not submitted in the first pass (their entries are loaded already).
    rank, world_size : int
        Submit only this rank's shard of each pass (:mod:`~dask_reservoir._core.shards`).
    deterministic : bool
        Finished rows wait in submission order: a row finished early is held back until
        every row submitted before it finished (or failed), so takers see the same order
        whatever the workers' timing.

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
        auto_bound_threads: int | None = None,
        capacity: int | None = None,
        max_failures_per_uid: int | None = None,
        collect_errors: bool = False,
        skip_first_pass: Sequence[Hashable] = (),
        rank: int = 0,
        world_size: int = 1,
        deterministic: bool = False,
    ) -> None:
        self.cond = threading.Condition()
        self._rank, self._world_size = rank, world_size
        self._deterministic = deterministic
        self._seq = 0  # sequence number of the next row submitted
        self._seq_of: dict[Hashable, int] = {}  # UID -> sequence number of its last submission
        self._held: dict[int, Completed | None] = {}  # deterministic: finished out of order (None: no entry)
        self._release_next = 0  # deterministic: the next sequence number to release
        self._uids = uids
        self._order_sampler = order
        self._fixed_bound = max_rows
        self._threads = max(1, auto_bound_threads or 1)
        self._capacity = capacity
        self._sizer = TaskSizer(1) if rows_per_job is None else None
        self._rows_per_job = 1 if rows_per_job is None else rows_per_job
        self._max_failures = max_failures_per_uid
        self._collect_errors = collect_errors
        self._skip_first_pass = set(skip_first_pass)
        self._waiting: deque[Completed] = deque()
        self._shipped = 0  # taken by ship(), not yet acknowledged: still within the bound
        self._outstanding: set[Hashable] = set()  # in flight or waiting
        self._retry: deque[int] = deque()  # positions to submit first
        self._failures: dict[Hashable, FailureRecord] = {}
        self._quarantined: dict[Hashable, FailureRecord] = {}
        self._errors: deque[JobError] = deque()
        self._tried: set[Hashable] = set()
        self._loaded: set[Hashable] = set()
        self._empty: set[Hashable] = set()  # last result had no rows
        self._rejected: set[Hashable] = set()  # a result was loaded but could not be stored
        self._order: np.ndarray = np.empty(0, np.int64)
        self._order_digest: tuple[int, str] | None = None  # (pass, digest of its order), for checkpoints
        self._cursor = 0
        self._pass = 0
        self.jobs_in_flight = 0
        self.rows_in_flight = 0
        self.status = "running"
        self.fatal: BaseException | None = None
        self.closed = False
        self._jobs_submitted = self._jobs_completed = self._jobs_failed = 0
        self._rows_submitted = self._rows_loaded = self._rows_failed = self._rows_requeued = 0
        self._rows_cancelled = 0
        self._workers = self._workers_lost = self._rows_rerun = 0
        self._load_total = 0.0
        self._load_count = 0
        self._recent_loads: deque[float] = deque(maxlen=RECENT_LOADS)

    # ------------------------------------------------------------------ consumer side
    def take(self, limit: int | None = None) -> list[Completed]:
        """Remove and return up to ``limit`` waiting entries, oldest first."""
        with self.cond:
            n = len(self._waiting) if limit is None else min(limit, len(self._waiting))
            taken = [self._waiting.popleft() for _ in range(n)]
            for item in taken:
                self._outstanding.discard(item.uid)
        return taken

    def ship(self, limit: int | None = None) -> list[Completed]:
        """Like :meth:`take`, but the entries stay counted in the bound until :meth:`acknowledge`.

        The loader process ships entries to the consumer's process before it takes them
        (see :mod:`~dask_reservoir._runtime.loader.parent`): they still occupy the bound, and their UIDs
        are not submitted again, until the consumer says it took them.
        """
        with self.cond:
            n = len(self._waiting) if limit is None else min(limit, len(self._waiting))
            shipped = [self._waiting.popleft() for _ in range(n)]
            self._shipped += n
        return shipped

    def acknowledge(self, uids: Sequence[Hashable]) -> None:
        """The consumer took these shipped entries (or dropped them): free their room in the bound."""
        with self.cond:
            self._shipped = max(0, self._shipped - len(uids))
            for uid in uids:
                self._outstanding.discard(uid)
            self.cond.notify_all()

    def has_waiting(self) -> bool:
        """Whether finished entries wait to be taken."""
        with self.cond:
            return bool(self._waiting)

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""
        with self.cond:
            if not self._waiting and not self._errors and self.fatal is None and not self.closed:
                self.cond.wait(timeout=max(0.0, timeout))

    def pop_error(self) -> JobError | None:
        """The oldest failure not yet reported, or None (kept only with ``collect_errors=True``).

        One at a time: each ``iter()``/``next()`` of an ``on_error="raise"`` reservoir
        raises the next one, so none is dropped.
        """
        with self.cond:
            return self._errors.popleft() if self._errors else None

    def release_quarantine(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Submit quarantined UIDs again (all when ``uids`` is None); return those released.

        Their count of failures in a row starts again from zero.  UIDs that are not
        quarantined are ignored.
        """
        with self.cond:
            wanted = list(self._quarantined) if uids is None else [u for u in uids if u in self._quarantined]
            wanted = list(dict.fromkeys(wanted))  # a UID named twice is released once
            positions = {u: i for i, u in enumerate(self._uids) if u in set(wanted)} if wanted else {}
            for uid in wanted:
                del self._quarantined[uid]
                self._rejected.discard(uid)
                record = self._failures.get(uid)
                if record is not None:
                    self._failures[uid] = replace(record, consecutive=0)
                if uid in positions:
                    self._retry.append(positions[uid])
            if wanted:
                logger.info("dask_reservoir: released %d UIDs from quarantine", len(wanted))
                self.cond.notify_all()
            return wanted

    def counters(self) -> RunnerCounters:
        """A consistent copy of the counters."""
        with self.cond:
            return RunnerCounters(
                jobs_submitted=self._jobs_submitted,
                rows_submitted=self._rows_submitted,
                rows_loaded=self._rows_loaded,
                rows_requeued=self._rows_requeued,
                jobs_completed=self._jobs_completed,
                jobs_failed=self._jobs_failed,
                rows_failed=self._rows_failed,
                jobs_in_flight=self.jobs_in_flight,
                rows_in_flight=self.rows_in_flight,
                entries_waiting=len(self._waiting) + sum(1 for item in self._held.values() if item),
                uids_tried=len(self._tried),
                uids_loaded=len(self._loaded),
                source_passes=self._pass - (1 if self._cursor < len(self._order) else 0),
                rows_cancelled=self._rows_cancelled,
                failures=tuple(self._failures.values()),
                quarantined={u: self._failures.get(u, r) for u, r in self._quarantined.items()},
                unloadable=frozenset(self._quarantined) | (self._empty - self._loaded),
                status=self.status,
                workers=self._workers,
                workers_lost=self._workers_lost,
                rows_rerun=self._rows_rerun,
            )

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last ``RECENT_LOADS`` rows loaded."""
        with self.cond:
            return list(self._recent_loads)

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time of ``function_to_run`` per source row."""
        return self._load_total / self._load_count if self._load_count else 0.0

    @property
    def rows_per_job(self) -> int:
        """Source rows per task now (it changes with ``rows_per_job="auto"``)."""
        return self._rows_per_job

    @property
    def max_rows(self) -> int:
        """The back-pressure bound now, in source rows."""
        if self._fixed_bound is not None:
            return self._fixed_bound
        return default_bound(self._rows_per_job, self._threads, self._capacity)

    def _task_limit(self) -> int:
        """Most rows of an auto-sized task: two tasks per worker thread fit in the bound and the source.

        Two tasks per thread keep each worker busy while the result of its previous
        task travels back; more, smaller tasks would only add dask's per-task cost.
        A small source is not packed into fewer tasks than that (3 rows on 2 workers
        go as 3 tasks, not as 2 + 1 with the last held back for a full job).
        """
        bound = self._capacity if self._fixed_bound is None else self._fixed_bound
        rows = len(self._uids) if bound is None else min(bound, len(self._uids))
        return max(1, rows // (2 * self._threads))

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
            self._held.clear()
            self._shipped = 0
            self._outstanding.clear()
            self.cond.notify_all()

    # ------------------------------------------------------------------ what to submit
    def next_job(self) -> list[int]:
        """Positions of the next job, or [] when the bound or the rule says to wait.

        Full jobs only: one task per ``rows_per_job`` freed rows, not one per freed row.
        A shorter job goes only when nothing is in flight or waiting (a source smaller
        than ``rows_per_job``, say).
        """
        with self.cond:
            k = max(1, min(self._rows_per_job, len(self._uids) - len(self._quarantined)))
            if self.max_rows - self.rows_in_flight - len(self._waiting) - self._shipped - len(self._held) < k:
                return []
            positions = self._next_positions(k)
            if positions and len(positions) < k and (self.jobs_in_flight or self._waiting or self._shipped):
                for p in reversed(positions):  # hold them: wait for a full job
                    self._outstanding.discard(self._uids[p])
                    self._retry.appendleft(p)
                return []
            return positions

    def _next_positions(self, limit: int) -> list[int]:
        n = len(self._uids)
        uids = self._uids
        out: list[int] = []
        while self._retry and len(out) < limit:
            pos = self._retry.popleft()
            if self._deterministic and uids[pos] in self._outstanding and uids[pos] not in self._quarantined:
                self._retry.appendleft(pos)  # its earlier load is not taken yet: wait, keep the order
                return out
            if uids[pos] not in self._outstanding and uids[pos] not in self._quarantined:
                out.append(pos)
                self._outstanding.add(uids[pos])
        scanned = 0
        while len(out) < limit and scanned < n:
            if self._cursor >= len(self._order):
                self._order = self._pass_order(self._pass)
                self._pass += 1
                self._cursor = 0
                if not len(self._order):
                    break
            # the UIDs of the next candidates at once (one numpy take, not one lookup per row)
            window = self._order[self._cursor : self._cursor + min(limit - len(out), n - scanned)].tolist()
            waiting = False
            for pos, uid in zip(window, _take(uids, window), strict=True):
                self._cursor += 1
                scanned += 1
                if uid in self._quarantined:
                    continue
                if uid in self._outstanding:
                    if self._deterministic:  # wait for it rather than skip it: skipping depends on timing
                        self._cursor -= 1
                        waiting = True
                        break
                    continue
                if self._pass == 1 and uid in self._skip_first_pass:
                    self._tried.add(uid)
                    self._loaded.add(uid)
                    continue
                out.append(pos)
                self._outstanding.add(uid)
            if waiting:
                break
        return out

    def _pass_order(self, pass_number: int) -> np.ndarray:
        """Source positions of pass ``pass_number``, in the source sampler's order (this rank's shard)."""
        return pass_order(self._order_sampler, len(self._uids), pass_number, self._rank, self._world_size)

    def checkpoint(self) -> tuple[int, int, tuple[Hashable, ...], str | None]:
        """:meth:`source_position` and the :func:`~dask_reservoir._core.checkpoint.order_digest` of the pass, at once.

        The digest is of the order of pass ``pass - 1`` (the one the cursor is in), None
        before the first pass; computed once per pass.
        """
        with self.cond:
            source_pass, cursor, pending = self.source_position()
            if source_pass == 0:
                return source_pass, cursor, pending, None
            if self._order_digest is None or self._order_digest[0] != source_pass:
                self._order_digest = (source_pass, order_digest(self._order))
            return source_pass, cursor, pending, self._order_digest[1]

    def source_position(self) -> tuple[int, int, tuple[Hashable, ...]]:
        """``(pass, cursor, pending UIDs)`` for a checkpoint.

        Passes started, the position in the current pass's order, and the UIDs
        submitted but not yet taken (in flight, waiting, or held for a retry).
        """
        with self.cond:
            # submission order (a UID with no number sorts last: every number is below self._seq)
            out = sorted(self._outstanding, key=lambda u: self._seq_of.get(u, self._seq))
            pending = out + [self._uids[p] for p in self._retry]
            return self._pass, self._cursor, tuple(dict.fromkeys(pending))

    def restore(
        self, *, source_pass: int, source_cursor: int, first: Sequence[int], quarantined: Sequence[Hashable]
    ) -> None:
        """Go on from a checkpoint: the source order where it stopped, ``first`` submitted first.

        Call before the first job is submitted.  Quarantined UIDs stay quarantined
        (:meth:`release_quarantine` frees them).
        """
        with self.cond:
            if source_pass > 0:
                self._order = self._pass_order(source_pass - 1)
                self._pass = source_pass
                self._cursor = min(source_cursor, len(self._order))
            self._retry.extend(first)
            known = set(self._uids)
            for uid in quarantined:
                if uid in known:
                    record = FailureRecord(
                        uid, "Quarantined", "quarantined when the checkpoint was saved", "", 0, 0
                    )
                    self._quarantined[uid] = record

    # ------------------------------------------------------------------ what happened to jobs
    def submitted(self, positions: Sequence[int]) -> None:
        """A job of ``positions`` was submitted."""
        with self.cond:
            for uid in _take(self._uids, positions):
                self._seq_of[uid] = self._seq
                self._seq += 1
            if len(self._seq_of) > 4 * (len(self._outstanding) + 16):  # forget rows long gone
                self._seq_of = {u: self._seq_of[u] for u in self._outstanding if u in self._seq_of}
            self.jobs_in_flight += 1
            self.rows_in_flight += len(positions)
            self._jobs_submitted += 1
            self._rows_submitted += len(positions)

    def _job_done(self, positions: Sequence[int]) -> None:
        self.jobs_in_flight -= 1
        self.rows_in_flight -= len(positions)

    def finished(self, positions: Sequence[int], outcomes: Sequence[Outcome], *, now: float) -> None:
        """A job returned one outcome per row (see :mod:`~dask_reservoir._worker.calls`)."""
        uids = _take(self._uids, positions)
        loaded_seconds: list[float] = []
        loaded_rows: list[list[dict[str, Any]]] = []
        with self.cond:
            self._job_done(positions)
            self._jobs_completed += 1
            tried, loaded, empty, failures = (
                self._tried,
                self._loaded,
                self._empty,
                self._failures,
            )
            for position, uid, outcome in zip(positions, uids, outcomes, strict=True):
                tried.add(uid)
                reported = outcome.uid
                if reported is not uid and not same_uid(reported, uid):
                    self._arrived(uid, None)
                    self._outstanding.discard(uid)
                    self._record_failure(
                        uid,
                        "JobError",
                        f"the worker reported UID {reported!r} for the source row of UID {uid!r} "
                        "(row order of the source changed between reads?); the result was dropped",
                        "",
                        None,
                    )
                elif type(outcome) is RowLoaded:
                    rows, seconds = outcome.rows, outcome.seconds
                    loaded_seconds.append(seconds)
                    loaded_rows.append(rows)
                    self._arrived(uid, Completed(uid, position, tuple(rows), seconds, now))
                    if rows:
                        loaded.add(uid)
                        empty.discard(uid)
                    else:
                        empty.add(uid)
                    if failures and uid not in self._rejected:  # a load is no success if it cannot be stored
                        previous = failures.get(uid)
                        if previous is not None and previous.consecutive:
                            failures[uid] = replace(previous, consecutive=0)
                else:
                    failed = cast(RowFailed, outcome)
                    self._arrived(uid, None)
                    self._outstanding.discard(uid)
                    self._record_failure(
                        uid, failed.exc_type, failed.message, failed.traceback, failed.exception
                    )
            if loaded_seconds:
                count = len(loaded_seconds)
                total = sum(loaded_seconds)
                self._rows_loaded += count
                self._load_total += total
                self._load_count += count
                self._recent_loads.extend(loaded_seconds)
                if self._sizer is not None:
                    if (
                        self._sizer.observe_task(total / count, mean_row_bytes(loaded_rows), count)
                        is not None
                    ):
                        self._resize()
            self.cond.notify_all()

    def finished_chunk(self, positions: Sequence[int], chunk: ChunkLoaded, *, now: float) -> None:
        """A vectorized job (``batched=True``) returned its rows as one block (see :mod:`~dask_reservoir._worker.chunks`).

        Each UID's entry refers to its rows in the block (:class:`~dask_reservoir._worker.chunks.BlockRow`),
        whose columns the store writes with one assignment per column.
        """
        uids = _take(self._uids, positions)
        reported = chunk.uids
        if len(reported) != len(uids) or any(
            r is not u and not same_uid(r, u) for r, u in zip(reported, uids, strict=True)
        ):  # rows in another order than submitted: nothing can be trusted
            self.finished(positions, as_rows(chunk), now=now)
            return
        counts = chunk.counts.tolist()
        block = chunk.block
        share = chunk.seconds / max(1, len(uids))
        with gc_paused():
            items = _chunk_items(uids, positions, counts, block, share=share, now=now)
        with self.cond:
            self._job_done(positions)
            self._jobs_completed += 1
            self._tried.update(uids)
            with_rows = [u for u, c in zip(uids, counts, strict=True) if c]
            without = [u for u, c in zip(uids, counts, strict=True) if not c]
            self._loaded.update(with_rows)
            self._empty.difference_update(with_rows)
            self._empty.update(without)
            if self._failures:
                for uid in uids:
                    previous = self._failures.get(uid)
                    if previous is not None and previous.consecutive and uid not in self._rejected:
                        self._failures[uid] = replace(previous, consecutive=0)
            if self._deterministic:
                for uid, item in zip(uids, items, strict=True):
                    self._arrived(uid, item)
            else:
                self._waiting.extend(items)
            count = len(uids)
            self._rows_loaded += count
            self._load_total += chunk.seconds
            self._load_count += count
            self._recent_loads.extend([share] * min(count, RECENT_LOADS))
            if self._sizer is not None and count:
                row_bytes = ROW_OVERHEAD_BYTES + block.nbytes() / max(1, len(block))
                if self._sizer.observe_task(share, row_bytes * (len(block) / count), count) is not None:
                    self._resize()
            self.cond.notify_all()

    def failed(self, positions: Sequence[int], exc: BaseException, text: str) -> None:
        """A whole job failed (its task raised, ``KilledWorker``, ...)."""
        with self.cond:
            self._job_done(positions)
            self._jobs_completed += 1
            self._jobs_failed += 1
            for position in positions:
                uid = self._uids[position]
                self._tried.add(uid)
                self._arrived(uid, None)
                self._outstanding.discard(uid)
                self._record_failure(uid, type(exc).__name__, str(exc), text, exc)
            self.cond.notify_all()

    def cancelled(self, positions: Sequence[int]) -> None:
        """A job still in flight was cancelled because the reservoir closes."""
        with self.cond:
            self._job_done(positions)
            self._rows_cancelled += len(positions)
            for position in positions:
                self._arrived(self._uids[position], None)
            self.cond.notify_all()

    def set_worker_threads(self, threads: int) -> None:
        """The cluster now has ``threads`` worker threads: the default bound follows it.

        An explicit ``max_rows`` never moves (auto-sized tasks follow the threads within
        it); 0 threads (no worker yet) counts as one.
        """
        with self.cond:
            threads = max(1, int(threads))
            if threads != self._threads:
                self._threads = threads
                self._resize()
                self.cond.notify_all()

    def set_workers(self, workers: int, *, lost: int = 0) -> None:
        """The cluster has ``workers`` workers now; ``lost`` of those seen before have left it."""
        with self.cond:
            self._workers = int(workers)
            self._workers_lost += int(lost)

    def rerun(self, rows: int) -> None:
        """Dask runs ``rows`` submitted rows again: the worker running them (or holding their result) left."""
        with self.cond:
            self._rows_rerun += int(rows)

    def rejected(self, uid: Hashable, exc: BaseException) -> None:
        """A loaded entry could not be stored (``StoreError``): a failure of its UID.

        The row stays counted as loaded (it was); the failure counts towards quarantine.
        """
        with self.cond:
            self._loaded.discard(uid)
            self._rejected.add(uid)
            self._record_failure(uid, type(exc).__name__, str(exc), "", exc, count_row=False)
            self.cond.notify_all()

    def requeued(self, positions: Sequence[int]) -> None:
        """A job was cancelled under us or its result never came: submit its rows again."""
        with self.cond:
            self._job_done(positions)
            self._rows_requeued += len(positions)
            for position in positions:
                self._arrived(self._uids[position], None)  # it goes again, later in the order
                self._outstanding.discard(self._uids[position])
                self._retry.append(position)

    def _arrived(self, uid: Hashable, item: Completed | None) -> None:
        """A submitted row finished (``item``) or gave no entry (None); ``cond`` held."""
        if not self._deterministic:
            if item is not None:
                self._waiting.append(item)
            return
        seq = self._seq_of.get(uid)
        if seq is None or seq < self._release_next:  # pragma: no cover - not submitted by us
            if item is not None:
                self._waiting.append(item)
            return
        self._held[seq] = item
        while self._release_next in self._held:
            released = self._held.pop(self._release_next)
            self._release_next += 1
            if released is not None:
                self._waiting.append(released)

    def _resize(self) -> None:
        """``rows_per_job="auto"``: the sizer's task size, within the task limit (``cond`` held)."""
        if self._sizer is None:
            return
        self._rows_per_job = min(self._sizer.rows_per_job, self._task_limit())

    def _record_failure(
        self,
        uid: Hashable,
        exc_type: str,
        message: str,
        text: str,
        exc: BaseException | None,
        *,
        count_row: bool = True,
    ) -> None:
        previous = self._failures.get(uid)
        count = 1 + (previous.count if previous else 0)
        consecutive = 1 + (previous.consecutive if previous else 0)
        record = FailureRecord(uid, exc_type, message, text, count, consecutive)
        self._failures[uid] = record
        if count_row:
            self._rows_failed += 1
        log = logger.warning if count == 1 else logger.debug
        log("dask_reservoir: job for UID %r failed (%d times): %s: %s", uid, count, exc_type, message)
        if self._collect_errors:
            error = JobError(f"function_to_run failed for UID {uid!r}: {exc_type}: {message}", uid=uid)
            error.__cause__ = exc
            self._errors.append(error)
        if (
            self._max_failures is not None
            and consecutive >= self._max_failures
            and uid not in self._quarantined
        ):
            self._quarantined[uid] = record
            logger.warning(
                "dask_reservoir: UID %r quarantined after %d failures in a row; last: %s: %s",
                uid,
                consecutive,
                exc_type,
                message,
            )

"""``AsyncReservoir``: the public class tying source, jobs, store, sampler and collate.

Data flow: source rows -> :mod:`~dask_reservoir._runtime.runner` (dask jobs in the
background) -> waiting entries -> :mod:`~dask_reservoir._core.store` (at each
``iter()``) -> sampler -> :mod:`~dask_reservoir._core.collate` -> batch.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from dask_reservoir._core.blocks import BlockRow, gc_paused, merge_dtypes
from dask_reservoir._core.checkpoint import (
    STATE_FORMAT,
    STATE_VERSION,
    ResumePoint,
    check_state,
    jsonable_uid,
    order_digest,
    read_state,
    uids_digest,
    write_state,
)
from dask_reservoir._core.collate import collate_rows
from dask_reservoir._core.formats import converter, rows_frame, to_frame
from dask_reservoir._core.ingest import minimum_error, single_take, supply_error, take_limit
from dask_reservoir._core.options import ReservoirOptions, validate_options
from dask_reservoir._core.order import epoch_order, pass_order
from dask_reservoir._core.samplers import RandomSampler, Sampler, WeightedSampler, check_sampler
from dask_reservoir._core.shards import rows_per_rank_epoch, shard_positions
from dask_reservoir._core.stats import Performance, ReservoirStats, entry_summary, percentiles, runner_fields
from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._core.subsets import positions_by_values, random_positions
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.cluster import ClientHandle, resolve_client
from dask_reservoir._runtime.lifecycle import Uncopyable, close_in_background, track, untrack
from dask_reservoir._runtime.loader.parent import LoaderProcess, choose_loader
from dask_reservoir._runtime.prefetch import BatchBuilder
from dask_reservoir._runtime.progress import WaitProgress
from dask_reservoir._runtime.runner import WAIT_SLICE, JobRunner, runner_for
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.make import is_dask_frame, make_source
from dask_reservoir._source.pandas_source import Source
from dask_reservoir.errors import ClusterLostError, ReservoirClosedError

__all__ = ["AsyncReservoir", "SequenceAsyncReservoir"]

logger = logging.getLogger("dask_reservoir")

CLOSE_LOCK_SECONDS = 2.0
"""How long close() waits for a consumer in iter() to let go before leaving the entries to GC."""

RECENT_STALLS = 1000
"""Batches whose stall (time in ``iter()`` and ``next()``) feeds the percentiles of ``stats()``."""

WAIT_WARNING_SECONDS = 30.0
"""While ``iter()`` waits for the minimum, a warning with the counters is logged this often."""


class AsyncReservoir(Uncopyable):
    """Load samples on dask workers in the background; iterate batches of what is loaded.

    ``function_to_run(row)`` runs as dask tasks on the rows of ``source``, cycling
    forever.  Finished entries (keyed by UID) enter a bounded reservoir at each
    ``iter()``, the oldest evicted first; each ``iter()`` starts an epoch over a
    snapshot of the reservoir, so after warm-up the loop never waits for loading.

    Parameters
    ----------
    source : pandas.DataFrame or dask.dataframe.DataFrame
        One row per job.  A dask source is not collected: its rows are read on the workers.
    function_to_run : callable
        ``function_to_run(row: dict) -> dict | list[dict] | pandas.DataFrame``, run on the
        workers.  It travels by value (cloudpickle), so it may be defined in ``__main__``
        or a notebook.  An empty list/frame means "nothing for this UID".
    max_reservoir_samples : int
        Capacity of the reservoir, in entries (UIDs).
    min_reservoir_samples : int, keyword-only
        ``iter()`` blocks until the reservoir holds ``min(min_reservoir_samples, rows)`` entries.
    client : None, str or distributed.Client
        None: the default client if any, else an embedded ``LocalCluster`` owned by the
        reservoir; a str: the address of a scheduler (client owned); a ``Client``: used
        as is and never closed here.
    nb_workers : int, optional
        Worker processes of the embedded ``LocalCluster`` (default: CPU count).
    uid_column : str
        Column naming each row; when absent, UIDs are the positions ``0..n-1``.
    max_jobs_at_once : int, optional
        Back-pressure bound: most source rows in flight or finished and waiting to be
        ingested.  Default: ``max(2 x worker threads, 8)`` tasks of ``rows_per_job`` rows
        (dask needs several tasks in flight to hide its per-task latency), at most
        ``max_reservoir_samples`` rows but at least two tasks; it follows the cluster
        and the task size.
    reservoir_sampler : Sampler, optional
        Order of entries in an epoch; default source order (:class:`SequentialSampler`).
    batch_size : int
        Entries per batch.
    drop_last : bool
        Drop a final batch of fewer than ``batch_size`` entries.
    collate_fn : callable, optional
        Called with the list of row dicts of a batch; default :func:`collate_rows`.
    maximum_number_of_samples_per_epoch : int, optional
        Rows yielded per epoch at most.
    max_reservoir_replacement_size : int, optional
        Entries ingested per ``iter()`` at most (None: all waiting).  Not applied while
        the reservoir is below its minimum.
    source_sampler : Sampler, optional
        Order in which source rows are submitted, per pass; default sequential.
    rows_per_job : int or "auto"
        Source rows per dask task.  ``"auto"`` (the default) starts at 1 and, from the
        first finished task on, sizes tasks to run about 75 ms on the workers and return
        at most 8 MiB of arrays, from the measured time and size per row: fast loaders are
        not capped by dask's per-task cost (about 1 ms), slow ones (a row of 75 ms or
        more) stay one row per task.  Tasks stay small enough for the default number of
        them to fit in the bound.
    retries : int
        Retries of a failing row.  With ``rows_per_job=1`` dask retries the task
        (``retries=``) and a row that still fails is a failed job (``jobs_failed``);
        otherwise, the default ``"auto"`` included, each row is retried inside its task
        and one that still fails is a failed row (``rows_failed``) while the task's
        other rows load.
    on_error : {"skip", "raise"}
        "skip": a failed job is logged and recorded in ``stats().failures``, and the UID
        is tried again on the next pass.  "raise": the next ``iter()``/``next()`` raises
        :class:`JobError`, one per failure in order (none is dropped).
    timeout : float or str, optional
        Longest ``iter()`` waits for the minimum; then ``TimeoutError``.  ``JobError``
        comes earlier when the rows that can still load cannot reach the minimum.
    max_failures_per_uid : int or None
        A UID failing this many times in a row is quarantined (no longer submitted;
        see :meth:`release_quarantine`).
    on_cluster_loss : {"raise", "serve"}
        When the client gives up on its scheduler: raise :class:`ClusterLostError` at the
        next ``iter()``/``next()``, or keep serving the loaded entries.
    prefetch_batches : int
        Batches of the current epoch built ahead, in a thread of the reservoir, so that
        ``next()`` hands over a batch already built (while the training step runs).
        0 builds each batch inside ``next()``.  It is one budget for all the iterators
        alive: at most ``prefetch_batches`` batches are built ahead however many there
        are, and when a newer epoch starts, the batches built ahead for the older ones
        are dropped (built again by their next ``next()``).
    max_stale_epochs : int
        An epoch's iterator reads the entries it started with, which keeps them in memory
        (and, once the spare slots are used, pauses the refresh).  An iterator not advanced
        while more than ``max_stale_epochs`` newer epochs start (``iter()`` calls) is
        expired: its entries are released, and its next ``next()`` raises
        :class:`~dask_reservoir.errors.IteratorExpiredError` saying how far behind it is.
        With the default 2, a reference kept by a validation loop and read after one or
        two training epochs still serves its whole epoch, and threads each advancing
        their own epochs are unaffected; an abandoned iterator never stops the refresh
        for more than two epochs.  With ``deterministic=True``, ``iter()`` also expires
        iterators of earlier epochs, oldest first, whose entries leave no room for the
        epoch's exact entries, rather than wait for them forever.
    progress : bool
        Show a tqdm bar (``pip install dask_reservoir[progress]``; plain lines on stderr
        without tqdm) while ``iter()`` waits for the minimum.
    job_timeout : float or str, optional
        Seconds one call of ``function_to_run`` may run on a worker; a longer call is
        abandoned and counted as a failure of its UID (:class:`JobTimeoutError`), and the
        task, so the worker's slot, is freed.  The call itself cannot be interrupted: it
        goes on in a daemon thread of the worker (with the worker's context) until it
        returns; at most 4 such calls run per worker process, then new calls wait.
    loader : {"thread", "process", "auto"}, optional
        Where jobs are submitted and their results received.  ``"thread"``: a thread of
        this process.  ``"process"``: a loader process (a child Python) with its own dask
        client of the same scheduler runs the jobs and ships finished entries here, so
        dask's event loop and (de)serialisation never compete with the training loop for
        this process's GIL; it needs a scheduler reachable by address and a pandas source
        (``ValueError`` otherwise), and starts in about half a second.  ``"auto"``: the
        process where it can be used, else the thread.  None (the default) reads the dask
        config ``dask_reservoir.loader`` (``"thread"`` unless set, e.g. by the environment
        variable ``DASK_DASK_RESERVOIR__LOADER=auto``).  ``stats().loader`` says which runs.
    rank, world_size : int
        Data-parallel training: ``world_size`` reservoirs (one per rank, usually one per
        process, all on one cluster) share the source without talking to each other.  In
        each pass over the source, rank ``rank`` loads only its shard: the rows a
        permutation seeded by the pass number deals to it (:func:`shard_positions`), the
        same on every rank.  Shards are disjoint within a pass and cover the source; they
        change from pass to pass, so every rank meets every UID over time.  With
        ``world_size > 1`` every epoch of every rank serves exactly ``R`` entries, ``R =
        maximum_number_of_samples_per_epoch`` if given, else ``min_reservoir_samples`` (at
        most the source's rows): ``iter()`` waits until the reservoir holds ``R`` entries,
        and the sampler's order is cut to ``R`` (or repeated up to ``R``), so every rank
        yields ``len(iter(r))`` = ``ceil(R / batch_size)`` batches (``floor`` with
        ``drop_last``) and a collective in the training step never waits for a rank whose
        epoch ended early.  Reservoirs made by :meth:`subsample`/:meth:`subsample_uids` are
        not sharded.

    deterministic : bool
        The content and order of epoch ``k`` depend only on the samplers' seeds and
        ``k``, not on worker count or timing: every ``iter()`` ingests exactly the next
        ``max_reservoir_replacement_size`` entries (required) in submission order, waiting
        for them (the first epoch: the minimum); a result that arrives before those
        submitted earlier is held back.  It holds for a deterministic ``function_to_run``
        that does not fail (a retried row goes later in the order) and no task lost by
        the cluster.  It costs the waits: ``iter()`` blocks until those exact entries are
        loaded (see the benchmark's W1 row).

    batch_format : {"numpy", "pandas", "torch"}
        What a batch is: the collated ``dict[str, numpy.ndarray]`` (default), a pandas
        ``DataFrame`` with one row per sample (arrays of more than one dimension in an
        ``object`` column, one array per row), or the dict with numeric arrays as torch
        tensors (``pip install dask_reservoir[torch]``).  Converted where the batch is
        built (ahead, in the reservoir's batch thread).  Not with a ``collate_fn``.
    batched : bool
        Vectorized ``function_to_run``: it receives a ``pandas.DataFrame`` of up to
        ``rows_per_job`` source rows (the UID column included, the source's dtypes)
        and returns a ``DataFrame``, or a dict of equal-length arrays, of produced rows,
        each carrying in the UID column the source UID it belongs to (0..n rows per
        UID, only UIDs of the chunk).  Results travel and are stored as columns; pandas
        extension dtypes (categorical, string, nullable, time-zone aware) come back in
        ``batch_format="pandas"`` batches and :meth:`to_pandas`.  A chunk whose call
        raises (after ``retries``) or returns something else fails all its UIDs with a
        :class:`JobError` naming the function, the UIDs and what was wrong.  With
        ``rows_per_job="auto"``, chunks are sized from the measured cost per row.

    Examples
    --------
    >>> import pandas as pd
    >>> from distributed import Client, LocalCluster
    >>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
    >>> client = Client(cluster, set_as_default=False)
    >>> def load(row):
    ...     return {"x": row["value"] * 2}
    >>> frame = pd.DataFrame({"value": range(10)})
    >>> with AsyncReservoir(frame, load, 10, min_reservoir_samples=10, client=client, batch_size=4) as r:
    ...     sizes = [len(batch["x"]) for batch in r]
    ...     stats = r.stats()
    >>> sizes, stats.reservoir_size
    ([4, 4, 2], 10)
    >>> client.close(); cluster.close()
    """

    def __init__(
        self,
        source: Any,
        function_to_run: Callable[[dict[str, Any]], Any],
        max_reservoir_samples: int,
        *,
        min_reservoir_samples: int = 1,
        client: Any = None,
        nb_workers: int | None = None,
        uid_column: str = "sample_uid",
        max_jobs_at_once: int | None = None,
        reservoir_sampler: Sampler | None = None,
        batch_size: int = 1,
        drop_last: bool = False,
        collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
        maximum_number_of_samples_per_epoch: int | None = None,
        max_reservoir_replacement_size: int | None = None,
        source_sampler: Sampler | None = None,
        rows_per_job: int | str = "auto",
        retries: int = 0,
        on_error: str = "skip",
        timeout: float | str | None = None,
        max_failures_per_uid: int | None = 3,
        on_cluster_loss: str = "raise",
        job_timeout: float | str | None = None,
        progress: bool = False,
        prefetch_batches: int = 2,
        max_stale_epochs: int = 2,
        loader: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        deterministic: bool = False,
        batch_format: str = "numpy",
        batched: bool = False,
    ) -> None:
        self._closed = True  # until fully built, so __del__ and close() are no-ops
        given = locals()
        options = validate_options(**{f.name: given[f.name] for f in fields(ReservoirOptions)})
        if not callable(function_to_run):
            raise TypeError(
                f"function_to_run must be callable, got {type(function_to_run).__name__}: {function_to_run!r}"
            )
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}: {progress!r}")
        self._progress = progress
        if isinstance(prefetch_batches, bool) or not isinstance(prefetch_batches, int):
            raise TypeError(
                f"prefetch_batches must be an int, got {type(prefetch_batches).__name__}: {prefetch_batches!r}"
            )
        if prefetch_batches < 0:
            raise ValueError(
                f"prefetch_batches must be >= 0 (0: build each batch in next()), got {prefetch_batches}"
            )
        self._prefetch = prefetch_batches
        if isinstance(max_stale_epochs, bool) or not isinstance(max_stale_epochs, int):
            raise TypeError(
                f"max_stale_epochs must be an int, got {type(max_stale_epochs).__name__}: {max_stale_epochs!r}"
            )
        if max_stale_epochs < 0:
            raise ValueError(
                f"max_stale_epochs must be >= 0 (newer epochs an iterator may fall behind), got {max_stale_epochs}"
            )
        self._max_stale = max_stale_epochs
        samplers = (
            check_sampler(reservoir_sampler, "reservoir_sampler"),
            check_sampler(source_sampler, "source_sampler"),
        )
        # a pandas source is checked before any cluster is started
        table = make_source(source, uid_column) if not is_dask_frame(source) else None
        handle = resolve_client(client, options.nb_workers)
        try:
            if table is None:
                table = make_source(source, uid_column, scheduler=handle.client)
            self._start(
                source=table,
                function_to_run=function_to_run,
                options=options,
                samplers=samplers,
                handle=handle,
                preload=(),
            )
        except BaseException:
            if isinstance(table, DaskSource):
                table.release()  # its persisted partitions, before the client goes
            handle.close()
            raise

    # ------------------------------------------------------------------ construction
    def _start(
        self,
        *,
        source: Source,
        function_to_run: Callable[[dict[str, Any]], Any],
        options: ReservoirOptions,
        samplers: tuple[Sampler, Sampler],
        handle: ClientHandle,
        preload: Iterable[Entry],
        dtypes: dict[str, Any] | None = None,
        child: bool = False,
    ) -> None:
        if options.world_size > len(source):
            raise ValueError(
                f"world_size={options.world_size} is larger than the source's {len(source)} rows: "
                "each rank needs at least one row in every pass"
            )
        self._source = source
        self._function = function_to_run
        self._options = options
        self._given_samplers = samplers  # as given: children bind them to their own source
        self._reservoir_sampler, self._source_sampler = (
            _bind(sampler, name, source, child=child)
            for sampler, name in zip(samplers, ("reservoir_sampler", "source_sampler"), strict=True)
        )
        self._drawable, self._undrawable = self._drawable_rows(refuse=not child)
        self._handle = handle
        self._store = ReservoirStore(
            options.max_reservoir_samples,
            uid_column=options.uid_column,
            uid_type=source.uid_index.stored_type,  # batches keep the source UID column's dtype
            # a row the default collate could not stack with the others fails its UID (batches of
            # one entry never stack entries: volumes of varying shapes, one per batch, are fine)
            stackable=options.collate_fn is None and options.batch_size > 1,
        )
        self._lock = threading.RLock()  # epochs; held by iter() while it waits
        self._throttled = False  # ingestion paused by entries pinned by live iterators
        self._counter_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._children: weakref.WeakSet[AsyncReservoir] = weakref.WeakSet()
        self._epochs = 0  # epochs started
        self._epoch_number = 0  # the next epoch's number for the samplers (set_epoch)
        self._exact_fill: int | None = None  # deterministic: entries the next iter() ingests, if not the cap
        self._dtypes: dict[str, Any] = dict(dtypes or {})  # batched: pandas dtypes of produced columns
        self._batches_served = 0
        self._samples_served = 0
        self._wait_seconds = 0.0  # in iter() and next()
        self._iter_since: dict[object, float] = {}  # iter() calls going on: when each started
        self._minimum_wait_seconds = 0.0  # in iter(), waiting for the minimum
        self._stalls: deque[float] = deque(maxlen=RECENT_STALLS)
        self._builder = BatchBuilder(name=f"dask_reservoir-batches-{id(self):x}", max_ahead=self._prefetch)
        self._iterators: list[weakref.ref[BatchIterator]] = []  # epochs not known to be over, oldest first
        self._iterators_lock = threading.Lock()
        self._next_order: tuple[int, int, Future[np.ndarray]] | None = None
        self._warned_lost = False
        self._address = handle.address
        preloaded = []
        for entry in preload:
            if self._store.room() <= 0:
                break
            self._store.put(entry)
            preloaded.append(entry.uid)
        self.perf_sending = Performance()
        self.perf_receiving = Performance()
        self._loader, self._loader_reason = choose_loader(options.loader, handle, source)
        self._runner: JobRunner | LoaderProcess = self._make_runner(skip_first_pass=preloaded)
        self._closed = False
        track(self)
        self.initializer()

    def _drawable_rows(self, *, refuse: bool) -> tuple[np.ndarray | None, int]:
        """Which source rows the source sampler can draw (None: all) and how many it never draws.

        Raises
        ------
        ValueError
            With ``refuse``, when the rows it can draw are fewer than the minimum ``iter()``
            waits for.  A subset is not refused (its entries may be read with
            :meth:`to_pandas` only); its ``iter()`` raises :class:`JobError` instead.
        """
        sampler, n = self._source_sampler, len(self._source)
        never_drawn = getattr(sampler, "never_drawn", None)
        never = np.unique(np.asarray(never_drawn(n), dtype=np.int64)) if callable(never_drawn) else ()
        if not len(never):
            return None, 0
        drawable = np.ones(n, dtype=bool)
        drawable[never] = False
        count, required = int(drawable.sum()), self._required()
        if refuse and count < required:
            column = getattr(sampler, "column", None)
            which = (
                "the others it never draws"
                if not isinstance(sampler, WeightedSampler)
                else (
                    f"those of non-zero weight in column {column!r}" if column else "those of non-zero weight"
                )
            )
            raise ValueError(
                f"source_sampler={sampler!r} can draw only {count} of the {n} source rows ({which}), "
                f"fewer than the minimum {required} that iter() waits for "
                f"(min_reservoir_samples={self._options.min_reservoir_samples}): the minimum could never be "
                "reached; give more rows a weight, or a smaller min_reservoir_samples"
            )
        return drawable, n - count

    def _make_runner(
        self,
        *,
        skip_first_pass: Sequence[Hashable] = (),
        resume: ResumePoint | None = None,
        order: Sampler | None = None,
    ) -> JobRunner | LoaderProcess:
        make_runner = LoaderProcess if self._loader == "process" else runner_for
        return make_runner(
            self._handle,
            self._source,
            self._function,
            self._options,
            self._source_sampler if order is None else order,
            skip_first_pass=skip_first_pass,
            perf_sending=self.perf_sending,
            perf_receiving=self.perf_receiving,
            resume=resume,
        )

    @property
    def max_jobs_at_once(self) -> int:
        """The back-pressure bound now, in source rows (it follows ``rows_per_job="auto"``)."""
        return self._runner.ledger.max_rows

    @property
    def rows_per_job(self) -> int:
        """Source rows per dask task now."""
        return self._runner.ledger.rows_per_job

    def initializer(self) -> None:
        """Start the background jobs if they are not running yet (idempotent).

        Called by the constructor; kept for trw compatibility.
        """
        self._check_open()
        self._runner.start()

    def fill_queue(self) -> None:
        """Top up the jobs in flight now, up to ``max_jobs_at_once`` (trw compatibility).

        Jobs are topped up continuously in the background; this only wakes the runner.
        """
        self._check_open()
        self._runner.poke()

    # ------------------------------------------------------------------ checks
    def _check_open(self) -> None:
        if self._closed:
            raise ReservoirClosedError(f"this {type(self).__name__} is closed; it cannot be used any more")

    def _check_usable(self) -> None:
        """Raise what the consumer must see now: closed, runner crash, job error."""
        self._check_open()
        try:
            self._runner.check()
        except ClusterLostError as exc:
            if self._options.on_cluster_loss == "raise":
                raise
            if not self._warned_lost:
                self._warned_lost = True
                logger.warning("dask_reservoir: %s; serving the %d loaded entries", exc, len(self._store))
        if self._options.on_error == "raise":
            error = self._runner.ledger.pop_error()
            if error is not None:
                raise error

    # ------------------------------------------------------------------ ingestion
    def _required(self) -> int:
        required = min(self._options.min_reservoir_samples, len(self._source))
        if self._options.world_size > 1:
            return max(required, self._rank_epoch_rows())
        return required

    def _rank_epoch_rows(self) -> int:
        return rows_per_rank_epoch(
            min_reservoir_samples=self._options.min_reservoir_samples,
            maximum_number_of_samples_per_epoch=self._options.maximum_number_of_samples_per_epoch,
            n_source=len(self._source),
            capacity=self._options.max_reservoir_samples,
        )

    def shard_uids(self, pass_number: int) -> list[Hashable]:
        """The UIDs this rank loads in pass ``pass_number`` over the source (all with one rank).

        Examples
        --------
        >>> from dask_reservoir._core.shards import shard_positions
        >>> [shard_positions(6, 0, rank, 2).tolist() for rank in (0, 1)]
        [[1, 3, 4], [0, 2, 5]]
        """
        if isinstance(pass_number, bool) or not isinstance(pass_number, (int, np.integer)) or pass_number < 0:
            raise ValueError(f"pass_number must be an int >= 0, got {pass_number!r}")
        uids = self._source.uids
        positions = shard_positions(len(uids), int(pass_number), self._options.rank, self._options.world_size)
        return [uids[p] for p in positions]

    def _ingest(self, *, capped: bool) -> int:
        """Move waiting entries into the store, as :func:`~dask_reservoir._core.ingest.take_limit` says."""
        cap = self._options.max_reservoir_replacement_size
        required = self._required()
        counted = 0
        moved = 0
        while True:
            size, room = len(self._store), self._store.room()
            limit = take_limit(
                size=size, required=required, room=room, capped=capped, cap=cap, counted=counted
            )
            self._note_throttle(room)
            if limit == 0:
                break
            items = self._runner.take(limit)
            if not items:
                break
            self._put(items)
            moved += len(items)
            if size >= required:
                counted += len(items)
            if single_take(size=size, required=required, capped=capped, cap=cap):
                break
        return moved

    def _put(self, items: list[Any]) -> int:
        """Put taken entries into the store; one that cannot be stored is that UID's failure.

        Returns the entries stored (an empty result stores nothing).
        """
        last = None
        for item in items:  # the pandas dtypes of batched results, to restore in tables
            block = item.rows[0].block if item.rows and type(item.rows[0]) is BlockRow else None
            if block is not None and block is not last:
                last = block
                merge_dtypes(self._dtypes, block.dtypes)
        with gc_paused():
            entries = [
                Entry(i.uid, i.position, i.rows, i.finished_at, i.load_seconds) for i in items if i.rows
            ]
            rejected = self._store.put_many(entries)
        for entry, exc in rejected:
            self._runner.ledger.rejected(entry.uid, exc)
        return len(entries) - len(rejected)

    def _note_throttle(self, room: int) -> None:
        """Log once per episode that live iterators pin the store's memory bound."""
        throttled = room <= 0 and self._runner.ledger.has_waiting()
        if throttled and not self._throttled:
            logger.warning(
                "dask_reservoir: %d evicted entries are still read by %d live iterators (epochs not "
                "finished or not dropped): new results wait until they end or expire (max_stale_epochs), "
                "so memory stays bounded",
                self._store.pinned_retired,
                self._store.live_snapshots,
            )
        self._throttled = throttled

    def _ingest_exact(self) -> None:
        """``deterministic=True``: ingest exactly the next entries in submission order, waiting for them.

        The first epoch ingests the minimum, a resumed run its former members plus the
        cap, every other epoch ``max_reservoir_replacement_size``.  Waits like the
        minimum: up to ``timeout``, raising what stops the runner.
        """
        cap = cast(int, self._options.max_reservoir_replacement_size)  # checked by validate_options
        wanted = (
            self._exact_fill if self._exact_fill is not None else (cap if self._epochs else self._required())
        )
        timeout = self._options.timeout
        start = time.monotonic()
        warned = start
        got = 0
        finished = False
        try:
            while True:
                # the exact entries, and never an epoch below the minimum (a reload replaces its entry)
                short = max(wanted - got, self._required() - len(self._store))
                if short <= 0:
                    break
                self._check_usable()
                room = self._store.room()
                items = self._runner.take(min(short, room)) if room > 0 else []
                if items:
                    got += self._put(items)  # entries stored: empty results and rejections do not count
                    continue
                if room <= 0 and self._runner.ledger.has_waiting() and self._expire_for_room():
                    continue  # never wait for an iterator that the consumer may never advance
                self._note_throttle(room)
                if len(self._store) < self._required():
                    error = self._minimum_error(self._required())
                else:  # the minimum is there: the next entries can still come from any row that loads
                    error = self._supply_error(wanted, got)
                if error is not None:
                    raise error
                now = time.monotonic()
                elapsed = now - start
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError(
                        f"iter() waited {timeout:g} s (timeout) for the next {wanted} entries in submission "
                        f"order (deterministic=True) and got {got}; {self.stats().summary()}"
                    )
                if now - warned >= WAIT_WARNING_SECONDS:
                    warned = now
                    logger.warning(
                        "dask_reservoir: iter() has waited %.0f s for the next %d entries in submission order "
                        "(deterministic=True) and got %d: %s",
                        elapsed,
                        wanted,
                        got,
                        self.stats().summary(),
                    )
                self._runner.wait(WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed))
            finished = True
        finally:
            # an iter() that raised leaves the rest of its entries to the next one, so the
            # epochs after a JobError or a TimeoutError ingest what they would have
            self._exact_fill = None if finished or got >= wanted else wanted - got
            with self._counter_lock:
                self._minimum_wait_seconds += time.monotonic() - start

    def _minimum_error(self, required: int) -> BaseException | None:
        """The error to raise when the rows that can still load cannot reach ``required``."""
        counters = self._runner.ledger.counters()
        unloadable = self._drawn(counters.unloadable)
        in_store = sum(1 for uid in unloadable if uid in self._store)
        if self._drawable is not None:  # rows never drawn hold an entry only if it was there before
            in_store += sum(1 for e in self._store if not self._drawable[e.position])
        return minimum_error(
            size=len(self._store),
            required=required,
            n_source=len(self._source),
            unloadable=unloadable,
            in_store=in_store,
            failures=counters.failures,
            quarantined=counters.quarantined,
            status=counters.status,
            address=self._address,
            undrawable=self._undrawable,
            sampler=repr(self._source_sampler),
        )

    def _supply_error(self, wanted: int, got: int) -> BaseException | None:
        """``deterministic=True``: the error to raise when no row can give the entries waited for."""
        counters = self._runner.ledger.counters()
        return supply_error(
            wanted=wanted,
            got=got,
            n_source=len(self._source),
            unloadable=self._drawn(counters.unloadable),
            failures=counters.failures,
            quarantined=counters.quarantined,
            undrawable=self._undrawable,
            sampler=repr(self._source_sampler),
        )

    def _drawn(self, uids: frozenset[Hashable]) -> frozenset[Hashable]:
        """Those of ``uids`` the source sampler draws (the others are counted apart)."""
        if self._drawable is None:
            return uids
        drawable, position = self._drawable, self._source.position
        return frozenset(u for u in uids if drawable[position(u)])

    def _wait_for_minimum(self) -> None:
        required = self._required()
        if len(self._store) >= required:
            return
        timeout = self._options.timeout
        start = time.monotonic()
        warned = start
        report = WaitProgress(required, enabled=self._progress and len(self._store) < required)
        try:
            while len(self._store) < required:
                report.update(len(self._store), note=self._no_worker_note() if report.enabled else None)
                self._check_usable()
                error = self._minimum_error(required)
                if error is not None:
                    raise error
                now = time.monotonic()
                elapsed = now - start
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError(
                        f"iter() waited {timeout:g} s (timeout) for {required} entries "
                        f"(min_reservoir_samples) but the reservoir holds {len(self._store)}; "
                        f"{self.stats().summary()}"
                    )
                if now - warned >= WAIT_WARNING_SECONDS:
                    warned = now
                    logger.warning(
                        "dask_reservoir: iter() has waited %.0f s for the minimum of %d entries: %s",
                        elapsed,
                        required,
                        self.stats().summary(),
                    )
                remaining = WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed)
                self._runner.wait(remaining)
                self._ingest(capped=False)
        finally:
            report.update(len(self._store))
            report.close()
            with self._counter_lock:
                self._minimum_wait_seconds += time.monotonic() - start

    def _no_worker_note(self) -> str | None:
        """Why nothing loads while the cluster has no worker (for the progress report), else None."""
        if self._runner.ledger.counters().workers:
            return None
        if self._handle.cluster is not None:
            return "starting the cluster (no worker yet)"
        return "waiting for workers (none yet)"

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> BatchIterator:
        """Ingest waiting entries, wait for the minimum, and start an epoch over a snapshot."""
        t0 = time.perf_counter()
        token = object()
        with self._counter_lock:
            self._iter_since[token] = t0  # stats() counts a wait still going on
        try:
            it = self._start_epoch()
        finally:
            took = time.perf_counter() - t0
            with self._counter_lock:
                del self._iter_since[token]
                self._wait_seconds += took
        it.carry_seconds(took)  # the first batch's stall includes the epoch start (counted once, here)
        return it

    def _start_epoch(self) -> BatchIterator:
        self._check_usable()
        with self._lock:
            self._age_iterators()  # before ingesting: a stale epoch's entries are released first
            if self._options.deterministic:
                self._ingest_exact()
            else:
                self._ingest(capped=True)
                self._wait_for_minimum()
            snapshot = self._store.snapshot()
            epoch = self._epoch_number
            self._epoch_number += 1
            self._epochs += 1
        # whatever raises from here on (a sampler, a warning turned into an error, a
        # KeyboardInterrupt) releases the snapshot: it never outlives a failed iter()
        handed = False  # the iterator owns the snapshot from its construction on
        try:
            order = self._epoch_order(len(snapshot), epoch, snapshot.positions)
            max_samples = self._options.maximum_number_of_samples_per_epoch
            if self._options.world_size > 1 and len(order):  # the same number of entries on every rank
                order, max_samples = np.resize(order, self._rank_epoch_rows()), None
            if self._options.drop_last and len(order) < self._options.batch_size:
                warnings.warn(
                    f"batch_size={self._options.batch_size} is larger than the {len(order)} entries this "
                    "epoch serves and drop_last=True: the epoch yields no batch",
                    UserWarning,
                    stacklevel=3,
                )
            handed = True
            it = BatchIterator(
                snapshot,
                order,
                batch_size=self._options.batch_size,
                drop_last=self._options.drop_last,
                collate_fn=self._options.collate_fn,
                uid_column=self._options.uid_column,
                max_samples=max_samples,
                check=self._check_usable,
                on_batch=self._count_batch,
                builder=self._builder,
                prefetch=self._prefetch,
                convert=converter(self._options.batch_format, self._dtypes),
                epoch=epoch,
            )
        except BaseException:
            if not handed:  # BatchIterator releases it when its construction fails
                snapshot.release()
            raise
        try:
            with self._iterators_lock:
                self._iterators.append(weakref.ref(it))
            self._prepare_order(len(snapshot), epoch + 1)
        except BaseException:
            it.close()
            raise
        return it

    def _live_iterators(self) -> list[BatchIterator]:
        """The iterators whose epoch may not be over, oldest first (forgets the others)."""
        with self._iterators_lock:
            alive = [(ref, it) for ref in self._iterators if (it := ref()) is not None and not it.ended]
            self._iterators = [ref for ref, _ in alive]
        return [it for _, it in alive]

    def _age_iterators(self) -> None:
        """A newer epoch starts: expire the iterators left behind by more than ``max_stale_epochs``.

        The others drop their batches built ahead (the budget goes to the newest epoch).
        """
        expired = [it for it in self._live_iterators() if it.note_newer_epoch(self._max_stale)]
        if expired:
            logger.info(
                "dask_reservoir: expired %d iterators not advanced while more than %d newer epochs started "
                "(max_stale_epochs); their entries are released, their next() raises IteratorExpiredError",
                len(expired),
                self._max_stale,
            )

    def _expire_for_room(self) -> bool:
        """``deterministic=True``: expire the oldest iterator whose pins may block the exact entries.

        Returns whether one was expired (none when each is inside ``next()`` right now).
        """
        for it in self._live_iterators():
            behind = it.behind
            if it.expire(
                f"{behind} newer epochs started since it was last advanced, and iter() with "
                "deterministic=True needed the room its entries pinned for the epoch's exact entries "
                "(it expires the iterators of earlier epochs, oldest first, rather than wait for them)"
            ):
                logger.info(
                    "dask_reservoir: expired the iterator of an earlier epoch (%d behind): deterministic=True "
                    "needs the room its entries pinned",
                    behind,
                )
                return True
        return False

    def _epoch_order(self, n: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The sampler's order for ``epoch``: prepared by the builder when it guessed ``n`` right."""
        prepared, self._next_order = self._next_order, None
        if prepared is not None and prepared[:2] == (epoch, n) and prepared[2].done():
            if not prepared[2].cancelled():
                return prepared[2].result()
        elif prepared is not None:
            prepared[2].cancel()
        return epoch_order(self._reservoir_sampler, n, epoch, positions=positions)

    def _prepare_order(self, n: int, epoch: int) -> None:
        """Compute the next epoch's order in the builder, for a reservoir of the same size.

        Only for the built-in samplers, whose order is a pure function of ``(n, epoch)``:
        a user's sampler is called once per epoch, by ``iter()``, as documented.
        """
        if self._prefetch and type(self._reservoir_sampler) is RandomSampler:
            sampler = self._reservoir_sampler
            self._next_order = (epoch, n, self._builder.submit(lambda: epoch_order(sampler, n, epoch)))

    def _count_batch(self, rows: int, seconds: float, carried: float) -> None:
        """A ``next()`` call took ``seconds`` and yielded ``rows`` rows (0: the epoch's end).

        ``carried`` is the epoch's start, already counted as time in ``iter()`` by
        :meth:`__iter__`: part of the first batch's stall, not counted again.
        """
        with self._counter_lock:
            self._wait_seconds += seconds
            if rows:
                self._batches_served += 1
                self._samples_served += rows
                self._stalls.append(seconds + carried)

    def set_epoch(self, epoch: int) -> None:
        """Number the next epoch ``epoch`` (the ones after follow on), as frameworks expect.

        The samplers' order of an epoch depends on its number, so a loop that calls
        ``set_epoch(k)`` before each epoch gets the same orders however often ``iter()``
        was called in between.

        Parameters
        ----------
        epoch : int
            ``>= 0``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise TypeError(f"epoch must be an int, got {type(epoch).__name__}: {epoch!r}")
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._check_open()
        with self._lock:
            self._epoch_number = int(epoch)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """A small JSON-able dict to resume this run from (see :meth:`load_state_dict`).

        It holds the epoch number, where the source order is (pass and cursor) and the
        UIDs submitted but not yet ingested, the reservoir's members in ingestion order
        (the order of eviction) with their age and use count, the quarantined UIDs and some counters; not the
        entries' data.  The samplers' orders are functions of ``(seed, epoch)`` and of
        the pass number, so the numbers are their state, with the entropy an unseeded
        sampler drew (its seed) and the SHA-256 of the current pass's order, checked
        when the state is loaded.  With ``deterministic=True`` it holds how many entries
        the next ``iter()`` ingests.

        Examples
        --------
        >>> from dask_reservoir._core.checkpoint import STATE_FORMAT, STATE_VERSION
        >>> (STATE_FORMAT, STATE_VERSION)
        ('dask_reservoir.state', 2)
        """
        self._check_open()
        ledger = self._runner.ledger
        with self._lock:
            source_pass, cursor, pending, order_sha256 = ledger.checkpoint()
            c = ledger.counters()
            now = time.monotonic()
            entries = list(self._store)  # in ingestion order: the order of eviction
            members = [
                {"uid": jsonable_uid(e.uid), "age_seconds": now - e.loaded_at, "times_served": e.times_served}
                for e in entries
            ]
            with self._counter_lock:
                served = {"batches_served": self._batches_served, "samples_served": self._samples_served}
            return {
                "format": STATE_FORMAT,
                "version": STATE_VERSION,
                "source": {
                    "rows": len(self._source),
                    "uid_column": self._options.uid_column,
                    "uids_sha256": uids_digest(self._source.uids),
                },
                "rank": self._options.rank,
                "world_size": self._options.world_size,
                "epoch": self._epoch_number,
                "epochs": self._epochs,
                "source_pass": source_pass,
                "source_cursor": cursor,
                "source_order_sha256": order_sha256,
                "samplers": {
                    "source_entropy": _saved_entropy(self._source_sampler),
                    "reservoir_entropy": _saved_entropy(self._reservoir_sampler),
                },
                "next_fill": self._next_fill() if self._options.deterministic else None,
                "pending_uids": [jsonable_uid(u) for u in pending],
                "members": members,
                "quarantined": [jsonable_uid(u) for u in c.quarantined],
                "counters": {**served, "rows_loaded": c.rows_loaded, "rows_failed": c.rows_failed},
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from a :meth:`state_dict` of a reservoir over the same source.

        Call it on a new reservoir, before its first ``iter()``.  Epoch numbers (and so
        the samplers' orders) go on where they stopped, the source order goes on from its
        pass and cursor, and the former members are submitted first, oldest first, then
        the rows that were out, so the reservoir refills with the same samples.  The
        jobs this reservoir started meanwhile are cancelled.

        Raises
        ------
        ValueError
            The state is from another source (rows, UID column or UIDs), another rank,
            another format or version, or this reservoir already served an epoch.  Nothing
            is applied then.
        """
        self._check_open()
        with self._lock:
            if self._epochs:
                raise ValueError(
                    f"load_state_dict() must come before the first iter(); this reservoir started {self._epochs} epochs"
                )
            point = check_state(
                state,
                uids=self._source.uids,
                uid_column=self._options.uid_column,
                rank=self._options.rank,
                world_size=self._options.world_size,
                position=self._source.position,
            )
            source_sampler, reservoir_sampler, point = self._resumed_orders(point)
            # built first: a failure leaves this reservoir as it was
            runner = self._make_runner(resume=point, order=source_sampler)
            self._runner.close()
            self._store.clear()
            self._runner = runner
            self._source_sampler, self._reservoir_sampler = source_sampler, reservoir_sampler
            self._epoch_number = point.epoch
            if self._options.deterministic:  # the members again, then what the saving run ingested next
                cap = cast(int, self._options.max_reservoir_replacement_size)
                fill = point.next_fill  # version 1: the cap after an epoch, else the minimum
                self._exact_fill = point.members + (
                    fill if fill is not None else (cap if point.epochs else self._required())
                )
            self._runner.start()

    def _next_fill(self) -> int:
        """``deterministic=True``: entries the next ``iter()`` ingests."""
        if self._exact_fill is not None:
            return self._exact_fill
        return cast(int, self._options.max_reservoir_replacement_size) if self._epochs else self._required()

    def _resumed_orders(self, point: ResumePoint) -> tuple[Sampler, Sampler, ResumePoint]:
        """The source and reservoir samplers, and the point, that give the saving run's orders.

        Unseeded samplers take the saved entropy; the order of the interrupted pass must
        have the saved SHA-256 (``ValueError`` otherwise: rows would be skipped or loaded
        twice).  A version 1 state saved no entropy: with an unseeded source sampler the
        rest of its pass is unknown, so the resumed run starts the next pass (logged).
        """
        source = _with_entropy(self._source_sampler, point.source_entropy)
        reservoir = _with_entropy(self._reservoir_sampler, point.reservoir_entropy)
        if point.source_pass == 0:
            return source, reservoir, point
        if point.source_order_sha256 is not None:
            n, rank, world_size = len(self._source), self._options.rank, self._options.world_size
            order = pass_order(source, n, point.source_pass - 1, rank, world_size)
            if order_digest(order) != point.source_order_sha256:
                raise ValueError(
                    f"source_sampler={source!r} orders pass {point.source_pass - 1} differently from the run "
                    "that saved the state (the SHA-256 of the pass order differs): where the pass stopped "
                    "cannot be found, and rows would be skipped or loaded twice; resume with that run's "
                    "source_sampler (the same seed, or none if it had none)"
                )
        elif getattr(source, "entropy", None) is not None:
            logger.warning(
                "dask_reservoir: the state (version %d) holds no entropy of the unseeded source_sampler, so "
                "the order of its pass %d is unknown: the former members and the rows that were out are "
                "loaded again, then the next pass starts (rows of that pass not loaded yet wait for it)",
                point.version,
                point.source_pass - 1,
            )
            point = replace(point, source_cursor=sys.maxsize)
        return source, reservoir, point

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`state_dict` as JSON to ``path``, atomically; return the path."""
        return write_state(path, self.state_dict())

    @classmethod
    def restore(cls, path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> AsyncReservoir:
        """A new reservoir going on from the state saved at ``path`` by :meth:`save`.

        ``args``/``kwargs`` are those of ``AsyncReservoir(...)``: the same source.

        Raises
        ------
        ValueError
            ``path`` is not a state file (corrupted JSON), or its state does not fit
            the source (see :meth:`load_state_dict`); the new reservoir is closed then.
        """
        state = read_state(path)
        reservoir = cls(*args, **kwargs)
        try:
            reservoir.load_state_dict(state)
        except BaseException:
            reservoir.close()
            raise
        return reservoir

    def to_pandas(
        self, uids: Iterable[Hashable] | None = None, *, loaded_at: bool | str = True
    ) -> pd.DataFrame:
        """The loaded entries as one DataFrame, now, without waiting for loading.

        One row per produced row: the entries of all loaded UIDs in source order, or of
        ``uids`` in their order (those not loaded now are absent: compare with the UID
        column).  Columns as in a ``batch_format="pandas"`` batch (the UID column with the
        source UID column's dtype), plus one column of ``Timestamp`` saying when each
        entry's job finished, named ``"loaded_at"`` by default.  The reservoir is not changed.

        Parameters
        ----------
        uids : iterable, optional
            UIDs to return, in this order; default all loaded entries.
        loaded_at : bool or str, keyword-only
            The name of the load-time column (True: ``"loaded_at"``), or False for none.
            Like ``indicator=`` of :func:`pandas.merge`, it never replaces a column of
            yours: when ``function_to_run`` produces a column of that name, pass another
            name or False.

        Raises
        ------
        KeyError
            When some of ``uids`` are not UIDs of the source (naming them).
        ValueError
            When the load-time column's name is the UID column or a column the entries
            hold (naming it).
        TypeError
            When ``loaded_at`` is not a bool or a non-empty str.
        """
        self._check_open()
        uid_column = self._options.uid_column
        stamp_column = _load_time_column(loaded_at, uid_column)
        wall_minus_monotonic = time.time() - time.monotonic()
        with self._lock:
            snapshot = self._store.snapshot()
        try:
            if uids is None:
                indices = list(range(len(snapshot)))
            else:
                wanted = list(uids)
                missing = [u for u in wanted if not self._source.has(u)]
                if missing:
                    raise KeyError(f"UIDs not in the source ({len(missing)}): {missing[:10]!r}")
                positions = np.asarray([self._source.position(u) for u in wanted], dtype=np.int64)
                indices = []
                if len(snapshot):
                    found = np.minimum(np.searchsorted(snapshot.positions, positions), len(snapshot) - 1)
                    loaded = snapshot.positions[found] == positions
                    indices = [int(i) for i in found[loaded]]
            rows: list[dict[str, Any]] = []
            stamps: list[float] = []
            for index in indices:
                entry_rows = snapshot.rows_at(index)
                rows.extend(entry_rows)
                stamps.extend([snapshot.entry(index).loaded_at + wall_minus_monotonic] * len(entry_rows))
        finally:
            snapshot.release()
        if rows:
            try:
                frame = to_frame(collate_rows(rows, uid_column=uid_column), self._dtypes)
            except ValueError:  # rows that do not stack: stored with batch_size=1 or a collate_fn
                frame = rows_frame(rows, uid_column, self._source.uid_index.values.dtype)
        else:
            frame = pd.DataFrame({uid_column: self._source.uid_index.values[:0]})
        if stamp_column is not None:
            if stamp_column in frame.columns:
                raise ValueError(
                    f"to_pandas() cannot add its load-time column {stamp_column!r}: function_to_run "
                    f"produces a column named {stamp_column!r}; pass loaded_at='<another name>', or "
                    "loaded_at=False for no load-time column"
                )
            frame[stamp_column] = pd.to_datetime(np.asarray(stamps, dtype=np.float64), unit="s")
        return frame

    def reservoir_size(self) -> int:
        """Number of entries in the reservoir now."""
        return len(self._store)

    # ------------------------------------------------------------------ subsets
    def subsample(self, nb_samples: int, seed: int | None = None) -> AsyncReservoir:
        """A new reservoir on ``nb_samples`` source rows drawn without replacement.

        Same client and settings; it starts with the entries already loaded here for
        its UIDs (their jobs are not re-run on the first pass).

        Parameters
        ----------
        nb_samples : int
            Rows to draw, ``1 <= nb_samples <= len(source)``.
        seed : int, optional
            Seed of the draw.
        """
        self._check_open()
        positions = random_positions(len(self._source), nb_samples, seed)
        return self._child(positions, self._given_samplers[0].subset(positions))

    def subsample_uids(
        self,
        uids: Iterable[Hashable],
        uids_name: str | None = None,
        new_sampler: Sampler | None = None,
    ) -> AsyncReservoir:
        """A new reservoir on the source rows whose ``uids_name`` column is in ``uids``.

        Rows are submitted (and, with a :class:`SequentialSampler`, served) in the order
        of ``uids``.  Entries already loaded here for those UIDs are reused.

        Parameters
        ----------
        uids : iterable
            Values to select, in order.
        uids_name : str, optional
            Column to match; default ``uid_column``.
        new_sampler : Sampler, optional
            Sampler of the new reservoir; default this reservoir's.

        Raises
        ------
        KeyError
            When some of ``uids`` are absent from the column (naming them).
        ValueError
            When ``uids_name`` is not a column of the source, or ``uids`` is empty.
        """
        self._check_open()
        given = None if new_sampler is None else check_sampler(new_sampler, "new_sampler")
        column = self._options.uid_column if uids_name is None else uids_name
        positions = positions_by_values(
            self._source, uids, column, uid_column=self._options.uid_column, scheduler=self._handle.client
        )
        return self._child(positions, self._given_samplers[0].subset(positions) if given is None else given)

    def _child(self, positions: list[int], sampler: Sampler) -> AsyncReservoir:
        source = self._source.subset(positions)
        preload = [replace(e, position=source.position(e.uid)) for e in self._store.copies(source.uids)]
        child = AsyncReservoir.__new__(type(self))
        child._closed = True
        child._progress = self._progress
        child._prefetch = self._prefetch
        child._max_stale = self._max_stale
        try:
            child._start(
                source=source,
                function_to_run=self._function,
                options=replace(self._options, rank=0, world_size=1),  # a subset is not sharded
                samplers=(sampler, self._given_samplers[1].subset(positions)),
                handle=ClientHandle(self._handle.client, owned=False),
                preload=sorted(preload, key=lambda e: e.loaded_at),
                dtypes=self._dtypes,
                child=True,
            )
        except BaseException:
            if isinstance(source, DaskSource):
                source.release()
            raise
        self._children.add(child)
        return child

    # ------------------------------------------------------------------ stats and lifecycle
    def stats(self) -> ReservoirStats:
        """A snapshot of the counters (see :class:`ReservoirStats`)."""
        ledger = self._runner.ledger
        c = ledger.counters()
        with self._counter_lock:
            batches, samples, waited = self._batches_served, self._samples_served, self._wait_seconds
            waited += sum(time.perf_counter() - t0 for t0 in self._iter_since.values())  # still in iter()
            minimum_waited, stalls = self._minimum_wait_seconds, list(self._stalls)
        p50, p90, p99 = percentiles(ledger.recent_load_seconds())
        stall_p50, _, stall_p99 = percentiles(stalls)
        now = time.monotonic()
        store = self._store
        entries = list(store)
        ages = np.fromiter((now - e.loaded_at for e in entries), dtype=float, count=len(entries))
        served = np.fromiter((e.times_served for e in entries), dtype=float, count=len(entries))
        unserved = [e for e in entries if e.times_served == 0]
        oldest_unserved = min(unserved, key=lambda e: e.loaded_at).uid if unserved else None
        return ReservoirStats(
            **runner_fields(c),
            **entry_summary(ages, served),
            reservoir_size=len(entries),
            max_reservoir_samples=self._options.max_reservoir_samples,
            min_reservoir_samples=self._options.min_reservoir_samples,
            uids_served=store.positions_served,
            oldest_unserved_uid=oldest_unserved,
            entries_ingested=store.ingested,
            entries_evicted=store.evicted,
            entries_replaced=store.replaced,
            epochs=self._epochs,
            batches_served=batches,
            samples_served=samples,
            mean_job_seconds=ledger.mean_load_seconds,
            load_seconds_p50=p50,
            load_seconds_p90=p90,
            load_seconds_p99=p99,
            columnar_bytes=store.columnar_bytes(),
            entries_pinned=store.pinned_retired,
            live_iterators=store.live_snapshots,
            consumer_wait_seconds=waited,
            minimum_wait_seconds=minimum_waited,
            stall_seconds_p50=stall_p50,
            stall_seconds_p99=stall_p99,
            address=self._address,
            status="closed" if self._closed else c.status,
            loader=self._loader,
        )

    def release_quarantine(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Submit quarantined UIDs again; return the UIDs released.

        Parameters
        ----------
        uids : iterable, optional
            The UIDs to release; None releases every quarantined UID.  UIDs that are
            not quarantined are ignored.

        Returns
        -------
        list
            The UIDs taken out of quarantine; their failures in a row count from zero
            again, and they are submitted before the rest of the source.
        """
        self._check_open()
        released = self._runner.ledger.release_quarantine(uids)
        if released:
            self._runner.poke()
        return released

    def close(self) -> None:
        """Stop the jobs, release every future and the thread, close what the reservoir owns.

        Idempotent.  A consumer iterating in another thread gets ``RuntimeError`` at its
        next ``next()``.  Reservoirs made by :meth:`subsample`/:meth:`subsample_uids`
        are closed too when this reservoir owns the client they share.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        untrack(self)
        self._runner.close()
        if self._handle.owned:
            for child in list(self._children):
                child.close()
        self._handle.close()
        self._builder.close()
        # a consumer blocked in iter() holds the lock for at most one wait slice before it
        # sees the reservoir closed; clear only under the lock, so it never sees half a store
        if self._lock.acquire(timeout=CLOSE_LOCK_SECONDS):
            try:
                self._store.clear()
            finally:
                self._lock.release()

    def settle(self, timeout: float) -> bool:
        """After :meth:`close`, wait up to ``timeout`` s until the scheduler forgot our tasks.

        Used at interpreter exit; True when nothing of dask_reservoir is left on the scheduler.
        """
        return self._runner.wait_released(timeout)

    def __enter__(self) -> AsyncReservoir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                close_in_background(self, name=f"dask_reservoir-finalizer-{id(self):x}")
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        if not hasattr(self, "_store"):
            return f"<{type(self).__name__}: not started>"
        s = self.stats()
        return (
            f"<{type(self).__name__}: size={s.reservoir_size}/{s.max_reservoir_samples} "
            f"waiting={s.entries_waiting} in_flight={s.rows_in_flight} rows_loaded={s.rows_loaded} "
            f"rows_failed={s.rows_failed} quarantined={len(s.quarantined)} "
            f"epochs={s.epochs} workers={s.workers} workers_lost={s.workers_lost} status={s.status} "
            f"address={s.address!r}>"
        )


def _saved_entropy(sampler: Sampler) -> str | None:
    """The entropy of an unseeded built-in sampler, as a state holds it (a decimal string), else None."""
    entropy = getattr(sampler, "entropy", None)
    return None if entropy is None else str(int(entropy))


def _with_entropy(sampler: Sampler, entropy: int | None) -> Sampler:
    """``sampler`` drawing with a saved ``entropy``, when both are unseeded (else ``sampler`` as is)."""
    if entropy is None or getattr(sampler, "entropy", None) is None:
        return sampler
    return cast(Sampler, sampler.with_entropy(entropy))  # type: ignore[attr-defined]


def _bind(sampler: Sampler, name: str, source: Source, *, child: bool) -> Sampler:
    """``sampler.bind(source)``; its ``ValueError`` names the parameter (and the subset)."""
    try:
        return sampler.bind(source)
    except ValueError as exc:
        where = f" over the {len(source)} rows of this subset" if child else ""
        raise ValueError(f"{name}={sampler!r}{where}: {exc}") from exc


SequenceAsyncReservoir = AsyncReservoir
"""Alias of :class:`AsyncReservoir`, the name trw users know."""


def _load_time_column(loaded_at: object, uid_column: str) -> str | None:
    """The name ``to_pandas(loaded_at=...)`` asks for (None: no column), checked.

    Examples
    --------
    >>> _load_time_column(True, "uid"), _load_time_column("t", "uid"), _load_time_column(False, "uid")
    ('loaded_at', 't', None)
    """
    if loaded_at is False:
        return None
    if loaded_at is True:
        loaded_at = "loaded_at"
    if not isinstance(loaded_at, str) or not loaded_at:
        raise TypeError(
            f"loaded_at must be a bool or a non-empty str (the column name), got "
            f"{type(loaded_at).__name__}: {loaded_at!r}"
        )
    if loaded_at == uid_column:
        raise ValueError(
            f"to_pandas() cannot name its load-time column {loaded_at!r}: that is the UID column; "
            "pass loaded_at='<another name>', or loaded_at=False for no load-time column"
        )
    return loaded_at

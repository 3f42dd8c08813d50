"""``AsyncReservoir``: the public class tying source, jobs, store, sampler and collate.

Data flow: source rows -> :mod:`~dask_reservoir.runner` (dask jobs in the
background) -> waiting entries -> :mod:`~dask_reservoir.store` (at each
``iter()``) -> sampler -> :mod:`~dask_reservoir.collate` -> batch.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import fields
from typing import Any

import numpy as np

from .batches import BatchIterator, epoch_order
from .cluster import ClientHandle, resolve_client
from .errors import ClusterLostError, JobError, ReservoirClosedError
from .options import ReservoirOptions, validate_options
from .progress import WaitProgress
from .runner import WAIT_SLICE, JobRunner
from .samplers import Sampler, check_sampler
from .source import Source, is_dask_frame, make_source
from .stats import Performance, ReservoirStats
from .store import Entry, ReservoirStore
from .subsets import positions_by_values, random_positions
from .tasks import JobSpec, function_package

__all__ = ["AsyncReservoir", "SequenceAsyncReservoir"]

logger = logging.getLogger("dask_reservoir")

CLOSE_LOCK_SECONDS = 2.0
"""How long close() waits for a consumer in iter() to let go before leaving the entries to GC."""


class AsyncReservoir:
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
        ingested.  Default ``2 x worker threads x rows_per_job``.
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
        Source rows per dask task.  ``"auto"`` starts at 1 and sizes tasks to run about
        75 ms on the workers and return at most 8 MiB of arrays, from the measured time and
        size per row, so fast loaders are not capped by dask's per-task cost (about 1 ms).
    retries : int
        Retries of a failing job (dask ``retries=``; inside the task when ``rows_per_job > 1``).
    on_error : {"skip", "raise"}
        "skip": a failed job is logged and recorded in ``stats().failures``, and the UID
        is tried again on the next pass.  "raise": the next ``iter()``/``next()`` raises
        :class:`JobError`.
    timeout : float or str, optional
        Longest ``iter()`` waits for the minimum; then ``TimeoutError``.
    max_failures_per_uid : int or None
        A UID failing this many times in a row is quarantined (no longer submitted).
    on_cluster_loss : {"raise", "serve"}
        When the client gives up on its scheduler: raise :class:`ClusterLostError` at the
        next ``iter()``/``next()``, or keep serving the loaded entries.
    progress : bool
        Show a tqdm bar (``pip install dask_reservoir[progress]``; plain lines on stderr
        without tqdm) while ``iter()`` waits for the minimum.
    job_timeout : float or str, optional
        Seconds one call of ``function_to_run`` may run on a worker; a longer call is
        abandoned and counted as a failure of its UID (:class:`JobTimeoutError`), and the
        task, so the worker's slot, is freed.  The call itself cannot be interrupted: it
        goes on in a daemon thread of the worker until it returns.

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
        rows_per_job: int | str = 1,
        retries: int = 0,
        on_error: str = "skip",
        timeout: float | str | None = None,
        max_failures_per_uid: int | None = 3,
        on_cluster_loss: str = "raise",
        job_timeout: float | str | None = None,
        progress: bool = False,
    ) -> None:
        self._closed = True  # until fully built, so __del__ and close() are no-ops
        options = validate_options(
            max_reservoir_samples=max_reservoir_samples,
            min_reservoir_samples=min_reservoir_samples,
            uid_column=uid_column,
            max_jobs_at_once=max_jobs_at_once,
            batch_size=batch_size,
            drop_last=drop_last,
            collate_fn=collate_fn,
            maximum_number_of_samples_per_epoch=maximum_number_of_samples_per_epoch,
            max_reservoir_replacement_size=max_reservoir_replacement_size,
            rows_per_job=rows_per_job,
            retries=retries,
            on_error=on_error,
            timeout=timeout,
            max_failures_per_uid=max_failures_per_uid,
            on_cluster_loss=on_cluster_loss,
            nb_workers=nb_workers,
            job_timeout=job_timeout,
        )
        if not callable(function_to_run):
            raise TypeError(
                f"function_to_run must be callable, got {type(function_to_run).__name__}: {function_to_run!r}"
            )
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool, got {type(progress).__name__}: {progress!r}")
        self._progress = progress
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
    ) -> None:
        self._source = source
        self._function = function_to_run
        self._options = options
        self._reservoir_sampler, self._source_sampler = samplers
        self._handle = handle
        self._store = ReservoirStore(options.max_reservoir_samples)
        self._lock = threading.RLock()  # store, epochs; held by iter() while it waits
        self._counter_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._children: weakref.WeakSet[AsyncReservoir] = weakref.WeakSet()
        self._epochs = 0
        self._batches_served = 0
        self._samples_served = 0
        self._wait_seconds = 0.0
        self._warned_lost = False
        self._address = handle.address
        preloaded = []
        for entry in preload:
            self._store.put(entry)
            preloaded.append(entry.uid)
        threads = handle.worker_threads()
        max_rows = options.max_jobs_at_once or 2 * threads * (options.rows_per_job or 1)
        package = function_package(function_to_run)
        # user code the cluster cannot import travels by value; importable code by reference,
        # so that a threaded LocalCluster shares module state with the client as users expect
        by_value = package is not None and not handle.can_import(package)
        self.perf_sending = Performance()
        self.perf_receiving = Performance()
        self._runner = JobRunner(
            handle.client,
            source,
            JobSpec.from_function(
                function_to_run,
                uid_column=options.uid_column,
                retries=options.retries,
                rows_per_job=options.rows_per_job or 0,
                timeout=options.job_timeout,
                by_value=by_value,
            ),
            order=self._source_sampler,
            max_rows=max_rows,
            rows_per_job=options.rows_per_job,
            auto_bound_threads=None if options.max_jobs_at_once else threads,
            retries=options.retries,
            max_failures_per_uid=options.max_failures_per_uid,
            collect_errors=options.on_error == "raise",
            skip_first_pass=preloaded,
            perf_sending=self.perf_sending,
            perf_receiving=self.perf_receiving,
        )
        self._closed = False
        self.initializer()

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
            errors = self._runner.ledger.pop_errors()
            if errors:
                raise errors[0]

    # ------------------------------------------------------------------ ingestion
    def _required(self) -> int:
        return min(self._options.min_reservoir_samples, len(self._source))

    def _ingest(self, *, capped: bool) -> int:
        cap = self._options.max_reservoir_replacement_size
        required = self._required()
        counted = 0
        moved = 0
        while True:
            below = required - len(self._store)
            if below > 0:
                limit: int | None = below
            elif not capped or cap is None:
                limit = None
            else:
                limit = cap - counted
                if limit <= 0:
                    break
            items = self._runner.take(limit)
            if not items:
                break
            for item in items:
                self._store.put(
                    Entry(
                        item.uid,
                        self._source.position(item.uid),
                        item.rows,
                        item.finished_at,
                        item.load_seconds,
                    )
                )
            moved += len(items)
            if below <= 0:
                counted += len(items)
            if limit is None:
                break
        return moved

    def _wait_for_minimum(self) -> None:
        required = self._required()
        timeout = self._options.timeout
        start = time.monotonic()
        report = WaitProgress(required, enabled=self._progress and len(self._store) < required)
        try:
            while len(self._store) < required:
                report.update(len(self._store))
                self._check_usable()
                counters = self._runner.ledger.counters()
                if counters.status == "lost":
                    raise ClusterLostError(
                        f"lost the dask scheduler at {self._address!r} with {len(self._store)} entries "
                        f"loaded, fewer than the minimum {required}"
                    )
                if counters.uids_tried >= len(self._source) and counters.uids_loaded < required:
                    shown = "; ".join(f.describe() for f in counters.failures[:5])
                    raise JobError(
                        f"every one of the {len(self._source)} source rows was tried but only "
                        f"{counters.uids_loaded} produced rows, fewer than the minimum {required} "
                        f"(min_reservoir_samples); {len(counters.failures)} UIDs failed: {shown}"
                    )
                elapsed = time.monotonic() - start
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError(
                        f"iter() waited {timeout:g} s (timeout) for {required} entries "
                        f"(min_reservoir_samples) but the reservoir holds {len(self._store)}; "
                        f"{self.stats().summary()}"
                    )
                remaining = WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed)
                self._runner.wait(remaining)
                self._ingest(capped=False)
        finally:
            report.update(len(self._store))
            report.close()
            with self._counter_lock:
                self._wait_seconds += time.monotonic() - start

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> BatchIterator:
        """Ingest waiting entries, wait for the minimum, and start an epoch over a snapshot."""
        self._check_usable()
        with self._lock:
            self._ingest(capped=True)
            self._wait_for_minimum()
            snapshot = self._store.snapshot()
            epoch = self._epochs
            self._epochs += 1
        try:
            order = epoch_order(self._reservoir_sampler, len(snapshot.entries), epoch)
        except BaseException:
            snapshot.release()
            raise
        if self._options.drop_last and len(order) < self._options.batch_size:
            warnings.warn(
                f"batch_size={self._options.batch_size} is larger than the {len(order)} entries this "
                "epoch serves and drop_last=True: the epoch yields no batch",
                UserWarning,
                stacklevel=2,
            )
        return BatchIterator(
            snapshot,
            order,
            batch_size=self._options.batch_size,
            drop_last=self._options.drop_last,
            collate_fn=self._options.collate_fn,
            uid_column=self._options.uid_column,
            max_samples=self._options.maximum_number_of_samples_per_epoch,
            check=self._check_usable,
            on_batch=self._count_batch,
        )

    def _count_batch(self, rows: int) -> None:
        with self._counter_lock:
            self._batches_served += 1
            self._samples_served += rows

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
        return self._child(positions, self._reservoir_sampler)

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
        sampler = (
            self._reservoir_sampler if new_sampler is None else check_sampler(new_sampler, "new_sampler")
        )
        column = self._options.uid_column if uids_name is None else uids_name
        positions = positions_by_values(
            self._source, uids, column, uid_column=self._options.uid_column, scheduler=self._handle.client
        )
        return self._child(positions, sampler)

    def _child(self, positions: list[int], sampler: Sampler) -> AsyncReservoir:
        source = self._source.subset(positions)
        with self._lock:
            preload = [
                Entry(e.uid, source.position(e.uid), self._store.rows_of(e), e.loaded_at, e.load_seconds)
                for uid in source.uids
                if (e := self._store.get(uid)) is not None
            ]
        child = AsyncReservoir.__new__(type(self))
        child._closed = True
        child._progress = self._progress
        options = self._options
        child._start(
            source=source,
            function_to_run=self._function,
            options=options,
            samplers=(sampler, self._source_sampler),
            handle=ClientHandle(self._handle.client, owned=False),
            preload=sorted(preload, key=lambda e: e.loaded_at),
        )
        self._children.add(child)
        return child

    # ------------------------------------------------------------------ stats and lifecycle
    def stats(self) -> ReservoirStats:
        """A snapshot of the counters (see :class:`ReservoirStats`)."""
        c = self._runner.ledger.counters()
        with self._counter_lock:
            batches, samples, waited = self._batches_served, self._samples_served, self._wait_seconds
        loads = np.asarray(self._runner.ledger.recent_load_seconds())
        p50, p90, p99 = np.percentile(loads, [50, 90, 99]).tolist() if loads.size else [float("nan")] * 3
        entries = list(self._store)
        now = time.monotonic()
        ages = np.fromiter((now - e.loaded_at for e in entries), dtype=float, count=len(entries))
        served = np.fromiter((e.times_served for e in entries), dtype=float, count=len(entries))
        nan = float("nan")
        shared = {f.name: getattr(c, f.name) for f in fields(c) if f.name in _STATS_FIELDS}
        return ReservoirStats(
            **shared,
            reservoir_size=len(self._store),
            max_reservoir_samples=self._options.max_reservoir_samples,
            min_reservoir_samples=self._options.min_reservoir_samples,
            entries_ingested=self._store.ingested,
            entries_evicted=self._store.evicted,
            entries_replaced=self._store.replaced,
            epochs=self._epochs,
            batches_served=batches,
            samples_served=samples,
            mean_job_seconds=self._runner.ledger.mean_load_seconds,
            load_seconds_p50=p50,
            load_seconds_p90=p90,
            load_seconds_p99=p99,
            age_seconds_median=float(np.median(ages)) if ages.size else nan,
            age_seconds_max=float(ages.max()) if ages.size else nan,
            times_served_mean=float(served.mean()) if served.size else nan,
            times_served_max=float(served.max()) if served.size else nan,
            columnar_bytes=table.nbytes() if (table := self._store.table) is not None else 0,
            consumer_wait_seconds=waited,
            address=self._address,
            status="closed" if self._closed else c.status,
        )

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
        self._runner.close()
        if self._handle.owned:
            for child in list(self._children):
                child.close()
        self._handle.close()
        # a consumer blocked in iter() holds the lock for at most one wait slice before it
        # sees the reservoir closed; clear only under the lock, so it never sees half a store
        if self._lock.acquire(timeout=CLOSE_LOCK_SECONDS):
            try:
                self._store.clear()
            finally:
                self._lock.release()

    def __enter__(self) -> AsyncReservoir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        if not hasattr(self, "_store"):
            return f"<{type(self).__name__}: not started>"
        s = self.stats()
        return (
            f"<{type(self).__name__}: size={s.reservoir_size}/{s.max_reservoir_samples} "
            f"waiting={s.entries_waiting} in_flight={s.rows_in_flight} done={s.jobs_completed} "
            f"failed={s.jobs_failed + s.rows_failed} quarantined={len(s.quarantined)} "
            f"epochs={s.epochs} status={s.status} address={s.address!r}>"
        )


_STATS_FIELDS = frozenset(f.name for f in fields(ReservoirStats)) - {"status"}

SequenceAsyncReservoir = AsyncReservoir
"""Alias of :class:`AsyncReservoir`, the name trw users know."""

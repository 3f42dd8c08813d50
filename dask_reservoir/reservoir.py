"""``AsyncReservoir``: the public facade.

Data flow: source rows (:mod:`~dask_reservoir._source`) -> dask jobs in the background
(:mod:`~dask_reservoir._runtime.runner`, or a loader process) -> finished entries ->
:class:`~dask_reservoir._runtime.feeder.Feeder` (at each ``iter()``) -> the store
(:mod:`~dask_reservoir._core.store`) -> :class:`~dask_reservoir._runtime.epochs.Epochs`
(snapshot, sampler order) -> collate -> batch.  The facade checks what the user gives and
delegates to a :class:`~dask_reservoir._runtime.pipeline.Pipeline`, which wires the parts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from dask_reservoir._core.checkpoint import read_state, write_state
from dask_reservoir._core.options import ReservoirOptions, placement, validate_options
from dask_reservoir._core.parameters import with_parameters
from dask_reservoir._core.samplers import Sampler, check_sampler
from dask_reservoir._core.shards import shard_positions
from dask_reservoir._core.stats import ReservoirStats
from dask_reservoir._facade.analysis import AnalysisMethods
from dask_reservoir._runtime import code_upload
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.cluster import resolve_client
from dask_reservoir._runtime.lifecycle import Uncopyable, close_in_background, track, untrack
from dask_reservoir._runtime.pipeline import Pipeline
from dask_reservoir._runtime.placement_check import warn_if_unplaceable
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.make import is_dask_frame, make_source

__all__ = ["AsyncReservoir", "SequenceAsyncReservoir"]


class AsyncReservoir(AnalysisMethods, Uncopyable):
    """Load samples on dask workers in the background; iterate batches of what is loaded.

    ``function_to_run(row)`` runs as dask tasks on the rows of ``source``, cycling
    forever.  Finished entries (keyed by UID) enter a bounded reservoir at each
    ``iter()``, the oldest evicted first; each ``iter()`` starts an epoch over a
    snapshot of the reservoir, so after warm-up the loop never waits for loading.

    %(parameters)s

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
        passes: int | None = None,
        transform: Callable[[Any, np.random.Generator], Any] | None = None,
        transform_batched: bool = False,
        transform_seed: int | None = None,
        cache: str | os.PathLike[str] | None = None,
        cache_version: str | None = None,
        cache_row_hash: bool = True,
        cache_storage_options: dict[str, Any] | None = None,
        max_reservoir_bytes: int | str | None = None,
        resources: dict[str, float] | None = None,
        priority: int = 0,
        workers: str | list[str] | None = None,
        allow_other_workers: bool = False,
        annotations: dict[str, Any] | None = None,
        upload_code: bool = True,
    ) -> None:
        given = locals()
        options = validate_options(
            function=function_to_run, **{f.name: given[f.name] for f in fields(ReservoirOptions)}
        )
        samplers = (
            check_sampler(reservoir_sampler, "reservoir_sampler"),
            check_sampler(source_sampler, "source_sampler"),
        )
        # a pandas source is checked before any cluster is started
        table = make_source(source, uid_column) if not is_dask_frame(source) else None
        handle = resolve_client(client, options.nb_workers)
        try:
            if options.upload_code and not handle.embedded:  # before the first task naming our code
                handle.code = code_upload.upload_code(handle.client)
            placed = placement(options)
            warn_if_unplaceable(handle.client, placed, dask_source=table is None)
            if table is None:
                table = make_source(source, uid_column, scheduler=handle.client, placement=placed)
            pipeline = Pipeline(table, function_to_run, options, samplers, handle, kind=type(self).__name__)
        except BaseException:
            if isinstance(table, DaskSource):
                table.release()  # its persisted partitions, before the client goes
            handle.close()
            raise
        self._attach(pipeline)

    def _attach(self, pipeline: Pipeline) -> None:
        """Serve ``pipeline``: the last step of building a reservoir, and a subset."""
        self._p = pipeline
        self.perf_sending, self.perf_receiving = pipeline.perf_sending, pipeline.perf_receiving
        track(self)
        self.initializer()

    @classmethod
    def _of(cls, pipeline: Pipeline) -> AsyncReservoir:
        """A reservoir serving ``pipeline`` (a subset's, built by :meth:`Pipeline.subset`)."""
        reservoir = object.__new__(cls)
        reservoir._attach(pipeline)
        return reservoir

    # the parts, for tests and debugging
    _runner = property(lambda self: self._p.runner, doc="The runner (a thread or a loader process).")
    _store = property(lambda self: self._p.store, doc="The store.")
    _handle = property(lambda self: self._p.handle, doc="The client handle.")
    _builder = property(lambda self: self._p.epochs.builder, doc="The batch builder.")

    @property
    def max_jobs_at_once(self) -> int:
        """The back-pressure bound now, in dask tasks (given, or following the cluster's threads)."""
        jobs = self._p.runner.ledger.max_jobs
        return self._p.runner.ledger.max_rows if jobs is None else jobs

    @property
    def max_rows_at_once(self) -> int:
        """The back-pressure bound now, in source rows.

        ``max_jobs_at_once`` tasks of ``rows_per_job`` rows, at most ``max_reservoir_samples``
        unless two tasks (one with ``max_jobs_at_once=1``) hold more; it follows
        ``rows_per_job="auto"``.
        """
        return self._p.runner.ledger.max_rows

    @property
    def rows_per_job(self) -> int:
        """Source rows per dask task now."""
        return self._p.runner.ledger.rows_per_job

    def initializer(self) -> None:
        """Start the background jobs if they are not running yet (idempotent; trw compatibility)."""
        self._p.check_open()
        self._p.runner.start()

    def fill_queue(self) -> None:
        """Wake the runner to top up the jobs in flight now (trw compatibility; it tops up anyway)."""
        self._p.check_open()
        self._p.runner.poke()

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
        uids, options = self._p.source.uids, self._p.options
        return [
            uids[p] for p in shard_positions(len(uids), int(pass_number), options.rank, options.world_size)
        ]

    def __iter__(self) -> BatchIterator:
        """Ingest waiting entries, wait for the minimum, and start an epoch over a snapshot."""
        return self._p.iterate(owner=self)  # the iterator keeps this reservoir open

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
        self._p.set_epoch(int(epoch))

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
        ('dask_reservoir.state', 3)
        """
        return self._p.state_dict()

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
        self._p.load_state_dict(state)

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

    # ------------------------------------------------------------------ stats and lifecycle
    def stats(self) -> ReservoirStats:
        """A snapshot of the counters (see :class:`ReservoirStats`)."""
        return self._p.stats()

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
        self._p.check_open()
        released = self._p.runner.ledger.release_quarantine(uids)
        if released:
            self._p.runner.poke()
        return released

    def close(self) -> None:
        """Stop the jobs, release every future and the thread, close what the reservoir owns.

        Idempotent.  A consumer iterating in another thread gets ``RuntimeError`` at its
        next ``next()``.  Reservoirs made by :meth:`subsample`/:meth:`subsample_uids`
        are closed too when this reservoir owns the client they share.
        """
        if self._p.close():
            untrack(self)

    def settle(self, timeout: float) -> bool:
        """After :meth:`close`, wait up to ``timeout`` s until the scheduler forgot our tasks.

        Used at interpreter exit; True when nothing of dask_reservoir is left on the scheduler.
        """
        return bool(self._p.runner.wait_released(timeout))

    def __enter__(self) -> AsyncReservoir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            pipeline = self.__dict__.get("_p")
            if pipeline is not None and not pipeline.closed:
                close_in_background(self, name=f"dask_reservoir-finalizer-{id(self):x}")
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        if "_p" not in self.__dict__:
            return f"<{type(self).__name__}: not started>"
        s = self.stats()
        return (
            f"<{type(self).__name__}: size={s.reservoir_size}/{s.max_reservoir_samples} "
            f"waiting={s.entries_waiting} in_flight={s.rows_in_flight} rows_loaded={s.rows_loaded} "
            f"rows_failed={s.rows_failed} quarantined={len(s.quarantined)} "
            f"epochs={s.epochs} workers={s.workers} workers_lost={s.workers_lost} status={s.status} "
            f"address={s.address!r}>"
        )


AsyncReservoir.__doc__ = with_parameters(AsyncReservoir.__doc__)

SequenceAsyncReservoir = AsyncReservoir
"""Alias of :class:`AsyncReservoir`, the name trw users know."""

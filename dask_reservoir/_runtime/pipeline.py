"""The reservoir's parts, wired: source -> runner -> feeder -> store -> epochs -> batches.

:class:`Pipeline` is what an :class:`~dask_reservoir.reservoir.AsyncReservoir` holds: it
builds the parts from checked options (one construction path for a reservoir and for its
subsets), owns the lock that orders epochs, state and close, and answers the facade's calls.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import Any

import pandas as pd

from dask_reservoir._core.checkpoint import ResumePoint, check_state
from dask_reservoir._core.frames import entries_frame
from dask_reservoir._core.ingest import drawable_rows, required_entries
from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.performance import Performance
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.served import ServedCounters
from dask_reservoir._core.stats import ReservoirStats, runner_fields, served_fields, store_fields
from dask_reservoir._core.store import Entry, ReservoirStore, Snapshot
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.cache_check import check_cache_visible
from dask_reservoir._runtime.cluster import ClientHandle
from dask_reservoir._runtime.epochs import Epochs
from dask_reservoir._runtime.feeder import Feeder
from dask_reservoir._runtime.loader.parent import choose_loader, make_runner
from dask_reservoir._runtime.prefetch import IDLE_SLICE
from dask_reservoir._runtime.protocols import RunnerLike
from dask_reservoir._runtime.state import (
    header,
    in_key_order,
    ledger_state,
    members_state,
    resumed_samplers,
    samplers_state,
)
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import Source
from dask_reservoir.errors import ClusterLostError, ReservoirClosedError

__all__ = ["CLOSE_LOCK_SECONDS", "Pipeline"]

logger = logging.getLogger("dask_reservoir")

CLOSE_LOCK_SECONDS = 2.0
"""How long close() waits for a consumer in iter() to let go before leaving the entries to GC."""


class Pipeline:
    """The parts of one reservoir, built and wired from checked options.

    Parameters
    ----------
    source : Source
        The checked source (a subset's source for a subset).
    function_to_run : callable
        The user's job.
    options : ReservoirOptions
        Checked options.
    samplers : tuple of Sampler
        ``(reservoir_sampler, source_sampler)`` as given (bound here to ``source``).
    handle : ClientHandle
        The dask client, and whether this pipeline owns it.
    preload : iterable of Entry
        Entries already loaded (a subset's share of its parent's), stored first.
    dtypes : dict, optional
        pandas dtypes of produced columns known so far.
    child : bool
        A subset: a minimum the source sampler cannot reach fails ``iter()``, not construction.
    kind : str
        The reservoir's class name, for error messages.
    family : WeakSet, optional
        The subsets of the reservoir that owns the client (a subset's subsets join it, so closing
        that reservoir closes them all); a new one when None.
    """

    def __init__(
        self,
        source: Source,
        function_to_run: Callable[[dict[str, Any]], Any],
        options: ReservoirOptions,
        samplers: tuple[Sampler, Sampler],
        handle: ClientHandle,
        *,
        preload: Iterable[Entry] = (),
        dtypes: dict[str, Any] | None = None,
        child: bool = False,
        kind: str = "AsyncReservoir",
        family: weakref.WeakSet[Any] | None = None,
    ) -> None:
        if options.world_size > len(source):
            raise ValueError(
                f"world_size={options.world_size} is larger than the source's {len(source)} rows: "
                "each rank needs at least one row in every pass"
            )
        self.closed = True  # until fully built
        self.kind = kind
        self.source, self.function, self.options, self.handle = source, function_to_run, options, handle
        self.given_samplers = samplers  # as given: subsets bind them to their own source
        self.reservoir_sampler, self.source_sampler = (
            _bind(sampler, name, source, child=child)
            for sampler, name in zip(samplers, ("reservoir_sampler", "source_sampler"), strict=True)
        )
        # a minimum the source sampler can never reach is refused before anything starts
        drawable = drawable_rows(
            self.source_sampler,
            len(source),
            required=required_entries(options, len(source)),
            minimum=options.min_reservoir_samples,
            refuse=not child,
        )
        self.store = ReservoirStore(
            options.max_reservoir_samples,
            uid_column=options.uid_column,
            uid_type=source.uid_index.stored_type,  # batches keep the source UID column's dtype
            # a row the default collate could not stack with the others fails its UID (batches of
            # one entry never stack entries: volumes of varying shapes, one per batch, are fine)
            stackable=options.collate_fn is None and options.batch_size > 1,
            max_bytes=options.max_reservoir_bytes,
        )
        self.lock = threading.RLock()  # epochs, state and close; held by iter() while it waits
        self.close_lock = threading.Lock()
        self.children: weakref.WeakSet[Any] = weakref.WeakSet() if family is None else family  # subsets
        self.served = ServedCounters()
        self.warned_lost = False
        self.address = handle.address
        self.perf_sending = Performance()
        self.perf_receiving = Performance()
        preloaded = []
        for entry in preload:
            if self.store.room() <= 0:
                break
            self.store.put(entry)
            preloaded.append(entry.uid)
        if options.cache is not None and not child:  # every worker must see the same directory
            check_cache_visible(handle.client, options.cache, options.cache_storage_options)
        self.loader, self.loader_reason = choose_loader(options.loader, handle, source)
        self.runner: RunnerLike = self.make_runner(skip_first_pass=preloaded)
        self.feeder = Feeder(
            runner=self.runner,
            store=self.store,
            source=source,
            options=options,
            source_sampler=self.source_sampler,
            served=self.served,
            check=self.check_usable,
            summary=lambda: self.stats().summary(),
            expire_for_room=lambda: self.epochs.expire_for_room(),  # noqa: PLW0108 - built next
            no_worker_note=self.no_worker_note,
            address=self.address,
            drawable=drawable,
            dtypes=dtypes,
        )
        self.epochs = Epochs(
            options=options,
            sampler=self.reservoir_sampler,
            served=self.served,
            check=self.check_usable,
            rank_epoch_rows=self.feeder.rank_epoch_rows,
            dtypes=self.feeder.dtypes,
            name=f"dask_reservoir-batches-{id(self):x}",
            take_snapshot=self.snapshot_ahead,
        )
        self.closed = False

    def make_runner(
        self,
        *,
        skip_first_pass: Iterable[Hashable] = (),
        resume: ResumePoint | None = None,
        order: Sampler | None = None,
    ) -> RunnerLike:
        """A runner (a thread, or a loader process) over this source, not started."""
        return make_runner(
            self.handle,
            self.source,
            self.function,
            self.options,
            self.source_sampler if order is None else order,
            loader=self.loader,
            skip_first_pass=list(skip_first_pass),
            perf_sending=self.perf_sending,
            perf_receiving=self.perf_receiving,
            resume=resume,
        )

    # ------------------------------------------------------------------ checks
    def check_open(self) -> None:
        """Raise :class:`ReservoirClosedError` once closed."""
        if self.closed:
            raise ReservoirClosedError(f"this {self.kind} is closed; it cannot be used any more")

    def check_usable(self) -> None:
        """Raise what the consumer must see now: closed, runner crash, job error."""
        self.check_open()
        try:
            self.runner.check()
        except ClusterLostError as exc:
            if self.options.on_cluster_loss == "raise":
                raise
            if not self.warned_lost:
                self.warned_lost = True
                logger.warning("dask_reservoir: %s; serving the %d loaded entries", exc, len(self.store))
        if self.options.on_error == "raise":
            error = self.runner.ledger.pop_error()
            if error is not None:
                raise error

    def no_worker_note(self) -> str | None:
        """Why nothing loads while the cluster has no worker (for the progress report), else None."""
        if self.runner.ledger.counters().workers:
            return None
        if self.handle.cluster is not None:
            return "starting the cluster (no worker yet)"
        return "waiting for workers (none yet)"

    # ------------------------------------------------------------------ epochs
    def iterate(self, owner: object = None) -> BatchIterator:
        """Ingest, wait as the options say, and start an epoch over a snapshot of the store.

        ``owner`` (the reservoir) is kept alive by the iterator.
        """
        with self.served.in_iter() as took:  # stats() counts a wait still going on
            self.check_usable()
            ready = self.epochs.prepared()  # prepared ahead while the last step ran, or None
            with self.lock:
                self.epochs.age()  # before ingesting: a stale epoch's entries are released first
                it = None if ready is None else self.epochs.adopt(ready, owner=owner)
                if it is not None:
                    self.feeder.handed_over()
                else:
                    self.feeder.feed(epochs=self.epochs.started)
                    snapshot = self.store.snapshot()
                    epoch = self.epochs.next_number()
            if it is None:
                it = self.epochs.start(snapshot, epoch, owner=owner)
            else:
                it = self.epochs.checked(it)
        it.carry_seconds(took[0])  # the first batch's stall includes the epoch start (counted once, here)
        return it

    def snapshot_ahead(self) -> tuple[Snapshot, int] | None:
        """For the next epoch, prepared ahead: ingest, then ``(snapshot, epoch number)``.

        Runs in the batch builder's thread.  None, with nothing taken, when the reservoir is
        busy (another thread holds its lock), closed, or below its minimum (``iter()`` waits).
        """
        if not self.lock.acquire(timeout=IDLE_SLICE):
            return None
        try:
            if self.closed or self.feeder.throttled:
                return None
            self.feeder.ingest(capped=True, ahead=True)
            if len(self.store) < self.feeder.required():
                return None
            return self.store.snapshot(), self.epochs.number
        finally:
            self.lock.release()

    def set_epoch(self, epoch: int) -> None:
        """Number the next epoch ``epoch``."""
        self.check_open()
        with self.lock:
            self.epochs.number = epoch

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The resumable state, each part writing its own keys."""
        self.check_open()
        with self.lock:
            counters = self.runner.ledger.counters()
            served = self.served.copy()
            return in_key_order(
                {
                    **header(self.source, self.options),
                    **self.epochs.state_dict(),
                    **ledger_state(self.runner.ledger, counters),
                    **samplers_state(self.source_sampler, self.reservoir_sampler),
                    **self.feeder.state_dict(epochs=self.epochs.started),
                    **members_state(self.store),
                    "counters": {
                        "batches_served": served.batches,
                        "samples_served": served.samples,
                        "rows_loaded": counters.rows_loaded,
                        "rows_failed": counters.rows_failed,
                    },
                }
            )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check ``state`` whole, then let each part read its keys (nothing applied on an error)."""
        self.check_open()
        options = self.options
        with self.lock:
            if self.epochs.started:
                raise ValueError(
                    "load_state_dict() must come before the first iter(); this reservoir started "
                    f"{self.epochs.started} epochs"
                )
            point = check_state(
                state,
                uids=self.source.uids,
                uid_column=options.uid_column,
                rank=options.rank,
                world_size=options.world_size,
                position=self.source.position,
            )
            source_sampler, reservoir_sampler, point = resumed_samplers(
                self.source_sampler,
                self.reservoir_sampler,
                point,
                source=self.source,
                rank=options.rank,
                world_size=options.world_size,
            )
            # built first: a failure leaves this reservoir as it was
            runner = self.make_runner(resume=point, order=source_sampler)
            self.runner.close()
            self.store.clear()
            self.runner = self.feeder.runner = runner
            self.source_sampler = self.feeder.source_sampler = source_sampler
            self.reservoir_sampler = self.epochs.sampler = reservoir_sampler
            self.epochs.load_state_dict({"epoch": point.epoch})
            self.feeder.load_state_dict(point)
            self.runner.start()

    # ------------------------------------------------------------------ reading
    def frame(self, uids: Iterable[Hashable] | None, stamp_column: str | None) -> pd.DataFrame:
        """The loaded entries (all, or those of ``uids``) as a DataFrame, now."""
        self.check_open()
        with self.lock:
            snapshot = self.store.snapshot()
        try:
            return entries_frame(
                snapshot,
                uids,
                source=self.source,
                uid_values=self.source.uid_index.values,
                uid_column=self.options.uid_column,
                stamp_column=stamp_column,
                dtypes=self.feeder.dtypes,
            )
        finally:
            snapshot.release()

    def subset(self, positions: list[int], sampler: Sampler) -> Pipeline:
        """A pipeline on rows ``positions`` (not sharded), starting with their loaded entries."""
        source = self.source.subset(positions)
        preload = [replace(e, position=source.position(e.uid)) for e in self.store.copies(source.uids)]
        # the child holds the uploaded code as long as it lives, whatever its parent does
        handle = ClientHandle(
            self.handle.client, owned=False, code=self.handle.code and self.handle.code.share()
        )
        try:
            return Pipeline(
                source,
                self.function,
                replace(self.options, rank=0, world_size=1),  # a subset is not sharded
                (sampler, self.given_samplers[1].subset(positions)),
                handle,
                preload=sorted(preload, key=lambda e: e.loaded_at),
                dtypes=self.feeder.dtypes,
                child=True,
                kind=self.kind,
                family=self.children,
            )
        except BaseException:
            if isinstance(source, DaskSource):
                source.release()
            handle.close()
            raise

    def stats(self) -> ReservoirStats:
        """The counters of every part, now."""
        ledger = self.runner.ledger
        counters = ledger.counters()
        store = store_fields(self.store)
        # the epoch prepared ahead is no iterator of the consumer's; read after the store's count: it
        # holds from before its snapshot is taken until its iterator is handed over
        store["live_iterators"] = max(0, store["live_iterators"] - self.epochs.ahead.holding)
        return ReservoirStats(
            **runner_fields(counters),
            **served_fields(self.served.copy(), ledger.recent_load_seconds()),
            **store,
            max_reservoir_samples=self.options.max_reservoir_samples,
            min_reservoir_samples=self.options.min_reservoir_samples,
            epochs=self.epochs.started,
            epochs_prepared=self.epochs.ahead.handed,
            mean_job_seconds=ledger.mean_load_seconds,
            address=self.address,
            status="closed" if self.closed else counters.status,
            loader=self.loader,
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> bool:
        """Stop the runner and the batch thread, close what is owned; False when already closed."""
        with self.close_lock:
            if self.closed:
                return False
            self.closed = True
        self.runner.close()
        if isinstance(self.source, DaskSource):
            self.source.release()  # its persisted partitions, before the client goes
        if self.handle.owned:
            for child in list(self.children):
                child.close()
        self.handle.close()
        self.epochs.close()
        # a consumer blocked in iter() holds the lock for at most one wait slice before it
        # sees the reservoir closed; clear only under the lock, so it never sees half a store
        if self.lock.acquire(timeout=CLOSE_LOCK_SECONDS):
            try:
                self.store.clear()
            finally:
                self.lock.release()
        return True

    def __repr__(self) -> str:
        return (
            f"<Pipeline: loader={self.loader} stored={len(self.store)} epochs={self.epochs.started} "
            f"closed={self.closed}>"
        )


def _bind(sampler: Sampler, name: str, source: Source, *, child: bool) -> Sampler:
    """``sampler.bind(source)``; its ``ValueError`` names the parameter (and the subset)."""
    try:
        return sampler.bind(source)
    except ValueError as exc:
        where = f" over the {len(source)} rows of this subset" if child else ""
        raise ValueError(f"{name}={sampler!r}{where}: {exc}") from exc

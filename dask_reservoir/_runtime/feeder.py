"""Ingestion and waiting: what ``iter()`` takes from the runner into the store before an epoch.

:class:`Feeder` applies the pure rules of :mod:`~dask_reservoir._core.ingest` to a runner (a
thread runner or a loader process) and a store: it moves waiting entries in, waits for the
minimum (or, with ``deterministic=True``, for the exact next entries), and raises what makes
the wait hopeless (:class:`~dask_reservoir.errors.JobError`), too long (``TimeoutError``) or
over (the runner's fatal error).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, cast

import numpy as np

from dask_reservoir._core.blocks import (
    BlockRow,
    ColumnBlock,
    CompletedBlock,
    entry_count,
    gc_paused,
    merge_dtypes,
)
from dask_reservoir._core.checkpoint import ResumePoint
from dask_reservoir._core.ingest import (
    minimum_error,
    rank_epoch_rows,
    required_entries,
    single_take,
    supply_error,
    take_limit,
)
from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.records import Completed
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.served import ServedCounters
from dask_reservoir._core.store import ReservoirStore
from dask_reservoir._core.store.runs import put_all
from dask_reservoir._runtime.progress import WaitProgress
from dask_reservoir._runtime.protocols import WAIT_SLICE, RunnerLike, loading_over
from dask_reservoir._source.pandas_source import Source
from dask_reservoir.errors import JobError

__all__ = ["WAIT_WARNING_SECONDS", "Feeder"]

logger = logging.getLogger("dask_reservoir")

WAIT_WARNING_SECONDS = 30.0
"""While ``iter()`` waits for the minimum, a warning with the counters is logged this often."""


class Feeder:
    """Moves finished entries from a runner into a store, and waits for them.

    Parameters
    ----------
    runner : RunnerLike
        Where finished entries wait (replaced by :meth:`AsyncReservoir.load_state_dict`).
    store : ReservoirStore
        Where they go.
    source : Source
        The source the runner loads.
    options : ReservoirOptions
        The reservoir's options (minimum, cap, timeout, ranks, ``deterministic``).
    source_sampler : Sampler
        The source sampler (rows it never draws cannot give an entry).
    served : ServedCounters
        Where the time spent waiting for the minimum is added.
    check : callable
        Raises what the consumer must see now (closed, the runner's fatal error, a job error).
    summary : callable
        Returns the counters' one-line summary, for warnings and timeouts.
    expire_for_room : callable
        ``deterministic=True``: expire an earlier epoch's iterator whose pins block the room
        (returns whether one was expired).
    no_worker_note : callable
        Why nothing loads while no worker is there (None when workers are there).
    address : str, optional
        The scheduler's address, named when the cluster is lost.
    dtypes : dict, optional
        pandas dtypes of produced columns known so far (a subset starts with its parent's).
    drawable : tuple
        :func:`drawable_rows` of the source sampler: which rows it draws, and how many it never does.
    """

    def __init__(
        self,
        *,
        runner: RunnerLike,
        store: ReservoirStore,
        source: Source,
        options: ReservoirOptions,
        source_sampler: Sampler,
        served: ServedCounters,
        check: Callable[[], None],
        summary: Callable[[], str],
        expire_for_room: Callable[[], bool],
        no_worker_note: Callable[[], str | None],
        address: str = "",
        drawable: tuple[np.ndarray | None, int] = (None, 0),
        dtypes: dict[str, Any] | None = None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.source = source
        self.options = options
        self.source_sampler = source_sampler
        self.served = served
        self.check = check
        self.summary = summary
        self.address = address
        self.expire_for_room = expire_for_room
        self.no_worker_note = no_worker_note
        self.dtypes: dict[str, Any] = dict(dtypes or {})  # batched: pandas dtypes of produced columns
        self.exact_fill: int | None = None  # deterministic: entries the next iter() ingests, if not the cap
        self.throttled = False  # ingestion paused by entries pinned by live iterators
        self.counted_ahead = 0  # entries an epoch prepared ahead took within the cap (see ingest)
        self.drawable, self.undrawable = drawable  # the rows the source sampler draws (None: all)

    # ------------------------------------------------------------------ how many
    def required(self) -> int:
        """Entries ``iter()`` waits for: the minimum (capped by the source), or a rank's epoch."""
        return required_entries(self.options, len(self.source))

    def rank_epoch_rows(self) -> int:
        """With ranks: the entries every rank's epoch serves."""
        return rank_epoch_rows(self.options, len(self.source))

    def next_fill(self, epochs: int) -> int:
        """``deterministic=True``: entries the next ``iter()`` ingests, after ``epochs`` epochs."""
        if self.exact_fill is not None:
            return self.exact_fill
        return cast(int, self.options.max_reservoir_replacement_size) if epochs else self.required()

    def state_dict(self, *, epochs: int) -> dict[str, int | None]:
        """The feeder's key of the reservoir's state: how many entries the next exact ``iter()`` ingests."""
        return {"next_fill": self.next_fill(epochs) if self.options.deterministic else None}

    def load_state_dict(self, point: ResumePoint) -> None:
        """``deterministic=True``: the former members again, then what the saving run ingested next."""
        if self.options.deterministic:
            cap = cast(int, self.options.max_reservoir_replacement_size)
            fill = point.next_fill  # version 1: the cap after an epoch, else the minimum
            self.exact_fill = point.members + (
                fill if fill is not None else (cap if point.epochs else self.required())
            )

    # ------------------------------------------------------------------ moving entries
    def feed(self, *, epochs: int) -> None:
        """Before an epoch (``epochs`` started so far): ingest, and wait as the options say."""
        if self.options.deterministic:
            self.ingest_exact(self.next_fill(epochs))
        else:
            self.ingest(capped=True)
            self.wait_for_minimum()

    def ingest(self, *, capped: bool, ahead: bool = False) -> int:
        """Move waiting entries into the store, as :func:`~dask_reservoir._core.ingest.take_limit` says.

        ``ahead``: for an epoch prepared ahead.  What it took counts against the cap of the epoch
        ``iter()`` starts itself if that one is dropped (:meth:`handed_over` forgets it when not),
        so a served epoch never brings more than ``max_reservoir_replacement_size`` new entries.
        """
        cap = self.options.max_reservoir_replacement_size
        required = self.required()
        counted = 0 if ahead else self.counted_ahead
        moved = 0
        while True:
            size, room = len(self.store), self.store.room()
            limit = take_limit(
                size=size, required=required, room=room, capped=capped, cap=cap, counted=counted
            )
            self.note_throttle(room)
            if limit == 0:
                break
            items = self.runner.take(limit)
            if not items:
                break
            self.put(items)
            taken = entry_count(items)
            moved += taken
            if size >= required:
                counted += taken
            if single_take(size=size, required=required, capped=capped, cap=cap):
                break
        self.counted_ahead = counted if ahead else 0
        return moved

    def handed_over(self) -> None:
        """The epoch prepared ahead was handed to ``iter()``: what it took was its own epoch's."""
        self.counted_ahead = 0

    def put(self, items: Sequence[Completed | CompletedBlock]) -> int:
        """Put taken entries into the store; one that cannot be stored is that UID's failure.

        Returns the entries stored (an empty result stores nothing).
        """
        last = None
        for item in items:  # the pandas dtypes of batched results, to restore in tables
            block: ColumnBlock | None = None
            if isinstance(item, CompletedBlock):
                block = item.block
            elif item.rows and type(item.rows[0]) is BlockRow:
                block = item.rows[0].block
            if block is not None and block is not last:
                last = block
                merge_dtypes(self.dtypes, block.dtypes)
        with gc_paused():
            stored, rejected = put_all(self.store, items)  # a finished task's block at once
        for refused, exc in rejected:
            self.runner.ledger.rejected(refused.uid, exc, refused.position)
        return stored

    def note_throttle(self, room: int) -> None:
        """Log once per episode that live iterators pin the store's memory bound."""
        throttled = room <= 0 and self.runner.ledger.has_waiting()
        if throttled and not self.throttled:
            logger.warning(
                "dask_reservoir: %d evicted entries are still read by %d live iterators (epochs not "
                "finished or not dropped): new results wait until they end or expire (max_stale_epochs), "
                "so memory stays bounded",
                self.store.pinned_retired,
                self.store.live_snapshots,
            )
        self.throttled = throttled

    # ------------------------------------------------------------------ waiting
    def ingest_exact(self, wanted: int) -> None:
        """``deterministic=True``: ingest exactly the next ``wanted`` entries in submission order.

        The first epoch ingests the minimum, a resumed run its former members plus the
        cap, every other epoch ``max_reservoir_replacement_size``.  Waits like the
        minimum: up to ``timeout``, raising what stops the runner.
        """
        timeout = self.options.timeout
        start = time.monotonic()
        warned = start
        got = 0
        finished = False
        try:
            while True:
                # the exact entries, and never an epoch below the minimum (a reload replaces its entry)
                short = max(wanted - got, self.required() - len(self.store))
                if short <= 0:
                    break
                self.check()
                room = self.store.room()
                items = self.runner.take(min(short, room)) if room > 0 else []
                if items:
                    got += self.put(items)  # entries stored: empty results and rejections do not count
                    continue
                if room <= 0 and self.runner.ledger.has_waiting() and self.expire_for_room():
                    continue  # never wait for an iterator that the consumer may never advance
                if self.passes_ended():
                    break
                self.note_throttle(room)
                if len(self.store) < self.required():
                    error = self.minimum_error(self.required())
                else:  # the minimum is there: the next entries can still come from any row that loads
                    error = self.supply_error(wanted, got)
                if error is not None:
                    raise error
                now = time.monotonic()
                elapsed = now - start
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError(
                        f"iter() waited {timeout:g} s (timeout) for the next {wanted} entries in submission "
                        f"order (deterministic=True) and got {got}; {self.summary()}"
                    )
                if now - warned >= WAIT_WARNING_SECONDS:
                    warned = now
                    logger.warning(
                        "dask_reservoir: iter() has waited %.0f s for the next %d entries in submission order "
                        "(deterministic=True) and got %d: %s",
                        elapsed,
                        wanted,
                        got,
                        self.summary(),
                    )
                self.runner.wait(WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed))
            finished = True
        finally:
            # an iter() that raised leaves the rest of its entries to the next one, so the
            # epochs after a JobError or a TimeoutError ingest what they would have
            self.exact_fill = None if finished or got >= wanted else wanted - got
            self.served.add_minimum_wait(time.monotonic() - start)

    def wait_for_minimum(self) -> None:
        """Wait until the store holds :meth:`required` entries, ingesting as they come."""
        required = self.required()
        if len(self.store) >= required:
            return
        timeout = self.options.timeout
        start = time.monotonic()
        warned = start
        report = WaitProgress(required, enabled=self.options.progress and len(self.store) < required)
        try:
            while len(self.store) < required:
                report.update(len(self.store), note=self.no_worker_note() if report.enabled else None)
                self.check()
                error = self.minimum_error(required)
                if error is not None:
                    raise error
                now = time.monotonic()
                elapsed = now - start
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError(
                        f"iter() waited {timeout:g} s (timeout) for {required} entries "
                        f"(min_reservoir_samples) but the reservoir holds {len(self.store)}; "
                        f"{self.summary()}"
                    )
                if now - warned >= WAIT_WARNING_SECONDS:
                    warned = now
                    logger.warning(
                        "dask_reservoir: iter() has waited %.0f s for the minimum of %d entries: %s",
                        elapsed,
                        required,
                        self.summary(),
                    )
                remaining = WAIT_SLICE if timeout is None else min(WAIT_SLICE, timeout - elapsed)
                self.runner.wait(remaining)
                self.ingest(capped=False)
                if self.passes_ended():
                    break
        finally:
            report.update(len(self.store))
            report.close()
            self.served.add_minimum_wait(time.monotonic() - start)

    # ------------------------------------------------------------------ hopeless waits
    def passes_ended(self) -> bool:
        """``passes=``: all loaded and ingested; True serves what is stored (:class:`JobError` if nothing is)."""
        if self.options.passes is None or not loading_over(self.runner.ledger):
            return False
        if len(self.store):
            return True
        counters = self.runner.ledger.counters()
        shown = "; ".join(f.describe() for f in counters.failures[:5]) or "none recorded"
        raise JobError(
            f"passes={self.options.passes} ended with no entry to serve ({counters.rows_loaded} rows loaded, "
            f"{counters.rows_failed} failed); failures: {shown}"
        )

    def minimum_error(self, required: int) -> BaseException | None:
        """The error ending a wait for ``required`` entries now (``passes=``: only a lost cluster's)."""
        counters = self.runner.ledger.counters()
        if self.options.passes is not None and counters.status != "lost":
            return None
        unloadable = self.drawn(counters.unloadable)
        in_store = sum(1 for uid in unloadable if uid in self.store)
        if self.drawable is not None:  # rows never drawn hold an entry only if it was there before
            in_store += sum(1 for e in self.store if not self.drawable[e.position])
        return minimum_error(
            size=len(self.store),
            required=required,
            n_source=len(self.source),
            unloadable=unloadable,
            in_store=in_store,
            failures=counters.failures,
            quarantined=counters.quarantined,
            status=counters.status,
            address=self.address,
            undrawable=self.undrawable,
            sampler=repr(self.source_sampler),
        )

    def supply_error(self, wanted: int, got: int) -> BaseException | None:
        """``deterministic=True``: the error to raise when no row can give the entries waited for."""
        if self.options.passes is not None:  # the run serves what it loaded once it ends
            return None
        counters = self.runner.ledger.counters()
        return supply_error(
            wanted=wanted,
            got=got,
            n_source=len(self.source),
            unloadable=self.drawn(counters.unloadable),
            failures=counters.failures,
            quarantined=counters.quarantined,
            undrawable=self.undrawable,
            sampler=repr(self.source_sampler),
        )

    def drawn(self, uids: frozenset[Hashable]) -> frozenset[Hashable]:
        """Those of ``uids`` the source sampler draws (the others are counted apart)."""
        if self.drawable is None:
            return uids
        drawable, position = self.drawable, self.source.position
        return frozenset(u for u in uids if drawable[position(u)])

    def __repr__(self) -> str:
        stored, required = len(self.store), self.required()
        return f"<Feeder: {stored=} {required=} exact_fill={self.exact_fill} throttled={self.throttled}>"

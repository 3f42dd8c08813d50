"""Counters and summaries: :class:`ReservoirStats` and the builders of its fields.

Plain data, no threads and no dask: the reservoir assembles a
:class:`ReservoirStats` from the counters of its parts each time
:meth:`AsyncReservoir.stats` is called.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np

from dask_reservoir._core.records import FailureRecord, RunnerCounters
from dask_reservoir._core.served import Served
from dask_reservoir._core.store import ReservoirStore

__all__ = [
    "ReservoirStats",
    "entry_summary",
    "percentiles",
    "runner_fields",
    "served_fields",
    "store_fields",
]


@dataclass(frozen=True)
class ReservoirStats:
    """A snapshot of a reservoir's counters, returned by ``AsyncReservoir.stats()``.

    Job counters count dask tasks (one task holds ``rows_per_job`` source rows);
    entry counters count UIDs (one entry holds the rows produced for one UID).

    Attributes
    ----------
    jobs_submitted, jobs_completed, jobs_failed : int
        Tasks submitted, finished (whatever the outcome of their rows) and failed
        as a whole (exception, ``KilledWorker``).  A row that fails inside a task that
        completes counts in ``rows_failed`` only: ``jobs_failed == 0`` does not mean
        nothing failed; ``rows_failed`` counts every failed row, those of failed tasks included.
    rows_submitted, rows_loaded, rows_failed, rows_requeued : int
        Source rows submitted; finished with a result; failed (``function_to_run``
        raised, returned garbage, timed out, or its task failed as a whole); and
        submitted again because their task was cancelled under us or its result
        could not be fetched.
    rows_cancelled : int
        Source rows still in flight when the reservoir closed (their tasks were cancelled).
        ``rows_submitted == rows_loaded + rows_failed + rows_requeued + rows_cancelled + rows_in_flight``
        holds at any time, also after ``close()``.
    jobs_in_flight, rows_in_flight : int
        Tasks (and their source rows) submitted and not yet finished.
    entries_waiting : int
        Finished entries waiting to be ingested at the next ``iter()``.
    reservoir_size, max_reservoir_samples, min_reservoir_samples : int
        Entries in the reservoir now, its capacity, and the minimum ``iter()`` waits for.
    entries_ingested, entries_evicted, entries_replaced : int
        Entries moved into the reservoir, evicted as the oldest, and replaced by a
        fresher entry of the same UID.
    epochs, batches_served, samples_served : int
        ``iter()`` calls, batches yielded, rows yielded.
    epochs_prepared : int
        ``iter()`` calls that handed over an epoch prepared ahead: its entries ingested, its
        snapshot taken and its first batches built while the previous epoch's last step ran.
    mean_job_seconds : float
        Mean running time of ``function_to_run`` per source row, measured on the worker.
    load_seconds_p50, load_seconds_p90, load_seconds_p99 : float
        Percentiles of that time over the last 1000 rows loaded (NaN before any).
    age_seconds_median, age_seconds_max : float
        Seconds since the entries now in the reservoir were loaded (NaN when empty).
    times_served_mean, times_served_max : float
        How many times the entries now in the reservoir were put in a batch.
    columnar_bytes : int
        Bytes of the columnar store's slots in use or ever written (fixed-shape entries);
        what the columns really take in memory.
    reservoir_bytes, pinned_bytes : int
        Bytes of the entries in the reservoir, and of the entries removed that live iterators
        still read (arrays by ``nbytes``, text by length, other values 8 bytes each).
    max_reservoir_bytes : int or None
        The byte bound on ``reservoir_bytes`` (``max_reservoir_bytes``), None when not set.
    entries_pinned : int
        Entries already evicted or replaced but still read by a live iterator (an epoch
        not finished or not yet garbage-collected) or by the epoch prepared ahead; they count against the store's
        memory bound, and while that bound is reached new results wait.
    live_iterators : int
        Epochs started by ``iter()`` and not finished nor dropped (the epoch prepared ahead,
        not handed out yet, is not one).
    uids_loaded : int
        Distinct UIDs loaded at least once (coverage of the source by loading).
    uids_served : int
        Distinct UIDs put in a batch at least once (coverage by training), counted when
        each epoch ends.
    source_passes : int
        Passes over the source whose every row was submitted.
    loading_done : bool
        With ``passes=``: every pass was submitted and every job came back (loaded or
        failed).  Results waiting to be ingested hold the back-pressure bound, so it only
        becomes True as ``iter()`` or ``wait_loaded()`` ingests them: wait with
        ``wait_loaded()``, not by polling ``stats()``.  Always False without ``passes``.
    cache_hits, cache_misses : int
        Source rows whose result the persistent tier (``cache=``) held, and rows it did not
        hold (computed, then written).  A corrupt file counts as a miss.
    cache_bytes_read, cache_bytes_written : int
        Bytes of the persistent tier's files read and written by the workers.
    oldest_unserved_uid : Hashable or None
        Of the entries in the reservoir never put in a batch, the one loaded first
        (None when every entry was served).
    consumer_wait_seconds : float
        Total time the consumer spent inside ``iter()`` and ``next()``: what loading
        and batching cost the training loop, an ``iter()`` still waiting included.  With
        several threads iterating at once, the sum of their times (it may exceed the
        wall time then).
    minimum_wait_seconds : float
        The part of it ``iter()`` spent waiting for ``min_reservoir_samples`` entries.
    stall_seconds_p50, stall_seconds_p99 : float
        Percentiles, over the last 1000 batches, of the time the consumer waited for
        each batch (``next()``, plus ``iter()`` for an epoch's first batch); NaN before any.
    failures : tuple of FailureRecord
        The latest failure of each UID that ever failed.
    quarantined : dict
        UID -> its last :class:`FailureRecord`, for the UIDs no longer submitted after
        ``max_failures_per_uid`` failures in a row (see ``release_quarantine``).
    address : str
        The scheduler address.
    status : str
        ``"running"``, ``"connecting"`` (the client is trying to reconnect),
        ``"lost"`` (it gave up, or the loader process died) or ``"closed"``.
    loader : str
        ``"process"`` when a loader process owns the dask client and the jobs,
        ``"thread"`` when a thread of this process does (see ``AsyncReservoir(loader=)``).
    workers : int
        Workers in the cluster at the last look (about every second; 0 before the first).
    workers_lost : int
        Workers that left the cluster while the reservoir ran (killed, crashed, retired;
        a worker restarted by its nanny counts as one lost, and the new one in ``workers``).
    rows_rerun : int
        Source rows whose task a leaving worker was running, or whose result only it
        held: dask runs them again elsewhere, without telling the client (they stay in
        flight, or end as ``KilledWorker`` after dask's ``allowed-failures``).  Not part
        of the balance of ``rows_submitted``: they were submitted once.
    loading_held_seconds : float
        Seconds the back-pressure bound (``max_jobs_at_once`` tasks, at most
        ``max_reservoir_samples`` rows, in flight or waiting to be ingested) held loading back
        while worker threads sat idle.  Growing while the consumer loops: raise
        ``max_jobs_at_once``, or call ``iter()`` more often (ingesting frees the bound).
    """

    jobs_submitted: int = 0
    rows_submitted: int = 0
    rows_loaded: int = 0
    rows_requeued: int = 0
    rows_cancelled: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    rows_failed: int = 0
    jobs_in_flight: int = 0
    rows_in_flight: int = 0
    entries_waiting: int = 0
    reservoir_size: int = 0
    max_reservoir_samples: int = 0
    min_reservoir_samples: int = 0
    entries_ingested: int = 0
    entries_evicted: int = 0
    entries_replaced: int = 0
    epochs: int = 0
    epochs_prepared: int = 0
    batches_served: int = 0
    samples_served: int = 0
    mean_job_seconds: float = 0.0
    load_seconds_p50: float = float("nan")
    load_seconds_p90: float = float("nan")
    load_seconds_p99: float = float("nan")
    age_seconds_median: float = float("nan")
    age_seconds_max: float = float("nan")
    times_served_mean: float = float("nan")
    times_served_max: float = float("nan")
    columnar_bytes: int = 0
    reservoir_bytes: int = 0
    pinned_bytes: int = 0
    max_reservoir_bytes: int | None = None
    entries_pinned: int = 0
    live_iterators: int = 0
    uids_loaded: int = 0
    uids_served: int = 0
    source_passes: int = 0
    oldest_unserved_uid: Hashable | None = None
    consumer_wait_seconds: float = 0.0
    minimum_wait_seconds: float = 0.0
    stall_seconds_p50: float = float("nan")
    stall_seconds_p99: float = float("nan")
    failures: tuple[FailureRecord, ...] = field(default_factory=tuple)
    quarantined: Mapping[Hashable, FailureRecord] = field(default_factory=dict)
    address: str = ""
    status: str = "running"
    loader: str = "thread"
    workers: int = 0
    workers_lost: int = 0
    rows_rerun: int = 0
    loading_held_seconds: float = 0.0
    loading_done: bool = False
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes_read: int = 0
    cache_bytes_written: int = 0

    def summary(self) -> str:
        """A one-line human summary of the counters.

        Rows, not tasks: ``rows L loaded / F failed`` counts source rows (a task holds
        ``rows_per_job`` of them), so failures show whether a whole task or one of its
        rows failed.

        Examples
        --------
        >>> ReservoirStats(reservoir_size=3, max_reservoir_samples=8, workers=2).summary()
        'reservoir 3/8, waiting 0, in flight 0 rows, rows 0 loaded / 0 failed, epochs 0, samples served 0, waited 0.00 s, workers 2, status running'
        >>> ReservoirStats(consumer_wait_seconds=0.5, stall_seconds_p50=2e-4, stall_seconds_p99=3e-3).summary()[-78:]
        'waited 0.50 s (per batch: p50 0.20 ms, p99 3.00 ms), workers 0, status running'
        >>> ReservoirStats(workers=1, workers_lost=1, rows_rerun=4).summary().split("s, ")[-1]
        'workers 1 (1 lost, 4 rows re-run), status running'
        >>> ReservoirStats(loading_held_seconds=2.5).summary().split(", ")[2]
        'in flight 0 rows (the bound held loading back 2.5 s)'
        >>> ReservoirStats(rows_loaded=5, cache_hits=3, cache_misses=2, loading_done=True).summary().split(", ")[3:5]
        ['rows 5 loaded (cache 3 hits / 2 misses', 'loading done) / 0 failed']
        """
        stalls = ""
        if self.stall_seconds_p50 == self.stall_seconds_p50:  # not NaN: some batch was served
            stalls = f" (per batch: p50 {self.stall_seconds_p50 * 1e3:.2f} ms, p99 {self.stall_seconds_p99 * 1e3:.2f} ms)"
        failed = f"{self.rows_failed} failed"
        if self.quarantined:
            failed += f" ({len(self.quarantined)} UIDs quarantined)"
        workers = f"workers {self.workers}"
        if self.workers_lost:
            workers += f" ({self.workers_lost} lost, {self.rows_rerun} rows re-run)"
        loaded = (
            [f"cache {self.cache_hits} hits / {self.cache_misses} misses"]
            if self.cache_hits or self.cache_misses
            else []
        )
        loaded += ["loading done"] if self.loading_done else []
        held = ""
        if self.loading_held_seconds >= 0.05:
            held = f" (the bound held loading back {self.loading_held_seconds:.1f} s)"
        return (
            f"reservoir {self.reservoir_size}/{self.max_reservoir_samples}, "
            f"waiting {self.entries_waiting}, in flight {self.rows_in_flight} rows{held}, "
            f"rows {self.rows_loaded} loaded{' (' + ', '.join(loaded) + ')' if loaded else ''} / {failed}, "
            f"epochs {self.epochs}, samples served {self.samples_served}, "
            f"waited {self.consumer_wait_seconds:.2f} s{stalls}, {workers}, status {self.status}"
        )


class EntryFields(TypedDict):
    """Fields of :class:`ReservoirStats` summarising the entries in the reservoir."""

    age_seconds_median: float
    age_seconds_max: float
    times_served_mean: float
    times_served_max: float


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p90 and p99 of ``values``; NaN for none.

    Examples
    --------
    >>> percentiles([1.0, 2.0, 3.0])[0], percentiles([])[2]
    (2.0, nan)
    """
    if not len(values):
        return (float("nan"),) * 3
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=float), [50, 90, 99]).tolist()
    return p50, p90, p99


def entry_summary(ages: np.ndarray, served: np.ndarray) -> EntryFields:
    """Median and max age, mean and max serve count of the entries in the reservoir.

    Examples
    --------
    >>> entry_summary(np.array([1.0, 3.0]), np.array([0, 4]))["times_served_mean"]
    2.0
    """
    nan = float("nan")
    return {
        "age_seconds_median": float(np.median(ages)) if ages.size else nan,
        "age_seconds_max": float(ages.max()) if ages.size else nan,
        "times_served_mean": float(served.mean()) if served.size else nan,
        "times_served_max": float(served.max()) if served.size else nan,
    }


def runner_fields(c: RunnerCounters) -> dict[str, Any]:
    """The fields of :class:`ReservoirStats` that come from the runner's counters."""
    return {
        "jobs_submitted": c.jobs_submitted,
        "rows_submitted": c.rows_submitted,
        "rows_loaded": c.rows_loaded,
        "rows_requeued": c.rows_requeued,
        "rows_cancelled": c.rows_cancelled,
        "jobs_completed": c.jobs_completed,
        "jobs_failed": c.jobs_failed,
        "rows_failed": c.rows_failed,
        "jobs_in_flight": c.jobs_in_flight,
        "rows_in_flight": c.rows_in_flight,
        "entries_waiting": c.entries_waiting,
        "uids_loaded": c.uids_loaded,
        "source_passes": c.source_passes,
        "failures": c.failures,
        "quarantined": dict(c.quarantined),
        "workers": c.workers,
        "workers_lost": c.workers_lost,
        "rows_rerun": c.rows_rerun,
        "loading_held_seconds": c.loading_held_seconds,
        "loading_done": c.loading_done,
        "cache_hits": c.cache_hits,
        "cache_misses": c.cache_misses,
        "cache_bytes_read": c.cache_bytes_read,
        "cache_bytes_written": c.cache_bytes_written,
    }


def store_fields(store: ReservoirStore) -> dict[str, Any]:
    """The fields of :class:`ReservoirStats` that come from the store: its entries and counters."""
    now = time.monotonic()
    slots, loaded_at, served = store.member_arrays()  # arrays: no object per entry
    unserved = np.flatnonzero(served == 0)
    oldest = unserved[np.argmin(loaded_at[unserved])] if len(unserved) else None
    return {
        **entry_summary(now - loaded_at, served.astype(float)),
        "reservoir_size": len(slots),
        "uids_served": store.positions_served,
        "oldest_unserved_uid": None if oldest is None else store.uids_at(slots[oldest : oldest + 1])[0],
        "entries_ingested": store.ingested,
        "entries_evicted": store.evicted,
        "entries_replaced": store.replaced,
        "columnar_bytes": store.columnar_bytes(),
        **dict(zip(("reservoir_bytes", "pinned_bytes"), store.nbytes(), strict=True)),
        "max_reservoir_bytes": store.max_bytes,
        "entries_pinned": store.pinned_retired,
        "live_iterators": store.live_snapshots,
    }


def served_fields(served: Served, recent_load_seconds: Sequence[float]) -> dict[str, Any]:
    """The fields of :class:`ReservoirStats` about what the consumer saw and how long loads take."""
    p50, p90, p99 = percentiles(recent_load_seconds)
    stall_p50, _, stall_p99 = percentiles(served.stalls)
    return {
        "batches_served": served.batches,
        "samples_served": served.samples,
        "consumer_wait_seconds": served.wait_seconds,
        "minimum_wait_seconds": served.minimum_wait_seconds,
        "stall_seconds_p50": stall_p50,
        "stall_seconds_p99": stall_p99,
        "load_seconds_p50": p50,
        "load_seconds_p90": p90,
        "load_seconds_p99": p99,
    }

"""The job runner: the only place with a thread and dask futures of jobs.

One named daemon thread asks the :class:`~dask_reservoir._core.ledger.Ledger` what
to submit next (``rows_per_job`` source rows per dask task, in the order of
the source sampler, cycling forever, within the back-pressure bound), submits
it (its task: :mod:`~dask_reservoir._runtime.jobs`), and hands what became of each
task (see :mod:`~dask_reservoir._runtime.collector`) back to the ledger.  The pickled
function is sent once, as one task every job depends on.  Task errors are read, their
traceback cleared and the futures cancelled (dask/distributed#8790).  A task
cancelled by someone else, or whose result could not be fetched, is submitted
again after a back-off; after :data:`MAX_UNEXPECTED` such losses in a row its
rows fail.  Every second or so the runner re-reads the cluster
(:mod:`~dask_reservoir._runtime.cluster_watch`): the default back-pressure bound
follows its worker threads, and a worker that cannot import the function's package
switches the function to travel by value.  Every wait is sliced (``WAIT_SLICE``) and
checks a stop ``Event``; what stops the thread is handed to the consumer, which
re-raises it in its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any, cast

import dask
from distributed import Client, Future

from dask_reservoir._core.blocks import ChunkLoaded, CompletedBlock
from dask_reservoir._core.checkpoint import ResumePoint
from dask_reservoir._core.etiquette import Placement
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._core.options import ReservoirOptions, placement
from dask_reservoir._core.performance import Performance
from dask_reservoir._core.records import Completed
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._runtime.cluster import ClientHandle, importable_on
from dask_reservoir._runtime.cluster_watch import ClusterWatch
from dask_reservoir._runtime.collector import (
    MAX_UNEXPECTED,
    TRANSFER_SETTLE_SECONDS,
    Arrival,
    LossTracker,
    ResultCollector,
)
from dask_reservoir._runtime.jobs import FunctionPayload, Job, job_call, load_key
from dask_reservoir._runtime.protocols import JOIN_TIMEOUT, WAIT_SLICE, raise_fatal
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import Source
from dask_reservoir._worker.cache.tier import CacheCounted, cache_tier
from dask_reservoir._worker.calls import JobSpec
from dask_reservoir._worker.shipping import FunctionLoadError, function_package
from dask_reservoir.errors import ClusterLostError, JobError

__all__ = ["JobRunner", "runner_for"]

logger = logging.getLogger("dask_reservoir")


class JobRunner:
    """Run ``function_to_run`` over a source in the background, forever, with back-pressure.

    Parameters
    ----------
    client : distributed.Client
        The client to submit to (not closed here).
    source : Source
        The rows; ``source.uids[i]`` names row ``i``.  Not owned: the pipeline releases a
        :class:`DaskSource`'s partitions (a resumed run replaces the runner, not the source).
    spec : JobSpec
        The pickled function and its options.
    order : Sampler
        Order of source rows in each pass.
    max_rows : int or None
        Most source rows in flight plus finished-but-not-taken, fixed (tests); None: the
        bound follows ``max_jobs`` and the task size.
    max_jobs : int or None
        Most tasks out (``max_jobs_at_once``); None follows the cluster.
    rows_per_job : int or None
        Source rows per dask task; None sizes tasks (``rows_per_job="auto"``).
    retries : int
        dask ``retries=`` of each task.
    check_imports : bool
        Ask each worker that joins whether it imports the function's package (False for
        the embedded cluster, whose workers import what this process imports).
    **ledger_options
        ``auto_bound_threads``, ``capacity``, ``max_failures_per_uid``, ``collect_errors``,
        ``skip_first_pass``, ``rank``, ``world_size``, ``deterministic``, ``max_passes``, ``max_bytes``, ``placement`` (etiquette): see :class:`~dask_reservoir._core.ledger.Ledger`.
    """

    def __init__(
        self,
        client: Client,
        source: Source,
        spec: JobSpec,
        *,
        order: Sampler,
        max_rows: int | None,
        rows_per_job: int | None,
        max_jobs: int | None = None,
        retries: int = 0,
        auto_bound_threads: int | None = None,
        capacity: int | None = None,
        max_failures_per_uid: int | None = None,
        collect_errors: bool = False,
        skip_first_pass: Sequence[Hashable] = (),
        perf_sending: Performance | None = None,
        perf_receiving: Performance | None = None,
        check_imports: bool = True,
        rank: int = 0,
        world_size: int = 1,
        deterministic: bool = False,
        max_passes: int | None = None,
        max_bytes: int | None = None,
        placement: Placement | None = None,
        resume: ResumePoint | None = None,
        transient_workers: frozenset[str] = frozenset(),
    ) -> None:
        self._client = client
        self._source = source
        self._placement = placement or Placement()
        self._function = FunctionPayload(client, spec, self._placement)
        self._check_imports = check_imports
        check_uid = isinstance(source, DaskSource) and source.has_uid_column
        self._options = spec.options(check_uid=check_uid)
        self._retries = retries
        self.ledger = Ledger(
            source.uids,
            order,
            max_rows=max_rows,
            max_jobs=max_jobs,
            rows_per_job=rows_per_job,
            auto_bound_threads=auto_bound_threads,
            capacity=capacity,
            max_failures_per_uid=max_failures_per_uid,
            collect_errors=collect_errors,
            skip_first_pass=skip_first_pass,
            rank=rank,
            world_size=world_size,
            deterministic=deterministic,
            max_passes=max_passes,
            max_bytes=max_bytes,
            chunks=spec.batched,
        )
        if resume is not None:
            self.ledger.restore(
                source_pass=resume.source_pass,
                source_cursor=resume.source_cursor,
                first=resume.first,
                quarantined=resume.quarantined,
                order=resume.order,
            )
        self.perf_sending = perf_sending or Performance()
        self.perf_receiving = perf_receiving or Performance()
        # only touched by the runner thread (or by close() when it never started)
        self._in_flight: dict[Hashable, tuple[Future, Job]] = {}
        self._losses = LossTracker()
        self._watch = ClusterWatch(client, self.ledger, empty_recheck=WAIT_SLICE, transient=transient_workers)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._poked = False
        self._collector = ResultCollector(client, self._cond)
        self._thread = threading.Thread(
            target=self._run, name=f"dask_reservoir-runner-{id(self):x}", daemon=True
        )

    # ------------------------------------------------------------------ consumer side
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if not self._thread.is_alive() and not self._stop.is_set() and self._thread.ident is None:
            self._thread.start()

    def take(self, limit: int | None = None) -> list[Completed | CompletedBlock]:
        """Remove and return up to ``limit`` waiting entries, oldest first; wake the runner."""
        taken = self.ledger.take(limit)
        if taken:
            self.poke()
        return taken

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""
        self.ledger.wait(min(timeout, WAIT_SLICE))

    def poke(self) -> None:
        """Wake the runner thread now (room was freed, or it should stop)."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def check(self) -> None:
        """Raise, in the caller's thread, what stopped the runner thread, if anything."""
        raise_fatal(self.ledger.fatal)

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop submitting, cancel or release every future, join the thread (idempotent)."""
        self._stop.set()
        self.poke()
        with self.ledger.cond:
            self.ledger.cond.notify_all()
        if self._thread.ident is None:
            if not self._thread.is_alive():
                self._cleanup()
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - a call stuck past its deadline
                logger.warning("dask_reservoir runner thread did not stop within %.1f s", timeout)
        self.ledger.close()

    def wait_released(self, timeout: float) -> bool:
        """After :meth:`close`, wait until the scheduler holds no dask_reservoir task.

        Releases travel to the scheduler asynchronously; at interpreter exit they must be
        handled before the scheduler's thread pools stop, or it logs errors.  Polls every
        few milliseconds up to ``timeout``; True when nothing is left (or no scheduler).
        See :meth:`~dask_reservoir._runtime.cluster_watch.ClusterWatch.wait_released`.
        """
        return self._watch.wait_released(timeout)

    def __repr__(self) -> str:
        c = self.ledger.counters()
        return (
            f"<JobRunner: in_flight={c.rows_in_flight} waiting={c.entries_waiting} "
            f"done={c.jobs_completed} rows_failed={c.rows_failed} status={c.status}>"
        )

    # ------------------------------------------------------------------ runner thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._watch.connected():
                    self._idle()
                    continue
                self._release_held()
                self._submit_more()
                self._check_cluster()
                arrived = self._collector.take()
                if arrived:
                    self._handle(arrived)
                else:
                    self._idle()
        except BaseException as exc:  # handed to the consumer's thread
            if not self._stop.is_set():
                logger.debug("dask_reservoir runner stopped by %r", exc)
                status = "lost" if isinstance(exc, ClusterLostError) else self.ledger.status
                self.ledger.set_status(status, fatal=exc)
        finally:
            self._cleanup()

    def _idle(self) -> None:
        with self._cond:
            if not self._poked and not self._collector.has_arrivals() and not self._stop.is_set():
                self._cond.wait(timeout=WAIT_SLICE)
            self._poked = False

    # ------------------------------------------------------------------ the cluster
    def _check_cluster(self) -> None:
        """Every ``CLUSTER_CHECK_SECONDS``: follow worker threads; check joining workers import the function."""
        joined = self._watch.check()
        package = self._function.package
        if joined and self._check_imports and not self._function.spec.by_value and package is not None:
            if importable_on(self._client, package, joined) is False:
                self._function.to_by_value(f"worker(s) {joined} cannot import {package!r}")

    # ------------------------------------------------------------------ submitting
    def _release_held(self) -> None:
        for positions in self._losses.ready(now=time.monotonic()):
            self.ledger.requeued(positions)

    def _submit_more(self) -> None:
        while not self._stop.is_set():
            positions = self.ledger.next_job()
            if not positions:
                return
            self._submit(positions)

    def _submit(self, positions: list[int]) -> None:
        uids = self._source.uid_index.take(positions)
        key = load_key(uids[0])
        start = time.perf_counter()
        spec, payload = self._function.spec, self._function.future()
        args = job_call(
            self._source, positions, uids, options=self._options, payload=payload, batched=spec.batched
        )
        with dask.annotate(**self._placement.annotations):
            future = self._client.submit(
                *args, key=key, retries=self._retries, pure=False, **self._placement.submit_kwargs()
            )
        self.perf_sending.add(time.perf_counter() - start)
        self._in_flight[future.key] = (future, Job(positions, time.monotonic(), spec.by_value))
        self._watch.submitted(str(future.key), len(positions))
        self.ledger.submitted(positions)
        self._collector.watch(future)

    # ------------------------------------------------------------------ what came back
    def _handle(self, arrived: list[tuple[Future, Arrival]]) -> None:
        failed = []
        for future, arrival in arrived:
            item = self._in_flight.pop(future.key, None)
            if item is None:
                continue
            job = item[1]
            if arrival.kind == "finished":
                value = arrival.value
                if type(value) is CacheCounted:  # cache=: the task's hits and misses
                    self.ledger.cached(value.counts)
                    value = value.result
                now = time.monotonic()
                self.perf_receiving.add(now - job.submitted_at)
                self._losses.loaded(job.positions)
                if type(value) is ChunkLoaded:
                    self.ledger.finished_chunk(job.positions, value, now=now)
                else:
                    self.ledger.finished(job.positions, value, now=now)
            elif arrival.kind == "error":
                failed.append(future)
                exc = cast(BaseException, arrival.error)  # always set for "error"
                if (
                    isinstance(exc, FunctionLoadError)
                    and not job.by_value
                    and self._function.package is not None
                ):
                    self._function.to_by_value(f"a worker cannot load function_to_run ({exc})")
                    self.ledger.requeued(job.positions)
                else:
                    self.ledger.failed(job.positions, exc, arrival.text)
            elif self._stop.is_set() or self._client.status != "running" or _connection_lost(arrival):
                self.ledger.requeued(job.positions)  # the scheduler went away: not the job's fault
            else:
                self._unexpected(job, arrival)
        if failed:
            self._cancel(failed)

    def _unexpected(self, job: Job, arrival: Arrival) -> None:
        """A task cancelled by someone else, or a result that could not be fetched."""
        what = (
            "was cancelled by someone other than this reservoir"
            if arrival.kind == "cancelled"
            else f"could not be fetched ({arrival.error!r})"
        )
        uids = [self._source.uids[p] for p in job.positions]
        delay = self._losses.lost(job.positions, now=time.monotonic())
        if delay is None:
            error = JobError(
                f"the dask task for UIDs {uids[:5]!r} {what}, {MAX_UNEXPECTED} times in a row; its rows failed"
            )
            self.ledger.failed(job.positions, error, arrival.text)
        else:
            logger.warning(
                "dask_reservoir: the task for UIDs %r %s; submitting again in %.1f s", uids[:5], what, delay
            )

    def _cancel(self, futures: list[Future]) -> None:
        try:
            if self._client.status == "running":
                self._client.cancel(futures)
        except Exception as exc:  # pragma: no cover - best effort
            logger.debug("cancel failed: %r", exc)

    def _cleanup(self) -> None:
        """Cancel our jobs and the function, release shared partitions, count what was in flight."""
        jobs = list(self._in_flight.values())
        self._in_flight.clear()
        futures = [f for f, _ in jobs]
        payload = self._function.detach()
        if payload is not None:
            futures.append(payload)
        # the futures are cancelled, then results being fetched may arrive, then watchers stop
        running = self._client.status == "running"  # else nothing can arrive: do not wait
        self._collector.abandon(
            self._cancel, futures, transfer_timeout=TRANSFER_SETTLE_SECONDS if running else 0.0
        )
        futures.clear()
        if running and jobs:
            self._watch.wait_executions_end({str(f.key) for f, _ in jobs})
        for _, job in jobs:
            self.ledger.cancelled(job.positions)
        for positions in self._losses.drain():
            self.ledger.cancelled(positions)


def _connection_lost(arrival: Arrival) -> bool:
    return getattr(arrival.error, "reason", None) == "scheduler-connection-lost"


def runner_for(
    handle: ClientHandle,
    source: Source,
    function: Any,
    options: ReservoirOptions,
    order: Sampler,
    *,
    skip_first_pass: Sequence[Hashable] = (),
    perf_sending: Performance | None = None,
    perf_receiving: Performance | None = None,
    resume: ResumePoint | None = None,
) -> JobRunner:
    """The runner of a reservoir with these options (not started).

    The default bound is :func:`~dask_reservoir._core.ledger.default_bound` and follows the
    cluster; user code the cluster cannot import travels by value, importable code by reference
    (so that a threaded ``LocalCluster`` shares module state with the client, as users
    expect); both decisions are revisited as workers join.
    """
    package = function_package(function)
    by_value = package is not None and not handle.can_import(package)
    return JobRunner(
        handle.client,
        source,
        JobSpec.from_function(
            function,
            uid_column=options.uid_column,
            retries=options.retries,
            rows_per_job=options.rows_per_job or 0,
            timeout=options.job_timeout,
            by_value=by_value,
            batched=options.batched,
            cache=cache_tier(function, options),
        ),
        order=order,
        max_rows=None,
        max_jobs=options.max_jobs_at_once,
        rows_per_job=options.rows_per_job,
        auto_bound_threads=handle.worker_threads(),
        capacity=options.max_reservoir_samples,
        retries=options.retries,
        max_failures_per_uid=options.max_failures_per_uid,
        collect_errors=options.on_error == "raise",
        skip_first_pass=skip_first_pass,
        perf_sending=perf_sending,
        perf_receiving=perf_receiving,
        check_imports=not handle.embedded,
        rank=options.rank,
        world_size=options.world_size,
        deterministic=options.deterministic,
        max_passes=options.passes,
        max_bytes=options.max_reservoir_bytes,
        placement=placement(options),
        resume=resume,
        transient_workers=handle.transient_workers,
    )

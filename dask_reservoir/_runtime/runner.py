"""The job runner: the only place with a thread and dask futures of jobs.

One named daemon thread asks the :class:`~dask_reservoir._core.ledger.Ledger` what
to submit next (``rows_per_job`` source rows per dask task, in the order of
the source sampler, cycling forever, within the back-pressure bound), submits
it, and hands what became of each task (see
:mod:`~dask_reservoir._runtime.collector`) back to the ledger.  The pickled function is
sent once, as one task every job depends on.  Task errors are read, their
traceback cleared and the futures cancelled (dask/distributed#8790).  A task
cancelled by someone else, or whose result could not be fetched, is submitted
again after a back-off; after :data:`MAX_UNEXPECTED` such losses in a row its
rows fail.  Every second or so the runner re-reads the cluster: the default
back-pressure bound follows its worker threads, and a worker that cannot
import the function's package switches the function to travel by value.
Every wait is sliced (``WAIT_SLICE``) and checks a stop ``Event``; what stops
the thread is handed to the consumer, which re-raises it in its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from distributed import Client, Future

from dask_reservoir._core.blocks import ChunkLoaded
from dask_reservoir._core.checkpoint import ResumePoint
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.records import Completed, RunnerCounters
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.stats import Performance
from dask_reservoir._runtime.cluster import ClientHandle, importable_on
from dask_reservoir._runtime.collector import (
    MAX_UNEXPECTED,
    TRANSFER_SETTLE_SECONDS,
    Arrival,
    LossTracker,
    ResultCollector,
)
from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.pandas_source import PandasSource, Source
from dask_reservoir._worker.calls import JobSpec, run_partition_rows, run_rows
from dask_reservoir._worker.chunks import run_chunk, run_partition_chunk
from dask_reservoir._worker.shipping import FunctionLoadError, function_package, payload_of
from dask_reservoir._worker.wire import Opaque
from dask_reservoir.errors import ClusterLostError, JobError

__all__ = ["WAIT_SLICE", "Completed", "JobRunner", "RunnerCounters", "raise_fatal", "runner_for"]

logger = logging.getLogger("dask_reservoir")

WAIT_SLICE = 0.1
"""Longest single wait (seconds) of the runner thread and of consumers."""

JOIN_TIMEOUT = 10.0
"""How long ``close()`` waits for the runner thread to finish."""

RELEASE_POLL = 0.01
"""Seconds between two questions to the scheduler in :meth:`JobRunner.wait_released`."""

EXECUTION_SETTLE_SECONDS = 2.0
"""At close, how long cancelled tasks that workers already run may take to end (see ``_wait_executions_end``)."""

CLUSTER_CHECK_SECONDS = 1.0
"""Seconds between reads of the cluster's workers (threads, and whether they import the function)."""

_GONE = ("cancelled", "lost", "error")

RECENT_KEYS = 4096
"""Tasks submitted last whose rows are remembered, to count the rows a lost worker makes dask re-run."""


@dataclass
class _Job:
    positions: list[int]
    submitted_at: float
    by_value: bool


def raise_fatal(fatal: BaseException | None) -> None:
    """Raise what stopped the runner (thread or loader process) in the caller's thread, if anything."""
    if fatal is not None:
        if isinstance(fatal, ClusterLostError):
            raise ClusterLostError(str(fatal)) from fatal.__cause__
        if type(fatal) in (ValueError, TypeError):  # a bad source_sampler, say
            raise type(fatal)(str(fatal)) from fatal
        raise RuntimeError(f"the dask_reservoir job runner stopped: {fatal!r}") from fatal


def _key_part(uid: Hashable) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", str(uid))[:32]


class JobRunner:
    """Run ``function_to_run`` over a source in the background, forever, with back-pressure.

    Parameters
    ----------
    client : distributed.Client
        The client to submit to (not closed here).
    source : Source
        The rows; ``source.uids[i]`` names row ``i``.  A :class:`DaskSource` is
        owned: its partition futures are released at close.
    spec : JobSpec
        The pickled function and its options.
    order : Sampler
        Order of source rows in each pass.
    max_rows : int or None
        Most source rows in flight plus finished-but-not-taken; None follows the cluster.
    rows_per_job : int or None
        Source rows per dask task; None sizes tasks (``rows_per_job="auto"``).
    retries : int
        dask ``retries=`` of each task.
    check_imports : bool
        Ask each worker that joins whether it imports the function's package (False for
        the embedded cluster, whose workers import what this process imports).
    **ledger_options
        ``auto_bound_threads``, ``capacity``, ``max_failures_per_uid``, ``collect_errors``,
        ``skip_first_pass``, ``rank``, ``world_size``, ``deterministic``: see :class:`~dask_reservoir._core.ledger.Ledger`.
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
        resume: ResumePoint | None = None,
    ) -> None:
        self._client = client
        self._source = source
        self._spec = spec
        self._package = None if spec.function is None else function_package(spec.function)
        self._check_imports = check_imports
        check_uid = isinstance(source, DaskSource) and source.has_uid_column
        self._options = spec.options(check_uid=check_uid)
        self._retries = retries
        self.ledger = Ledger(
            source.uids,
            order,
            max_rows=max_rows,
            rows_per_job=rows_per_job,
            auto_bound_threads=auto_bound_threads,
            capacity=capacity,
            max_failures_per_uid=max_failures_per_uid,
            collect_errors=collect_errors,
            skip_first_pass=skip_first_pass,
            rank=rank,
            world_size=world_size,
            deterministic=deterministic,
        )
        if resume is not None:
            self.ledger.restore(
                source_pass=resume.source_pass,
                source_cursor=resume.source_cursor,
                first=resume.first,
                quarantined=resume.quarantined,
            )
        self.perf_sending = perf_sending or Performance()
        self.perf_receiving = perf_receiving or Performance()
        # only touched by the runner thread (or by close() when it never started)
        self._in_flight: dict[Hashable, tuple[Future, _Job]] = {}
        self._losses = LossTracker()
        self._payload: Future | None = None
        self._workers: set[str] = set()
        self._rows_of_key: dict[str, int] = {}  # the last RECENT_KEYS tasks submitted -> their rows
        self._next_check = 0.0
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

    def take(self, limit: int | None = None) -> list[Completed]:
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
        """
        deadline = time.monotonic() + timeout
        prefix = "dask_reservoir-"
        while time.monotonic() < deadline:
            if self._client.status != "running":
                return True
            try:
                if not self._client.run_on_scheduler(_tasks_with_prefix, prefix):
                    return True
            except Exception as exc:  # pragma: no cover - the scheduler went away
                logger.debug("could not ask the scheduler for our tasks: %r", exc)
                return True
            time.sleep(RELEASE_POLL)
        return False

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
                if not self._client_ok():
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

    def _client_ok(self) -> bool:
        status = self._client.status
        if status == "running":
            if self.ledger.status == "connecting":
                self.ledger.set_status("running")
            return True
        if status == "connecting":
            self.ledger.set_status("connecting")
            return False
        address = ""
        try:
            address = str(self._client.scheduler.address)  # type: ignore[union-attr]
        except Exception:
            pass
        raise ClusterLostError(
            f"lost the dask scheduler at {address!r}: the client is {status!r} and will not reconnect"
        )

    def _idle(self) -> None:
        with self._cond:
            if not self._poked and not self._collector.has_arrivals() and not self._stop.is_set():
                self._cond.wait(timeout=WAIT_SLICE)
            self._poked = False

    # ------------------------------------------------------------------ the cluster
    def _check_cluster(self) -> None:
        """Every ``CLUSTER_CHECK_SECONDS``: follow worker threads; check joining workers import the function."""
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CLUSTER_CHECK_SECONDS
        try:
            nthreads = dict(self._client.nthreads())
        except Exception as exc:
            logger.debug("could not ask the scheduler for its workers: %r", exc)
            return
        self.ledger.set_worker_threads(sum(nthreads.values()))
        if not nthreads:  # no worker yet (an embedded cluster starting): look again soon
            self._next_check = now + WAIT_SLICE
        workers = {str(w) for w in nthreads}
        joined = sorted(workers - self._workers)
        departed = sorted(self._workers - workers)
        self._workers = workers
        self.ledger.set_workers(len(workers), lost=len(departed))
        if departed:
            self._count_reruns(departed)
        if joined and self._check_imports and not self._spec.by_value and self._package is not None:
            if importable_on(self._client, self._package, joined) is False:
                self._switch_to_by_value(f"worker(s) {joined} cannot import {self._package!r}")

    def _count_reruns(self, departed: list[str]) -> None:
        """Count our rows that dask runs again because a worker of ``departed`` left the cluster.

        dask re-runs, silently for the client, the tasks the worker was running and the
        results only it held; the scheduler's ``remove-worker`` event names them.
        """
        rows = 0
        for address in departed:
            try:
                events = self._client.get_events(address)
            except Exception as exc:
                logger.debug("could not read the scheduler's events of %s: %r", address, exc)
                continue
            for _, event in events:
                if isinstance(event, dict) and event.get("action") == "remove-worker":
                    keys = {*event.get("processing-tasks", ()), *event.get("lost-computed-tasks", ())}
                    rows += sum(self._rows_of_key.get(str(key), 0) for key in keys)
        self.ledger.rerun(rows)
        (logger.warning if rows else logger.info)(
            "dask_reservoir: %d worker(s) left the cluster (%s); dask runs %d of our rows again; %d worker(s) now",
            len(departed),
            ", ".join(departed),
            rows,
            len(self._workers),
        )

    def _switch_to_by_value(self, why: str) -> None:
        if self._spec.by_value:
            return
        logger.info("dask_reservoir: %s; function_to_run now travels by value", why)
        self._spec = self._spec.to_by_value()
        if self._payload is not None:
            self._payload.release()  # jobs in flight still hold it on the scheduler
            self._payload = None

    def _payload_future(self) -> Future:
        """The task holding the pickled function (sent once; again if it was lost)."""
        if self._payload is None or self._payload.status in _GONE:
            if self._payload is not None:
                self._payload.release()
            self._payload = self._client.submit(
                payload_of, self._spec.payload, key=f"dask_reservoir-function-{uuid.uuid4().hex}", pure=False
            )
        return self._payload

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
        key = f"dask_reservoir-load-{_key_part(uids[0])}-{uuid.uuid4().hex}"
        start = time.perf_counter()
        source = self._source
        payload = self._payload_future()
        if isinstance(source, PandasSource) and self._spec.batched:
            args: tuple[Any, ...] = (run_chunk, self._options, payload, source.chunk(positions), Opaque(uids))
        elif isinstance(source, PandasSource):
            args = (
                run_rows,
                self._options,
                payload,
                source.row_columns(positions),
                Opaque(uids),
            )
        else:
            source = cast(DaskSource, source)  # the two kinds of source
            refs = [source.rows[p] for p in positions]
            wanted = sorted({part for part, _ in refs})
            gone = [p for p in wanted if source.parts[p].status in _GONE]
            if gone:
                logger.info(
                    "dask_reservoir: partitions %s of the dask source were lost; persisting them again", gone
                )
                source.renew_partitions(gone)
            parts = {part: source.parts[part] for part in wanted}
            run = run_partition_chunk if self._spec.batched else run_partition_rows
            args = (run, self._options, payload, parts, Opaque(refs), Opaque(uids))
        future = self._client.submit(*args, key=key, retries=self._retries, pure=False)
        self.perf_sending.add(time.perf_counter() - start)
        self._in_flight[future.key] = (future, _Job(positions, time.monotonic(), self._spec.by_value))
        self._rows_of_key[str(future.key)] = len(positions)
        if len(self._rows_of_key) > RECENT_KEYS:
            del self._rows_of_key[next(iter(self._rows_of_key))]  # the oldest
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
                now = time.monotonic()
                self.perf_receiving.add(now - job.submitted_at)
                self._losses.loaded(job.positions)
                if type(arrival.value) is ChunkLoaded:
                    self.ledger.finished_chunk(job.positions, arrival.value, now=now)
                else:
                    self.ledger.finished(job.positions, arrival.value, now=now)
            elif arrival.kind == "error":
                failed.append(future)
                exc = cast(BaseException, arrival.error)  # always set for "error"
                if isinstance(exc, FunctionLoadError) and not job.by_value and self._package is not None:
                    self._switch_to_by_value(f"a worker cannot load function_to_run ({exc})")
                    self.ledger.requeued(job.positions)
                else:
                    self.ledger.failed(job.positions, exc, arrival.text)
            elif self._stop.is_set() or self._client.status != "running" or _connection_lost(arrival):
                self.ledger.requeued(job.positions)  # the scheduler went away: not the job's fault
            else:
                self._unexpected(job, arrival)
        if failed:
            self._cancel(failed)

    def _unexpected(self, job: _Job, arrival: Arrival) -> None:
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

    def _wait_executions_end(self, keys: set[str], timeout: float = EXECUTION_SETTLE_SECONDS) -> None:
        """Wait up to ``timeout`` s until no worker still executes the tasks ``keys`` we cancelled.

        A cancelled task that a worker started runs on to its end (a thread cannot be
        stopped): closing the cluster right after the reservoir would cut it off, and each
        worker logs "Async instruction ... ended with CancelledError".  Asked of the
        workers every ``RELEASE_POLL`` s; what still runs at the deadline is left to them.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                left = max(RELEASE_POLL, deadline - time.monotonic())  # a worker that does not answer
                running = sum(self._client.run(_executing, keys, callback_timeout=left).values())
            except Exception as exc:  # pragma: no cover - the cluster went away
                logger.debug("could not ask the workers what they execute: %r", exc)
                return
            if not running:
                return
            if time.monotonic() >= deadline:
                logger.debug("dask_reservoir: %d cancelled tasks still run on the workers at close", running)
                return
            time.sleep(RELEASE_POLL)

    def _cleanup(self) -> None:
        """Cancel our jobs and the function, release shared partitions, count what was in flight."""
        jobs = list(self._in_flight.values())
        self._in_flight.clear()
        futures = [f for f, _ in jobs]
        if self._payload is not None:
            futures.append(self._payload)
            self._payload = None
        # the futures are cancelled, then results being fetched may arrive, then watchers stop
        running = self._client.status == "running"  # else nothing can arrive: do not wait
        self._collector.abandon(
            self._cancel, futures, transfer_timeout=TRANSFER_SETTLE_SECONDS if running else 0.0
        )
        futures.clear()
        if running and jobs:
            self._wait_executions_end({str(f.key) for f, _ in jobs})
        for _, job in jobs:
            self.ledger.cancelled(job.positions)
        for positions in self._losses.drain():
            self.ledger.cancelled(positions)
        if isinstance(self._source, DaskSource):
            self._source.release()


def _executing(keys: set[str], dask_worker: Any = None) -> int:
    """Run on a worker: how many of ``keys`` it is still executing (cancelled ones included)."""
    state = getattr(dask_worker, "state", None)
    running = [*getattr(state, "executing", ()), *getattr(state, "long_running", ())]
    return sum(1 for ts in running if str(ts.key) in keys)


def _tasks_with_prefix(prefix: str, dask_scheduler: Any = None) -> int:
    """Run on the scheduler: how many tasks have a key starting with ``prefix``."""
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith(prefix))


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
        ),
        order=order,
        max_rows=options.max_jobs_at_once,
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
        resume=resume,
    )

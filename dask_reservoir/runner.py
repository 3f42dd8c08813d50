"""The job runner: the only place with a thread and dask futures.

One named daemon thread submits jobs (``rows_per_job`` source rows per dask
task) in the order of the source sampler, cycling forever, while at most
``max_rows`` source rows are in flight or finished and waiting to be
ingested.  Finished tasks are collected with ``as_completed(with_results=True,
raise_errors=False)``, which fetches each result in the event loop as soon as
its task ends, so transfers overlap; their entries wait in a FIFO until the
consumer takes them.  Failures arrive as ``(type, exception, traceback)``,
never raised, and the futures are cancelled (dask/distributed#8790).  Every wait is
sliced (``WAIT_SLICE``) and checks a stop ``Event``; errors of the thread are
handed to the consumer, which re-raises them in its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback as tb_module
import uuid
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from distributed import Client, Future, as_completed

from .errors import ClusterLostError, JobError
from .samplers import Sampler
from .source import DaskSource, PandasSource, Source
from .stats import FailureRecord, Performance
from .tasks import JobSpec, Opaque, run_partition_rows, run_rows

__all__ = ["Completed", "JobRunner", "RunnerCounters"]

logger = logging.getLogger("dask_reservoir")

WAIT_SLICE = 0.1
"""Longest single wait (seconds) of the runner thread and of consumers."""

JOIN_TIMEOUT = 10.0
"""How long ``close()`` waits for the runner thread to finish."""

RECENT_LOADS = 1000
"""Rows whose load time feeds the percentiles of ``stats()``."""

SWEEP_PERIOD = 1.0
"""Seconds between checks for results that never arrived."""

STUCK_SECONDS = 5.0
"""A task ended this long ago without its result arriving is submitted again."""

DRAIN_SECONDS = 1.0
"""At close, how long results already being fetched may take to arrive before cancelling."""

AUTO_TASK_SECONDS = 0.075
"""Target running time of one task with ``rows_per_job="auto"``."""

AUTO_MAX_ROWS = 4096
"""Largest task with ``rows_per_job="auto"``."""


@dataclass
class Completed:
    """A finished source row, waiting to enter the reservoir."""

    uid: Hashable
    position: int
    rows: tuple[dict[str, Any], ...]
    load_seconds: float
    finished_at: float


@dataclass
class _Job:
    positions: list[int]
    uids: list[Hashable]
    submitted_at: float
    ended_at: float | None = None  # first seen ended without its result (see _sweep)


@dataclass(frozen=True)
class RunnerCounters:
    """A consistent copy of the runner's counters."""

    jobs_submitted: int
    rows_submitted: int
    rows_loaded: int
    rows_requeued: int
    jobs_completed: int
    jobs_failed: int
    rows_failed: int
    jobs_in_flight: int
    rows_in_flight: int
    entries_waiting: int
    uids_tried: int
    uids_loaded: int
    failures: tuple[FailureRecord, ...] = field(default_factory=tuple)
    quarantined: tuple[Hashable, ...] = field(default_factory=tuple)
    status: str = "running"


def _key_part(uid: Hashable) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", str(uid))[:32]


def _format_traceback(tb: object) -> str:
    try:
        return "".join(tb_module.format_tb(tb))  # type: ignore[arg-type]
    except Exception:
        return ""


class JobRunner:
    """Run ``function_to_run`` over a source in the background, forever, with back-pressure.

    Parameters
    ----------
    client : distributed.Client
        The client to submit to (not closed here).
    source : Source
        The rows; ``source.uids[i]`` names row ``i``.
    spec : JobSpec
        The pickled function and its options.
    order : Sampler
        Order of source rows in each pass.
    max_rows : int
        Most source rows in flight plus finished-but-not-taken.
    rows_per_job : int or None
        Source rows per dask task; None sizes tasks to about ``AUTO_TASK_SECONDS``.
    auto_bound_threads : int or None
        When given, ``max_rows`` follows the task size: ``2 x threads x rows per task``.
    retries : int
        dask ``retries=`` of each task.
    max_failures_per_uid : int or None
        Failures in a row after which a UID is quarantined (never submitted again).
    collect_errors : bool
        Keep a ``JobError`` per failure for :meth:`pop_errors` (``on_error="raise"``).
    skip_first_pass : collection
        UIDs not to submit during the first pass (their entries are already loaded).
    """

    def __init__(
        self,
        client: Client,
        source: Source,
        spec: JobSpec,
        *,
        order: Sampler,
        max_rows: int,
        rows_per_job: int | None,
        retries: int = 0,
        auto_bound_threads: int | None = None,
        max_failures_per_uid: int | None = None,
        collect_errors: bool = False,
        skip_first_pass: Sequence[Hashable] = (),
        perf_sending: Performance | None = None,
        perf_receiving: Performance | None = None,
    ) -> None:
        self._client = client
        self._source = source
        self._spec = spec
        self._order_sampler = order
        self._max_rows = max_rows
        self._auto = rows_per_job is None
        self._rows_per_job = 1 if rows_per_job is None else rows_per_job
        self._auto_bound_threads = auto_bound_threads
        self._row_seconds_ema: float | None = None
        self._retries = retries
        self._max_failures = max_failures_per_uid
        self._collect_errors = collect_errors
        self._skip_first_pass = set(skip_first_pass)
        self.perf_sending = perf_sending or Performance()
        self.perf_receiving = perf_receiving or Performance()

        self._cond = threading.Condition()  # guards everything below; consumers wait on it
        self._waiting: deque[Completed] = deque()
        self._in_flight: dict[str, tuple[Future, _Job]] = {}
        self._rows_in_flight = 0
        self._outstanding: set[Hashable] = set()  # in flight or waiting
        self._retry: deque[int] = deque()  # positions whose job was cancelled under us
        self._failures: dict[Hashable, FailureRecord] = {}
        self._quarantined: dict[Hashable, FailureRecord] = {}
        self._errors: deque[JobError] = deque()
        self._tried: set[Hashable] = set()
        self._loaded: set[Hashable] = set()
        self._fatal: BaseException | None = None
        self._status = "running"
        self._jobs_submitted = 0
        self._jobs_completed = 0
        self._jobs_failed = 0
        self._rows_failed = 0
        self._rows_submitted = 0
        self._rows_loaded = 0
        self._rows_requeued = 0
        self._load_total = 0.0
        self._load_count = 0
        self._recent_loads: deque[float] = deque(maxlen=RECENT_LOADS)

        self._order: list[int] = []
        self._cursor = 0
        self._pass = 0
        self._parts: list[Future] = []
        self._stop = threading.Event()
        self._poked = False
        self._last_sweep = time.monotonic()
        # results are fetched in the event loop as tasks finish (no blocking gather here);
        # failures come as (type, exception, traceback), never raised (dask/distributed#8790)
        self._ac = as_completed(loop=client.loop, with_results=True, raise_errors=False)
        self._thread = threading.Thread(
            target=self._run, name=f"dask_reservoir-runner-{id(self):x}", daemon=True
        )

    # ------------------------------------------------------------------ consumer side
    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if not self._thread.is_alive() and not self._stop.is_set() and self._thread.ident is None:
            self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread.is_alive()

    def take(self, limit: int | None = None) -> list[Completed]:
        """Remove and return up to ``limit`` waiting entries, oldest first."""
        with self._cond:
            n = len(self._waiting) if limit is None else min(limit, len(self._waiting))
            taken = [self._waiting.popleft() for _ in range(n)]
            for item in taken:
                self._outstanding.discard(item.uid)
        if taken:
            self.poke()
        return taken

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""
        with self._cond:
            if not self._waiting and not self._errors and self._fatal is None and not self._stop.is_set():
                self._cond.wait(timeout=max(0.0, min(timeout, WAIT_SLICE)))

    def poke(self) -> None:
        """Wake the runner thread now (room was freed, or it should stop)."""
        with self._ac.thread_condition:
            self._poked = True
            self._ac.thread_condition.notify_all()

    def pop_errors(self) -> list[JobError]:
        """Failures not yet reported (only kept with ``collect_errors=True``)."""
        with self._cond:
            errors = list(self._errors)
            self._errors.clear()
        return errors

    def check(self) -> None:
        """Raise, in the caller's thread, what stopped the runner thread, if anything."""
        fatal = self._fatal
        if fatal is not None:
            if isinstance(fatal, ClusterLostError):
                raise ClusterLostError(str(fatal)) from fatal.__cause__
            if type(fatal) in (ValueError, TypeError):  # a bad source_sampler, say
                raise type(fatal)(str(fatal)) from fatal
            raise RuntimeError(f"the dask_reservoir job runner stopped: {fatal!r}") from fatal

    def counters(self) -> RunnerCounters:
        """A consistent copy of the counters."""
        with self._cond:
            return RunnerCounters(
                jobs_submitted=self._jobs_submitted,
                rows_submitted=self._rows_submitted,
                rows_loaded=self._rows_loaded,
                rows_requeued=self._rows_requeued,
                jobs_completed=self._jobs_completed,
                jobs_failed=self._jobs_failed,
                rows_failed=self._rows_failed,
                jobs_in_flight=len(self._in_flight),
                rows_in_flight=self._rows_in_flight,
                entries_waiting=len(self._waiting),
                uids_tried=len(self._tried),
                uids_loaded=len(self._loaded),
                failures=tuple(self._failures.values()),
                quarantined=tuple(self._quarantined),
                status=self._status,
            )

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last ``RECENT_LOADS`` rows loaded."""
        with self._cond:
            return list(self._recent_loads)

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time of ``function_to_run`` per source row."""
        return self._load_total / self._load_count if self._load_count else 0.0

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop submitting, cancel and release every future, join the thread (idempotent)."""
        self._stop.set()
        self.poke()
        with self._cond:
            self._cond.notify_all()
        if self._thread.ident is None:
            self._cleanup()
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - a gather stuck past its deadline
                logger.warning("dask_reservoir runner thread did not stop within %.1f s", timeout)
        with self._cond:
            self._status = "closed"
            self._waiting.clear()
            self._outstanding.clear()

    def __repr__(self) -> str:
        c = self.counters()
        return (
            f"<JobRunner: in_flight={c.rows_in_flight} waiting={c.entries_waiting} "
            f"done={c.jobs_completed} failed={c.jobs_failed + c.rows_failed} status={c.status}>"
        )

    # ------------------------------------------------------------------ runner thread
    def _run(self) -> None:
        try:
            self._prepare()
            while not self._stop.is_set():
                if not self._client_ok():
                    self._idle()
                    continue
                self._submit_more()
                done = self._ac.next_batch(block=False)
                if done:
                    self._collect(done)
                else:
                    self._sweep()
                    self._idle()
        except BaseException as exc:  # handed to the consumer's thread
            if not self._stop.is_set():
                logger.debug("dask_reservoir runner stopped by %r", exc)
                with self._cond:
                    self._fatal = exc
                    self._cond.notify_all()
        finally:
            self._cleanup()

    def _prepare(self) -> None:
        if isinstance(self._source, DaskSource):
            self._parts = self._client.compute(self._source.frame.to_delayed())

    def _client_ok(self) -> bool:
        status = self._client.status
        if status == "running":
            if self._status == "connecting":
                with self._cond:
                    self._status = "running"
            return True
        if status in ("connecting",):
            with self._cond:
                self._status = "connecting"
            return False
        # closed / closing / failed: the client gave up
        address = ""
        try:
            address = str(self._client.scheduler.address)  # type: ignore[union-attr]
        except Exception:
            pass
        with self._cond:
            self._status = "lost"
        raise ClusterLostError(
            f"lost the dask scheduler at {address!r}: the client is {status!r} and will not reconnect"
        )

    def _idle(self) -> None:
        cond = self._ac.thread_condition
        with cond:
            if not self._poked and not self._ac.has_ready() and not self._stop.is_set():
                cond.wait(timeout=WAIT_SLICE)
            self._poked = False

    def _room(self) -> int:
        with self._cond:
            return self._max_rows - self._rows_in_flight - len(self._waiting)

    def _next_positions(self, limit: int) -> list[int]:
        n = len(self._source)
        uids = self._source.uids
        out: list[int] = []
        with self._cond:
            while self._retry and len(out) < limit:
                pos = self._retry.popleft()
                if uids[pos] not in self._outstanding and uids[pos] not in self._quarantined:
                    out.append(pos)
                    self._outstanding.add(uids[pos])
            scanned = 0
            while len(out) < limit and scanned < n:
                if self._cursor >= len(self._order):
                    self._order = self._new_order(n)
                    self._cursor = 0
                    if not self._order:
                        break
                pos = self._order[self._cursor]
                self._cursor += 1
                scanned += 1
                uid = uids[pos]
                if uid in self._outstanding or uid in self._quarantined:
                    continue
                if self._pass == 1 and uid in self._skip_first_pass:
                    self._tried.add(uid)
                    self._loaded.add(uid)
                    continue
                out.append(pos)
                self._outstanding.add(uid)
        return out

    def _new_order(self, n: int) -> list[int]:
        order = [int(i) for i in self._order_sampler.indices(n, epoch=self._pass)]
        self._pass += 1
        bad = [i for i in order if not 0 <= i < n]
        if bad:
            raise ValueError(
                f"source_sampler {self._order_sampler!r} must yield indices in range({n}), got {bad[:5]!r}"
            )
        return order

    def _submit_more(self) -> None:
        # Full jobs only: one task per rows_per_job freed rows, not one per freed row.  A
        # shorter job goes only when the pipeline is otherwise empty (nothing in flight or
        # waiting), e.g. a source smaller than rows_per_job whose rows are all taken.
        with self._cond:
            k = max(1, min(self._rows_per_job, len(self._source) - len(self._quarantined)))
        while not self._stop.is_set():
            room = self._room()
            if room < k:
                return
            positions = self._next_positions(k)
            if not positions:
                return
            if len(positions) < k:
                with self._cond:
                    idle = not self._in_flight and not self._waiting
                    if not idle:  # hold them: wait for a full job
                        for p in reversed(positions):
                            self._outstanding.discard(self._source.uids[p])
                            self._retry.appendleft(p)
                        return
            self._submit(positions)

    def _submit(self, positions: list[int]) -> None:
        uids = [self._source.uids[p] for p in positions]
        key = f"dask_reservoir-load-{_key_part(uids[0])}-{uuid.uuid4().hex}"
        start = time.perf_counter()
        source = self._source
        if isinstance(source, PandasSource):
            future = self._client.submit(
                run_rows,
                self._spec,
                Opaque(source.records(positions)),
                Opaque(uids),
                key=key,
                retries=self._retries,
            )
        else:
            source = cast(DaskSource, source)
            refs = [source.rows[p] for p in positions]
            parts = {part: self._parts[part] for part, _ in refs}
            future = self._client.submit(
                run_partition_rows,
                self._spec,
                parts,
                Opaque(refs),
                Opaque(uids),
                key=key,
                retries=self._retries,
            )
        self.perf_sending.add(time.perf_counter() - start)
        job = _Job(positions, uids, time.monotonic())
        with self._cond:
            self._in_flight[str(future.key)] = (future, job)
            self._rows_in_flight += len(positions)
            self._jobs_submitted += 1
            self._rows_submitted += len(positions)
        self._ac.add(future)

    def _collect(self, done: list[tuple[Future, Any]]) -> None:
        """Handle finished futures with their results, fetched by ``as_completed`` in the event loop."""
        failed = []
        for future, result in done:
            status = future.status
            if status == "finished" and not isinstance(result, BaseException):
                self._finish_job(future, result)
            elif status == "error" and isinstance(result, tuple) and len(result) == 3:
                _, exc, tb = result
                self._fail_job(future, exc, _format_traceback(tb))
                failed.append(future)
            else:  # cancelled under us (scheduler lost), or the result could not be fetched
                self._requeue_job(future)
        if failed:
            self._release(failed)

    def _pop_job(self, future: Future) -> _Job | None:
        with self._cond:
            item = self._in_flight.pop(str(future.key), None)
            if item is None:
                return None
            job = item[1]
            self._rows_in_flight -= len(job.uids)
            self._jobs_completed += 1
            return job

    def _finish_job(self, future: Future, outcomes: list[tuple[Any, ...]]) -> None:
        job = self._pop_job(future)
        if job is None:
            return
        now = time.monotonic()
        self.perf_receiving.add(now - job.submitted_at)
        with self._cond:
            for position, outcome in zip(job.positions, outcomes, strict=True):
                uid = outcome[1]
                self._tried.add(uid)
                if outcome[0] == "ok":
                    rows, seconds = outcome[2], outcome[3]
                    self._rows_loaded += 1
                    if self._auto:
                        self._observe(seconds)
                    self._load_total += seconds
                    self._load_count += 1
                    self._recent_loads.append(seconds)
                    self._waiting.append(Completed(uid, position, tuple(rows), seconds, now))
                    if rows:
                        self._loaded.add(uid)
                    previous = self._failures.get(uid)
                    if previous is not None and previous.consecutive:
                        self._failures[uid] = _replace_consecutive(previous, 0)
                else:
                    _, _, exc_type, message, text, exc, seconds = outcome
                    self._outstanding.discard(uid)
                    self._record_failure(uid, exc_type, message, text, exc)
            self._cond.notify_all()

    def _fail_job(self, future: Future, exc: BaseException, text: str) -> None:
        job = self._pop_job(future)
        if job is None:
            return
        exc.__traceback__ = None  # the key must not stay alive through it (dask/distributed#8790)
        with self._cond:
            self._jobs_failed += 1
            for uid in job.uids:
                self._tried.add(uid)
                self._outstanding.discard(uid)
                self._record_failure(uid, type(exc).__name__, str(exc), text, exc)
            self._cond.notify_all()

    def _requeue_job(self, future: Future) -> None:
        job = self._pop_job(future)
        if job is None:
            return
        with self._cond:
            self._jobs_completed -= 1
            self._rows_requeued += len(job.uids)
            for uid, pos in zip(job.uids, job.positions, strict=True):
                self._outstanding.discard(uid)
                self._retry.append(pos)

    def _observe(self, row_seconds: float) -> None:
        """``rows_per_job="auto"``: follow the time per row, resize tasks (with ``self._cond`` held)."""
        ema = self._row_seconds_ema
        ema = row_seconds if ema is None else 0.9 * ema + 0.1 * row_seconds
        self._row_seconds_ema = ema
        target = int(min(AUTO_MAX_ROWS, max(1, round(AUTO_TASK_SECONDS / max(ema, 1e-7)))))
        if self._auto_bound_threads is None:
            target = min(target, self._max_rows)
        current = self._rows_per_job
        if target > current * 1.25 or target < current / 1.25:
            self._rows_per_job = target
            if self._auto_bound_threads is not None:
                self._max_rows = 2 * self._auto_bound_threads * target

    @property
    def rows_per_job(self) -> int:
        """Source rows per task now (it changes with ``rows_per_job="auto"``)."""
        return self._rows_per_job

    @property
    def max_rows(self) -> int:
        """The back-pressure bound now, in source rows."""
        return self._max_rows

    def _record_failure(
        self, uid: Hashable, exc_type: str, message: str, text: str, exc: BaseException | None
    ) -> None:
        # called with self._cond held
        previous = self._failures.get(uid)
        count = 1 + (previous.count if previous else 0)
        consecutive = 1 + (previous.consecutive if previous else 0)
        record = FailureRecord(uid, exc_type, message, text, count, consecutive)
        self._failures[uid] = record
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

    def _release(self, futures: list[Future]) -> None:
        try:
            if self._client.status == "running":
                self._client.cancel(futures)
        except Exception as exc:  # pragma: no cover - best effort
            logger.debug("cancel failed: %r", exc)

    def _sweep(self) -> None:
        """Requeue jobs whose task ended but whose result never came through ``as_completed``.

        ``as_completed`` drops a future when fetching its result fails (a worker lost
        mid-transfer); its rows would otherwise count as in flight forever.
        """
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_PERIOD:
            return
        self._last_sweep = now
        with self._cond:
            items = list(self._in_flight.values())
        for future, job in items:
            if future.status in ("pending", "processing", "no-worker", "queued"):
                job.ended_at = None
                continue
            if job.ended_at is None:
                job.ended_at = now
            elif now - job.ended_at > STUCK_SECONDS:
                logger.debug("result of %s never arrived; submitting its rows again", future.key)
                with self._ac.lock:
                    self._ac.futures.pop(future, None)
                self._requeue_job(future)
                self._release([future])

    def _drain(self, timeout: float) -> None:
        """Before cancelling at close, let results already being fetched arrive (quiet shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                fetching = [f for f, _ in self._in_flight.values() if f.status == "finished"]
            if not fetching:
                return
            if self._ac.has_ready():
                self._ac.next_batch(block=False)  # dropped: we are closing
            else:
                with self._ac.thread_condition:
                    self._ac.thread_condition.wait(timeout=0.01)
            with self._cond:
                for f in fetching:
                    if f not in self._ac.futures:
                        self._in_flight.pop(str(f.key), None)

    def _cleanup(self) -> None:
        if self._client.status == "running":
            self._drain(DRAIN_SECONDS)
        with self._cond:
            futures = [f for f, _ in self._in_flight.values()] + list(self._parts)
            self._in_flight.clear()
            self._rows_in_flight = 0
            self._parts = []
            self._cond.notify_all()
        self._ac.clear()
        if futures:
            self._release(futures)
        del futures


def _replace_consecutive(record: FailureRecord, consecutive: int) -> FailureRecord:
    return FailureRecord(
        record.uid, record.exc_type, record.message, record.traceback, record.count, consecutive
    )

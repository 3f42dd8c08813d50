"""The job runner: the only place with a thread and dask futures.

One named daemon thread asks the :class:`~dask_reservoir.ledger.Ledger` what
to submit next (``rows_per_job`` source rows per dask task, in the order of
the source sampler, cycling forever, within the back-pressure bound), submits
it, and hands finished tasks back to the ledger.  Results are collected with
``as_completed(with_results=True, raise_errors=False)``, which fetches each
result in the event loop as soon as its task ends, so transfers overlap;
failures arrive as ``(type, exception, traceback)``, never raised, and the
futures are cancelled (dask/distributed#8790).  Every wait is sliced
(``WAIT_SLICE``) and checks a stop ``Event``; what stops the thread is handed
to the consumer, which re-raises it in its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from distributed import Client, Future, as_completed

from .errors import ClusterLostError
from .ledger import Completed, Ledger, RunnerCounters
from .samplers import Sampler
from .source import DaskSource, PandasSource, Source
from .stats import Performance
from .tasks import JobSpec, Opaque, run_partition_rows, run_rows

__all__ = ["WAIT_SLICE", "Completed", "JobRunner", "RunnerCounters"]

logger = logging.getLogger("dask_reservoir")

WAIT_SLICE = 0.1
"""Longest single wait (seconds) of the runner thread and of consumers."""

JOIN_TIMEOUT = 10.0
"""How long ``close()`` waits for the runner thread to finish."""

SWEEP_PERIOD = 1.0
"""Seconds between checks for results that never arrived."""

STUCK_SECONDS = 5.0
"""A task ended this long ago without its result arriving is submitted again."""

DRAIN_SECONDS = 1.0
"""At close, how long results already being fetched may take to arrive before cancelling."""


@dataclass
class _Job:
    positions: list[int]
    submitted_at: float
    ended_at: float | None = None  # first seen ended without its result (see _sweep)


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
        Source rows per dask task; None sizes tasks (``rows_per_job="auto"``).
    retries : int
        dask ``retries=`` of each task.
    **ledger_options
        ``auto_bound_threads``, ``max_failures_per_uid``, ``collect_errors``,
        ``skip_first_pass``: see :class:`~dask_reservoir.ledger.Ledger`.
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
        self._retries = retries
        self.ledger = Ledger(
            source.uids,
            order,
            max_rows=max_rows,
            rows_per_job=rows_per_job,
            auto_bound_threads=auto_bound_threads,
            max_failures_per_uid=max_failures_per_uid,
            collect_errors=collect_errors,
            skip_first_pass=skip_first_pass,
        )
        self.perf_sending = perf_sending or Performance()
        self.perf_receiving = perf_receiving or Performance()
        self._in_flight: dict[str, tuple[Future, _Job]] = {}  # only touched by the runner thread
        self._parts: list[Future] = []
        self._stop = threading.Event()
        self._poked = False
        self._last_sweep = time.monotonic()
        self._ac = as_completed(loop=client.loop, with_results=True, raise_errors=False)
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
        with self._ac.thread_condition:
            self._poked = True
            self._ac.thread_condition.notify_all()

    def check(self) -> None:
        """Raise, in the caller's thread, what stopped the runner thread, if anything."""
        fatal = self.ledger.fatal
        if fatal is not None:
            if isinstance(fatal, ClusterLostError):
                raise ClusterLostError(str(fatal)) from fatal.__cause__
            if type(fatal) in (ValueError, TypeError):  # a bad source_sampler, say
                raise type(fatal)(str(fatal)) from fatal
            raise RuntimeError(f"the dask_reservoir job runner stopped: {fatal!r}") from fatal

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop submitting, cancel and release every future, join the thread (idempotent)."""
        self._stop.set()
        self.poke()
        with self.ledger.cond:
            self.ledger.cond.notify_all()
        if self._thread.ident is None:
            self._cleanup()
        elif self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - a transfer stuck past its deadline
                logger.warning("dask_reservoir runner thread did not stop within %.1f s", timeout)
        self.ledger.close()

    def __repr__(self) -> str:
        c = self.ledger.counters()
        return (
            f"<JobRunner: in_flight={c.rows_in_flight} waiting={c.entries_waiting} "
            f"done={c.jobs_completed} failed={c.jobs_failed + c.rows_failed} status={c.status}>"
        )

    # ------------------------------------------------------------------ runner thread
    def _run(self) -> None:
        try:
            if isinstance(self._source, DaskSource):
                self._parts = self._client.compute(self._source.frame.to_delayed())
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
        cond = self._ac.thread_condition
        with cond:
            if not self._poked and not self._ac.has_ready() and not self._stop.is_set():
                cond.wait(timeout=WAIT_SLICE)
            self._poked = False

    def _submit_more(self) -> None:
        while not self._stop.is_set():
            positions = self.ledger.next_job()
            if not positions:
                return
            self._submit(positions)

    def _submit(self, positions: list[int]) -> None:
        uids = [self._source.uids[p] for p in positions]
        key = f"dask_reservoir-load-{_key_part(uids[0])}-{uuid.uuid4().hex}"
        start = time.perf_counter()
        source = self._source
        if isinstance(source, PandasSource):
            args: tuple[Any, ...] = (run_rows, self._spec, Opaque(source.records(positions)), Opaque(uids))
        else:
            source = cast(DaskSource, source)
            refs = [source.rows[p] for p in positions]
            parts = {part: self._parts[part] for part, _ in refs}
            args = (run_partition_rows, self._spec, parts, Opaque(refs), Opaque(uids))
        future = self._client.submit(*args, key=key, retries=self._retries)
        self.perf_sending.add(time.perf_counter() - start)
        self._in_flight[str(future.key)] = (future, _Job(positions, time.monotonic()))
        self.ledger.submitted(positions)
        self._ac.add(future)

    def _collect(self, done: list[tuple[Future, Any]]) -> None:
        """Hand finished futures, with their results, to the ledger."""
        failed = []
        for future, result in done:
            item = self._in_flight.pop(str(future.key), None)
            if item is None:
                continue
            job = item[1]
            status = future.status
            if status == "finished" and not isinstance(result, BaseException):
                now = time.monotonic()
                self.perf_receiving.add(now - job.submitted_at)
                self.ledger.finished(job.positions, result, now=now)
            elif status == "error" and isinstance(result, tuple) and len(result) == 3:
                _, exc, tb = result
                exc.__traceback__ = None  # the key must not stay alive through it (#8790)
                self.ledger.failed(job.positions, exc, _format_traceback(tb))
                failed.append(future)
            else:  # cancelled under us (scheduler lost), or the result could not be fetched
                self.ledger.requeued(job.positions)
        if failed:
            self._release(failed)

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
        for key, (future, job) in list(self._in_flight.items()):
            if future.status in ("pending", "processing", "no-worker", "queued"):
                job.ended_at = None
                continue
            if job.ended_at is None:
                job.ended_at = now
            elif now - job.ended_at > STUCK_SECONDS:
                logger.debug("result of %s never arrived; submitting its rows again", key)
                with self._ac.lock:
                    self._ac.futures.pop(future, None)
                del self._in_flight[key]
                self.ledger.requeued(job.positions)
                self._release([future])

    def _drain(self, timeout: float) -> None:
        """Before cancelling at close, let results already being fetched arrive (quiet shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fetching = [f for f, _ in self._in_flight.values() if f.status == "finished"]
            if not fetching:
                return
            if self._ac.has_ready():
                for future, _ in self._ac.next_batch(block=False):  # dropped: we are closing
                    self._in_flight.pop(str(future.key), None)
            else:
                with self._ac.thread_condition:
                    self._ac.thread_condition.wait(timeout=0.01)

    def _cleanup(self) -> None:
        if self._client.status == "running":
            self._drain(DRAIN_SECONDS)
        futures = [f for f, _ in self._in_flight.values()] + list(self._parts)
        self._in_flight.clear()
        self._parts = []
        self._ac.clear()
        if futures:
            self._release(futures)
        with self.ledger.cond:
            self.ledger.jobs_in_flight = 0
            self.ledger.rows_in_flight = 0
            self.ledger.cond.notify_all()

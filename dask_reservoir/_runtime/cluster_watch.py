"""The runner's watch over the cluster: the scheduler, the workers, dask's re-runs, what runs at close.

Before each round the :class:`~dask_reservoir._runtime.runner.JobRunner` thread asks
:meth:`ClusterWatch.connected` whether its client still has its scheduler (it raises
:class:`~dask_reservoir.errors.ClusterLostError` once the client gave up reconnecting).
Every ``CLUSTER_CHECK_SECONDS`` :meth:`ClusterWatch.check` reads the cluster's workers:
the ledger's default back-pressure bound follows their threads, and the workers that
joined are handed back (the runner asks them whether they import the function's
package).  A worker that left
makes dask run again, silently for the client, the tasks it was running and the results
only it held: the scheduler's ``remove-worker`` event names them, and the rows of ours
among the last ``RECENT_KEYS`` tasks submitted are counted as re-run.  At close, the
watch waits a little for the cancelled tasks that workers already run
(:meth:`ClusterWatch.wait_executions_end`), and for the scheduler to forget our tasks
(:meth:`ClusterWatch.wait_released`).  Only the runner thread calls it (or ``close()``
once that thread has ended), so it needs no lock.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from distributed import Client

from dask_reservoir._core.ledger import Ledger
from dask_reservoir.errors import ClusterLostError

__all__ = [
    "CLUSTER_CHECK_SECONDS",
    "EXECUTION_SETTLE_SECONDS",
    "RECENT_KEYS",
    "RELEASE_POLL",
    "ClusterWatch",
]

logger = logging.getLogger("dask_reservoir")

CLUSTER_CHECK_SECONDS = 1.0
"""Seconds between reads of the cluster's workers (threads, and whether they import the function)."""

RECENT_KEYS = 4096
"""Tasks submitted last whose rows are remembered, to count the rows a lost worker makes dask re-run."""

RELEASE_POLL = 0.01
"""Seconds between two questions to the scheduler or the workers while closing."""

EXECUTION_SETTLE_SECONDS = 2.0
"""At close, how long cancelled tasks that workers already run may take to end (see
:meth:`ClusterWatch.wait_executions_end`)."""

TASK_PREFIX = "dask_reservoir-"
"""The start of every task key dask_reservoir submits."""


class ClusterWatch:
    """The workers of a cluster as last read, the rows of recent tasks, and the checks at close.

    Parameters
    ----------
    client : distributed.Client
        The client whose scheduler is asked (not closed here).
    ledger : Ledger
        Told the worker threads (:meth:`~dask_reservoir._core.ledger.Ledger.set_worker_threads`),
        the workers and those lost (:meth:`~dask_reservoir._core.ledger.Ledger.set_workers`), and
        the rows dask runs again (:meth:`~dask_reservoir._core.ledger.Ledger.rerun`).
    empty_recheck : float
        Seconds to the next read while the cluster has no worker (an embedded cluster
        starting); the runner gives its wait slice.

    Examples
    --------
    A client that answers as a scheduler with one worker, then none (it left while it ran
    a task of ours):

    >>> from dask_reservoir import SequentialSampler
    >>> class Scheduler:
    ...     status, nthreads_now = "running", {"tcp://w1": 2}
    ...     def nthreads(self):
    ...         return self.nthreads_now
    ...     def get_events(self, address):
    ...         return [(0.0, {"action": "remove-worker", "processing-tasks": ["job-1"]})]
    >>> client = Scheduler()
    >>> ledger = Ledger(["a", "b", "c"], SequentialSampler(), max_rows=None, rows_per_job=1)
    >>> watch = ClusterWatch(client, ledger)
    >>> watch.submitted("job-1", rows=3)
    >>> watch.check(now=0.0)  # the worker that joined
    ['tcp://w1']
    >>> client.nthreads_now = {}
    >>> watch.check(now=0.5), watch.check(now=1.0)  # read again once a second
    ([], [])
    >>> c = ledger.counters()
    >>> c.workers, c.workers_lost, c.rows_rerun, watch
    (0, 1, 3, <ClusterWatch: workers=0 recent_tasks=1>)
    """

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        *,
        empty_recheck: float = 0.1,
        transient: frozenset[str] = frozenset(),
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._transient = transient  # workers meant to leave (the warm-up worker): not counted as lost
        self._empty_recheck = empty_recheck
        self._workers: set[str] = set()
        self._rows_of_key: dict[str, int] = {}  # the last RECENT_KEYS tasks submitted -> their rows
        self._next_check = 0.0

    @property
    def workers(self) -> frozenset[str]:
        """The workers' addresses at the last read."""
        return frozenset(self._workers)

    def submitted(self, key: str, rows: int) -> None:
        """The task ``key`` of ``rows`` source rows was submitted (the oldest of more than ``RECENT_KEYS`` is forgotten)."""
        self._rows_of_key[key] = rows
        if len(self._rows_of_key) > RECENT_KEYS:
            del self._rows_of_key[next(iter(self._rows_of_key))]  # the oldest

    def connected(self) -> bool:
        """Whether the client is connected to its scheduler now (the ledger's status follows).

        False while it (re)connects.

        Raises
        ------
        ClusterLostError
            When the client lost its scheduler for good (closed, or gave up reconnecting).
        """
        status = self._client.status
        if status == "running":
            if self._ledger.status == "connecting":
                self._ledger.set_status("running")
            return True
        if status == "connecting":
            self._ledger.set_status("connecting")
            return False
        address = ""
        try:
            address = str(self._client.scheduler.address)  # type: ignore[union-attr]
        except Exception:
            pass
        raise ClusterLostError(
            f"lost the dask scheduler at {address!r}: the client is {status!r} and will not reconnect"
        )

    def check(self, *, now: float | None = None) -> list[str]:
        """Every ``CLUSTER_CHECK_SECONDS``: read the workers, tell the ledger; the workers that joined.

        Sooner again while the cluster has no worker.  Returns ``[]`` when it is not time
        to read, or the scheduler could not be asked.
        """
        now = time.monotonic() if now is None else now
        if now < self._next_check:
            return []
        self._next_check = now + CLUSTER_CHECK_SECONDS
        try:
            nthreads = dict(self._client.nthreads())
        except Exception as exc:
            logger.debug("could not ask the scheduler for its workers: %r", exc)
            return []
        self._ledger.set_worker_threads(sum(nthreads.values()))
        if not nthreads:  # no worker yet (an embedded cluster starting): look again soon
            self._next_check = now + self._empty_recheck
        workers = {str(w) for w in nthreads}
        joined = sorted(workers - self._workers)
        departed = sorted(self._workers - workers)
        self._workers = workers
        self._ledger.set_workers(len(workers), lost=sum(1 for w in departed if w not in self._transient))
        if departed:
            self._count_reruns(departed)
        return joined

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
        self._ledger.rerun(rows)
        expected = all(w in self._transient for w in departed)  # the warm-up worker, retired as planned
        (logger.debug if expected else logger.warning if rows else logger.info)(
            "dask_reservoir: %d worker(s) left the cluster (%s); dask runs %d of our rows again; %d worker(s) now",
            len(departed),
            ", ".join(departed),
            rows,
            len(self._workers),
        )

    def wait_executions_end(self, keys: set[str], timeout: float = EXECUTION_SETTLE_SECONDS) -> None:
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

    def wait_released(self, timeout: float) -> bool:
        """Wait until the scheduler holds no dask_reservoir task; True when none is left (or no scheduler).

        Releases travel to the scheduler asynchronously; at interpreter exit they must be
        handled before the scheduler's thread pools stop, or it logs errors.  Polls every
        ``RELEASE_POLL`` s up to ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._client.status != "running":
                return True
            try:
                if not self._client.run_on_scheduler(_tasks_with_prefix, TASK_PREFIX):
                    return True
            except Exception as exc:  # pragma: no cover - the scheduler went away
                logger.debug("could not ask the scheduler for our tasks: %r", exc)
                return True
            time.sleep(RELEASE_POLL)
        return False

    def __repr__(self) -> str:
        return f"<ClusterWatch: workers={len(self._workers)} recent_tasks={len(self._rows_of_key)}>"


def _executing(keys: set[str], dask_worker: Any = None) -> int:
    """Run on a worker: how many of ``keys`` it is still executing (cancelled ones included)."""
    state = getattr(dask_worker, "state", None)
    running = [*getattr(state, "executing", ()), *getattr(state, "long_running", ())]
    return sum(1 for ts in running if str(ts.key) in keys)


def _tasks_with_prefix(prefix: str, dask_scheduler: Any = None) -> int:
    """Run on the scheduler: how many tasks have a key starting with ``prefix``."""
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith(prefix))

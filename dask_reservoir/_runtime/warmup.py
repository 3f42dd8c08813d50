"""Threads first: a worker in this process loads while the embedded cluster's processes start.

Each worker process of the embedded ``LocalCluster`` spawns a Python and imports
distributed before it runs anything (about 0.5-1 s here, on 2 cores shared with the
consumer), so the first batch used to wait for a process to come up.  A :class:`Warmup`
worker, one thread per worker process asked for, joins the scheduler at once (tens of
milliseconds): loading starts right away.  Once every process has joined, it is retired the
way dask retires any worker (its results are copied to the processes first; the tasks it runs or
holds queued go to them, so a row it was running runs again there) and closed.  Its tasks run in the consumer's process, sharing
its GIL, only during those first moments.

This module runs coroutines on the cluster's event loop (``cluster.sync``); it starts no
thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from distributed import LocalCluster, Worker

__all__ = ["WARMUP_NAME", "Warmup"]

logger = logging.getLogger("dask_reservoir")

WARMUP_NAME = "dask_reservoir-warmup"
"""The name of the warm-up worker on the scheduler (its tasks show under it on the dashboard)."""

POLL_SECONDS = 0.05
"""How often the retirement checks whether the worker processes have joined."""

CLOSE_TIMEOUT = 5.0
"""Longest :meth:`Warmup.close` waits for the worker to close."""


class Warmup:
    """A thread worker in this process, retired once ``processes`` worker processes have joined.

    Parameters
    ----------
    cluster : LocalCluster
        The embedded cluster (its scheduler runs in this process).
    threads : int
        Threads of the warm-up worker (the number of worker processes asked for).
    processes : int
        Worker processes to wait for before retiring it.
    """

    def __init__(self, cluster: LocalCluster, *, threads: int, processes: int) -> None:
        self._cluster = cluster
        self._processes = processes
        self.retired = False
        self.worker: Worker = cluster.sync(self._start, threads)
        self.address: str = self.worker.address
        self._retiring = cluster.sync(self._schedule_retirement)

    async def _start(self, threads: int) -> Worker:
        worker = Worker(
            self._cluster.scheduler_address,
            nthreads=threads,
            name=WARMUP_NAME,
            dashboard=False,
            silence_logs=logging.ERROR,
        )
        await worker
        return worker

    async def _schedule_retirement(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._retire_when_processes_joined())

    def _processes_joined(self) -> int:
        scheduler = self._cluster.scheduler
        if scheduler is None:
            return 0
        return sum(1 for ws in scheduler.workers.values() if ws.name != WARMUP_NAME)

    async def _retire_when_processes_joined(self) -> None:
        while self._processes_joined() < self._processes:
            if self.worker.status.name in ("closing", "closed", "failed"):
                return
            await asyncio.sleep(POLL_SECONDS)
        scheduler = self._cluster.scheduler
        if scheduler is None:
            return
        loop = asyncio.get_running_loop()
        try:
            # dask moves its results to the processes first; the tasks it runs or holds queued go
            # to them (a row it was running runs again there: counted in rows_rerun)
            await scheduler.retire_workers(
                workers=[self.address], close_workers=True, stimulus_id="dask_reservoir-warmup-done"
            )
            deadline = loop.time() + CLOSE_TIMEOUT
            while self.worker.status.name not in ("closed", "failed") and loop.time() < deadline:
                await asyncio.sleep(POLL_SECONDS)  # the scheduler closes it: closing it here too races
        except Exception as exc:  # pragma: no cover - the cluster closing meanwhile
            logger.debug("dask_reservoir: retiring the warm-up worker failed: %r", exc)
        if self.worker.status.name not in ("closed", "failed"):
            await self.worker.close(reason="dask_reservoir: the worker processes have joined")
        self.retired = True
        logger.debug(
            "dask_reservoir: the warm-up worker retired (%d worker processes joined)", self._processes
        )

    def close(self) -> None:
        """Stop waiting and close the worker now (idempotent; before the cluster closes)."""
        try:
            self._cluster.sync(self._close, callback_timeout=CLOSE_TIMEOUT)
        except Exception as exc:  # pragma: no cover - best effort
            logger.debug("dask_reservoir: closing the warm-up worker failed: %r", exc)

    async def _close(self) -> None:
        self._retiring.cancel()
        await self.worker.close(reason="dask_reservoir: closed")

    def __repr__(self) -> str:
        state: Any = "retired" if self.retired else self.worker.status.name
        return f"<Warmup {self.address}: {state}, waiting for {self._processes} worker processes>"

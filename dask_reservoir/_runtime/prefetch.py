"""The batch builder: one thread per reservoir that builds batches before ``next()`` asks.

A :class:`~dask_reservoir._runtime.batches.BatchIterator` hands its next
``prefetch_batches`` builds to the :class:`BatchBuilder`; the builder runs them
one at a time in submission order, so each epoch's batches come out in order
and the consumer's ``next()`` only takes a batch that is already built (while
the training step runs, or sleeps, the builder works).  Jobs without a result
(an epoch's release) run after every build submitted before them, so a
snapshot is never released while one of its batches is being built.

Batches built ahead share one budget per builder (``max_ahead``, the
reservoir's ``prefetch_batches``): however many iterators are alive, at most
that many batches are being built or wait built for a ``next()``, so memory
does not grow with the number of iterators (an iterator beyond the budget
builds its batches in ``next()``).

No dask here: the builder copies from the store's table and calls the
``collate_fn``.  :meth:`BatchBuilder.close` stops the thread (joined with a
deadline) and cancels what has not started.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["BatchBuilder"]

logger = logging.getLogger("dask_reservoir")

T = TypeVar("T")

IDLE_SLICE = 0.1
"""Longest single wait of the builder thread for a job (it checks its stop event between)."""

JOIN_TIMEOUT = 5.0
"""How long :meth:`BatchBuilder.close` waits for a build in progress."""


class BatchBuilder:
    """Runs build jobs in submission order on one daemon thread, started at the first job.

    Parameters
    ----------
    name : str
        Name of the thread.
    max_ahead : int or None
        Builds :meth:`submit_ahead` lets exist at once, across all callers (None: no bound).

    Examples
    --------
    >>> builder = BatchBuilder(name="dask_reservoir-batches-doctest")
    >>> future = builder.submit(lambda: sum(range(10)))
    >>> future.result(timeout=5)
    45
    >>> builder.close()
    >>> builder.submit(lambda: 1).cancelled()  # closed: nothing runs any more
    True
    """

    def __init__(self, *, name: str, max_ahead: int | None = None) -> None:
        self.name = name
        self.max_ahead = max_ahead
        # builds handed out by submit_ahead() and still referenced (queued, running, or built
        # and not yet taken): a future leaves the set when its last reference goes
        self._ahead: weakref.WeakSet[Future[Any]] = weakref.WeakSet()
        self._ahead_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any] | None] | None] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.built = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stop.is_set()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn()`` after the jobs submitted before; its result or error in the future.

        Once the builder is closed, the future is returned cancelled.
        """
        future: Future[T] = Future()
        if self._stop.is_set():
            future.cancel()
            return future
        self._start()
        self._jobs.put((fn, future))
        if self._stop.is_set():  # closed meanwhile: do not leave it pending
            self._drain()
        return future

    def submit_ahead(self, fn: Callable[[], T]) -> Future[T] | None:
        """:meth:`submit` a build ahead of ``next()``, or None when ``max_ahead`` builds exist.

        A build counts until its future is dropped by whoever holds it (taken by
        ``next()``, cancelled, or its iterator gone).
        """
        with self._ahead_lock:
            if self.max_ahead is not None and self.ahead >= self.max_ahead:
                return None
            future = self.submit(fn)
            if not future.cancelled():
                self._ahead.add(future)
                future.add_done_callback(self._forget_cancelled)  # runs in cancel()
        return future

    def _forget_cancelled(self, future: Future[Any]) -> None:
        if future.cancelled():
            self._ahead.discard(future)

    @property
    def ahead(self) -> int:
        """Builds from :meth:`submit_ahead` that exist now (queued, running, or built and not taken).

        A cancelled build does not count, though the queue holds it until the thread skips it.
        """
        return len(self._ahead)  # O(1): cancelled builds leave the set when cancelled

    def after(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` once every job submitted before it has ended (no result).

        Safe from finalizers and from any thread: it never takes a lock.  When no
        thread runs (never started, or closed), ``fn()`` runs now, in the caller.
        """
        thread = self._thread
        if thread is None or self._stop.is_set():
            _run_quietly(fn)
            return
        self._jobs.put((fn, None))
        if self._stop.is_set():
            self._drain()

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=IDLE_SLICE)
            except queue.Empty:
                continue
            if job is None:
                break
            fn, future = job
            if future is None:
                _run_quietly(fn)
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn()
                except BaseException as exc:  # handed to the consumer's next()
                    future.set_exception(exc)
                else:
                    self.built += 1
                    future.set_result(result)
            del job, fn, future  # no reference to a built batch outlives its job

    def _drain(self) -> None:
        """Cancel the builds left and run the releases left, in order (after close)."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                continue
            fn, future = job
            if future is None:
                _run_quietly(fn)
            else:
                future.cancel()

    def close(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Stop the thread (waiting up to ``timeout`` s for a build in progress); idempotent."""
        self._stop.set()
        self._jobs.put(None)
        with self._start_lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "dask_reservoir: the batch builder %s did not stop within %g s", self.name, timeout
                )
        self._drain()

    def __repr__(self) -> str:
        state = "closed" if self._stop.is_set() else ("running" if self._thread is not None else "idle")
        return f"<BatchBuilder {self.name!r}: {state}, built={self.built}>"


def _run_quietly(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # pragma: no cover - releases do not raise; never kill the builder
        logger.exception("dask_reservoir: a batch builder job failed")

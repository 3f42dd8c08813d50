"""The runtime's named interfaces: what the reservoir calls on its runner, and on the runner's ledger.

A reservoir's jobs run from one of two runners (chosen by
:func:`~dask_reservoir._runtime.loader.parent.choose_loader`): the
:class:`~dask_reservoir._runtime.runner.JobRunner` thread, whose bookkeeping is a
:class:`~dask_reservoir._core.ledger.Ledger`, or a loader process behind a
:class:`~dask_reservoir._runtime.loader.parent.LoaderProcess`, whose ledger lives in the
loader and is mirrored on the consumer's side by a
:class:`~dask_reservoir._runtime.loader.mirror.LedgerMirror`.  The reservoir only calls what
the two share, named here: :class:`RunnerLike` and :class:`LedgerLike`.  They are
:class:`typing.Protocol` classes: the implementations do not inherit them, mypy checks that
each one satisfies its protocol (:func:`~dask_reservoir._runtime.loader.parent.make_runner`
returns either runner as a :class:`RunnerLike`, whose ``ledger`` is a :class:`LedgerLike`).

Both runners also share their wait slice (:data:`WAIT_SLICE`), their close timeout
(:data:`JOIN_TIMEOUT`) and how what stopped them is raised in the consumer's thread
(:func:`raise_fatal`).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from dask_reservoir._core.blocks import CompletedBlock
from dask_reservoir._core.performance import Performance
from dask_reservoir._core.records import Completed, RunnerCounters
from dask_reservoir.errors import ClusterLostError, JobError

__all__ = ["JOIN_TIMEOUT", "WAIT_SLICE", "LedgerLike", "RunnerLike", "loading_over", "raise_fatal"]

WAIT_SLICE = 0.1
"""Longest single wait (seconds) of the runner thread and of consumers."""

JOIN_TIMEOUT = 10.0
"""How long ``close()`` waits for the runner thread to finish."""


def raise_fatal(fatal: BaseException | None) -> None:
    """Raise what stopped the runner (thread or loader process) in the caller's thread, if anything.

    A lost cluster stays a :class:`~dask_reservoir.errors.ClusterLostError`, a bad argument
    (``ValueError``, ``TypeError``) its own type; anything else is a ``RuntimeError``.  The
    original is the new exception's cause.

    Examples
    --------
    >>> raise_fatal(None)
    >>> raise_fatal(KeyError("boom"))
    Traceback (most recent call last):
    ...
    RuntimeError: the dask_reservoir job runner stopped: KeyError('boom')
    """
    if fatal is not None:
        if isinstance(fatal, ClusterLostError):
            raise ClusterLostError(str(fatal)) from fatal.__cause__
        if type(fatal) in (ValueError, TypeError):  # a bad source_sampler, say
            raise type(fatal)(str(fatal)) from fatal
        raise RuntimeError(f"the dask_reservoir job runner stopped: {fatal!r}") from fatal


class LedgerLike(Protocol):
    """What the reservoir reads from a runner's ledger: entries, errors, counters, the source position.

    Satisfied by :class:`~dask_reservoir._core.ledger.Ledger` (thread runner) and
    :class:`~dask_reservoir._runtime.loader.mirror.LedgerMirror` (loader process).  Every
    member is safe to call from the consumer's threads.

    Examples
    --------
    >>> from dask_reservoir._runtime.loader.mirror import LedgerMirror, LoaderState
    >>> def waiting(ledger: LedgerLike) -> int:
    ...     return ledger.counters().entries_waiting
    >>> mirror: LedgerLike = LedgerMirror(lambda message: None, lambda kind, payload: None)
    >>> waiting(mirror), mirror.status
    (0, 'connecting')
    """

    @property
    def cond(self) -> threading.Condition:
        """The condition notified when something arrives or the runner stops."""

    @property
    def fatal(self) -> BaseException | None:
        """What stopped the runner, if anything (raised by :func:`raise_fatal`)."""

    @property
    def status(self) -> str:
        """The connection status: ``"connecting"``, ``"running"``, ``"lost"`` or ``"closed"``."""

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time of ``function_to_run`` per source row."""

    @property
    def rows_per_job(self) -> int:
        """Source rows per task now."""

    @property
    def max_rows(self) -> int:
        """The back-pressure bound now, in source rows."""

    @property
    def max_jobs(self) -> int | None:
        """The back-pressure bound now, in tasks."""

    def take(self, limit: int | None = None) -> Sequence[Completed | CompletedBlock]:
        """Remove and return up to ``limit`` waiting entries, oldest first."""

    def has_waiting(self) -> bool:
        """Whether finished entries wait to be taken."""

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""

    def pop_error(self) -> JobError | None:
        """The oldest job error not yet reported, or None."""

    def counters(self) -> RunnerCounters:
        """A consistent copy of the counters."""

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last rows loaded."""

    def source_position(self) -> tuple[int, int, tuple[Hashable, ...]]:
        """``(pass, cursor, pending UIDs)`` for a checkpoint."""

    def checkpoint(self) -> tuple[int, int, tuple[Hashable, ...], str | None]:
        """:meth:`source_position` and the digest of the pass's order, at once."""

    def rejected(self, uid: Hashable, exc: BaseException, position: int | None = None) -> None:
        """An entry of ``uid`` (at source ``position``, when known) could not be stored: that UID's failure."""

    def release_quarantine(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Submit quarantined UIDs again (all when ``uids`` is None); the UIDs released."""

    def close(self) -> None:
        """Drop what waits and wake every waiter (idempotent)."""


class RunnerLike(Protocol):
    """What the reservoir calls on the part that runs its jobs: start, take, wait, check, close.

    Satisfied by :class:`~dask_reservoir._runtime.runner.JobRunner` (a thread of this
    process) and :class:`~dask_reservoir._runtime.loader.parent.LoaderProcess` (a loader
    process).  The facade holds one as ``self._runner``; build it with
    :func:`~dask_reservoir._runtime.loader.parent.make_runner`.

    Examples
    --------
    >>> def top_up(runner: RunnerLike) -> list[Completed]:
    ...     runner.check()  # raises what stopped it, if anything
    ...     return runner.take(runner.ledger.max_rows)
    """

    @property
    def ledger(self) -> LedgerLike:
        """The runner's bookkeeping, as the consumer reads it."""

    @property
    def perf_sending(self) -> Performance:
        """Times to submit a job."""

    @property
    def perf_receiving(self) -> Performance:
        """Times from submitting a job to its result."""

    def start(self) -> None:
        """Start running jobs (idempotent)."""

    def take(self, limit: int | None = None) -> Sequence[Completed | CompletedBlock]:
        """Remove and return up to ``limit`` finished entries, oldest first; room for more jobs."""

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the runner stops, or ``timeout`` passes."""

    def poke(self) -> None:
        """Wake the runner now (room was freed, or quarantined UIDs were released)."""

    def check(self) -> None:
        """Raise, in the caller's thread, what stopped the runner, if anything."""

    def close(self, timeout: float = ...) -> None:
        """Stop submitting, cancel or release every task, stop the runner (idempotent)."""

    def wait_released(self, timeout: float) -> bool:
        """After :meth:`close`: whether the cluster holds none of its tasks any more."""


def loading_over(ledger: LedgerLike) -> bool:
    """``passes=``: nothing more will load (every pass came back) and nothing waits to be ingested."""
    return ledger.counters().loading_done and not ledger.has_waiting()

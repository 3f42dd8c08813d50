"""The consumer's copy of a loader process's ledger: what arrived, what failed, the counters.

With ``loader="process"`` the :class:`~dask_reservoir._core.ledger.Ledger` lives in the
loader process (see :mod:`~dask_reservoir._runtime.loader.parent`).  It ships finished entries,
job errors and a copy of its counters over a pipe; this module keeps them on the
consumer's side behind the same methods the reservoir calls on a ledger
(``take``, ``wait``, ``counters``, ``pop_error``, ...).  Plain synchronous state
behind one ``threading.Condition``: the loader's receiving thread writes, the
consumer reads.  What the consumer tells the loader (entries taken, a rejected
entry, quarantine releases) goes through the ``send``/``ask`` callables it is
given.  Tested without a process in ``tests/test_mirror.py``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dask_reservoir._core.records import Completed, RunnerCounters
from dask_reservoir.errors import JobError

__all__ = ["LedgerMirror", "LoaderState"]

_STARTING = RunnerCounters(
    jobs_submitted=0,
    rows_submitted=0,
    rows_loaded=0,
    rows_requeued=0,
    jobs_completed=0,
    jobs_failed=0,
    rows_failed=0,
    jobs_in_flight=0,
    rows_in_flight=0,
    entries_waiting=0,
    uids_tried=0,
    uids_loaded=0,
    status="connecting",
)


@dataclass(frozen=True)
class LoaderState:
    """What the loader process reports with every shipment (and a few times a second)."""

    counters: RunnerCounters = _STARTING
    recent_load_seconds: tuple[float, ...] = ()
    mean_load_seconds: float = 0.0
    rows_per_job: int = 1
    max_rows: int = 1
    max_jobs: int | None = None
    sending: tuple[float, int] = (0.0, 0)
    """``Performance.totals()`` of the submit times."""
    receiving: tuple[float, int] = (0.0, 0)
    """``Performance.totals()`` of the submit-to-result times."""
    address: str = ""


@dataclass
class LedgerMirror:
    """The ledger methods the reservoir calls, answered from what the loader process shipped.

    Parameters
    ----------
    send : callable
        Sends one message (a tuple) to the loader process; never blocks for long.
    ask : callable
        ``ask(kind, payload)``: sends a request and returns the loader's answer (raises
        ``TimeoutError`` past its deadline).

    Examples
    --------
    >>> sent = []
    >>> mirror = LedgerMirror(sent.append, lambda kind, payload: [])
    >>> mirror.receive([Completed("a", 0, ({"x": 1},), 0.5, 1.0)], [], LoaderState())
    >>> mirror.has_waiting(), mirror.counters().entries_waiting
    (True, 1)
    >>> [c.uid for c in mirror.take()], sent
    (['a'], [('taken', ['a'])])
    """

    send: Callable[[tuple[Any, ...]], None]
    ask: Callable[[str, Any], Any]
    cond: threading.Condition = field(default_factory=threading.Condition)
    fatal: BaseException | None = None
    closed: bool = False
    _state: LoaderState = field(default_factory=LoaderState)
    _waiting: deque[Completed] = field(default_factory=deque)
    _errors: deque[JobError] = field(default_factory=deque)
    _status: str | None = None  # set when the loader stopped or the mirror closed

    # ------------------------------------------------------------------ the receiving thread
    def receive(self, items: list[Completed], errors: list[JobError], state: LoaderState) -> None:
        """Entries and errors the loader shipped, with its counters after shipping them."""
        with self.cond:
            if self.closed:
                return
            self._waiting.extend(items)
            self._errors.extend(errors)
            self._state = state
            self.cond.notify_all()

    def stopped(self, fatal: BaseException | None, status: str) -> None:
        """The loader process stopped (``fatal`` is what stopped it, if anything)."""
        with self.cond:
            if self.fatal is None and fatal is not None:
                self.fatal = fatal
            self._status = status
            self.cond.notify_all()

    # ------------------------------------------------------------------ the consumer
    def take(self, limit: int | None = None) -> list[Completed]:
        """Remove and return up to ``limit`` received entries, oldest first; tell the loader."""
        with self.cond:
            n = len(self._waiting) if limit is None else min(limit, len(self._waiting))
            taken = [self._waiting.popleft() for _ in range(n)]
        if taken:
            self.send(("taken", [item.uid for item in taken]))
        return taken

    def has_waiting(self) -> bool:
        """Whether finished entries wait here or in the loader process."""
        with self.cond:
            return bool(self._waiting) or self._state.counters.entries_waiting > 0

    def wait(self, timeout: float) -> None:
        """Block until an entry or failure arrives, the loader stops, or ``timeout`` passes."""
        with self.cond:
            if not self._waiting and not self._errors and self.fatal is None and not self.closed:
                self.cond.wait(timeout=max(0.0, timeout))

    def pop_error(self) -> JobError | None:
        """The oldest job error not yet reported, or None."""
        with self.cond:
            return self._errors.popleft() if self._errors else None

    def counters(self) -> RunnerCounters:
        """The loader's last counters; ``entries_waiting`` includes what waits here."""
        with self.cond:
            c = self._state.counters
            status = self._status or c.status
            return replace(c, entries_waiting=c.entries_waiting + len(self._waiting), status=status)

    @property
    def status(self) -> str:
        """The loader's connection status (``"closed"`` once stopped)."""
        return self.counters().status

    def recent_load_seconds(self) -> list[float]:
        """Worker times of the last rows loaded."""
        with self.cond:
            return list(self._state.recent_load_seconds)

    @property
    def mean_load_seconds(self) -> float:
        """Mean worker time of ``function_to_run`` per source row."""
        return self._state.mean_load_seconds

    @property
    def rows_per_job(self) -> int:
        """Source rows per task now."""
        return self._state.rows_per_job

    @property
    def max_rows(self) -> int:
        """The back-pressure bound now, in source rows."""
        return self._state.max_rows

    @property
    def max_jobs(self) -> int | None:
        """The back-pressure bound now, in tasks."""
        return self._state.max_jobs

    @property
    def state(self) -> LoaderState:
        """The loader's last report."""
        return self._state

    def source_position(self) -> tuple[int, int, tuple[Hashable, ...]]:
        """The loader's pass, cursor and pending UIDs now (asked: it has read every ``taken`` sent before)."""
        source_pass, cursor, pending = self.ask("position", None)
        return int(source_pass), int(cursor), tuple(pending)

    def checkpoint(self) -> tuple[int, int, tuple[Hashable, ...], str | None]:
        """The loader's :meth:`~dask_reservoir._core.ledger.Ledger.checkpoint` now (asked, like :meth:`source_position`)."""
        source_pass, cursor, pending, digest = self.ask("checkpoint", None)
        return int(source_pass), int(cursor), tuple(pending), digest

    def rejected(self, uid: Hashable, exc: BaseException, position: int | None = None) -> None:
        """A shipped entry could not be stored: the loader records it as that UID's failure."""
        text = str(exc) if type(exc).__name__ == "StoreError" else f"{type(exc).__name__}: {exc}"
        self.send(("rejected", uid, text, position))  # the loader records it as a StoreError

    def release_quarantine(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Ask the loader to submit quarantined UIDs again; return the UIDs it released."""
        released = self.ask("release", None if uids is None else list(uids))
        return list(released)

    def close(self) -> None:
        """Drop what waits and wake every waiter (idempotent)."""
        with self.cond:
            self.closed = True
            self._status = "closed"
            self._waiting.clear()
            self.cond.notify_all()

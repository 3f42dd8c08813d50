"""Waiting results: what each submitted dask future became, handed to the runner thread.

For each future, one small coroutine on the client's event loop awaits it
(public API only: ``await future``) and catches whatever that raises; the
outcome, an :class:`Arrival`, is queued behind a ``threading.Condition`` the
runner thread waits on in slices.  No timer decides that a result is lost:
a slow transfer or a busy event loop just takes longer; dask's own signals
decide (the result, the task's exception, a cancellation, an exception
while fetching).  Unlike ``as_completed``, a fetch that fails is reported
instead of being dropped silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import traceback as tb_module
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from distributed import Client, Future

__all__ = [
    "BACKOFF_MAX_SECONDS",
    "BACKOFF_SECONDS",
    "MAX_UNEXPECTED",
    "Arrival",
    "LossTracker",
    "ResultCollector",
]

logger = logging.getLogger("dask_reservoir")

MAX_UNEXPECTED = 3
"""Losses in a row (cancelled by someone else, result not fetched) after which a job's rows fail."""

BACKOFF_SECONDS = 0.5
"""Delay before resubmitting rows after their first unexpected loss; doubles with each one after."""

BACKOFF_MAX_SECONDS = 5.0
"""Longest back-off."""

TRANSFER_SETTLE_SECONDS = 1.0
"""At close, how long results already being fetched may take to arrive before they are cut off."""


class Arrival(NamedTuple):
    """What became of one future.

    ``kind`` is ``"finished"`` (``value`` is the result), ``"error"`` (the task
    raised ``error``, its traceback cleared, the text in ``text``), ``"cancelled"``
    (``error`` is the ``CancelledError``) or ``"lost"`` (fetching the result
    raised ``error``).
    """

    kind: str
    value: Any = None
    error: BaseException | None = None
    text: str = ""


def _text(exc: BaseException) -> str:
    try:
        return "".join(tb_module.format_tb(exc.__traceback__))
    except Exception:  # pragma: no cover - best effort
        return ""


class ResultCollector:
    """Watch futures on ``client.loop``; the runner thread takes what arrived.

    Parameters
    ----------
    client : distributed.Client
        The client whose event loop awaits the futures.
    cond : threading.Condition
        Notified whenever something arrives (the runner waits on it).
    """

    def __init__(self, client: Client, cond: threading.Condition) -> None:
        self._client = client
        self.cond = cond
        self._arrived: deque[tuple[Future, Arrival]] = deque()
        self._watchers: dict[Hashable, tuple[Future, concurrent.futures.Future[None]]] = {}
        self._closed = False

    def watch(self, future: Future) -> None:
        """Start awaiting ``future``; its :class:`Arrival` will be queued."""
        loop: asyncio.AbstractEventLoop = self._client.loop.asyncio_loop  # type: ignore[union-attr]
        self._watchers[future.key] = (future, asyncio.run_coroutine_threadsafe(self._await(future), loop))

    async def _await(self, future: Future) -> None:
        try:
            arrival = Arrival("finished", await future)
        except BaseException as exc:  # every outcome is reported, none raised here
            text = _text(exc)
            exc.__traceback__ = None  # the key must not stay alive through it (dask#8790)
            status = future.status
            if status == "error":
                arrival = Arrival("error", None, exc, text)
            elif status == "cancelled" or isinstance(exc, asyncio.CancelledError):
                arrival = Arrival("cancelled", None, exc, text)
            else:
                arrival = Arrival("lost", None, exc, text)
        with self.cond:
            if not self._closed:  # after abandon(), drop the future here
                self._arrived.append((future, arrival))
            self.cond.notify_all()

    def has_arrivals(self) -> bool:
        """Whether something waits to be taken (call with ``cond`` held, or accept a race)."""
        return bool(self._arrived)

    def take(self) -> list[tuple[Future, Arrival]]:
        """Remove and return what arrived, oldest first."""
        with self.cond:
            taken = list(self._arrived)
            self._arrived.clear()
        for future, _ in taken:
            self._watchers.pop(future.key, None)
        return taken

    def abandon(
        self,
        cancel: Callable[[list[Future]], None],
        futures: list[Future],
        *,
        transfer_timeout: float = TRANSFER_SETTLE_SECONDS,
    ) -> None:
        """Drop what arrived, ``cancel(futures)``, and stop awaiting them (at close).

        The futures are cancelled first (their watchers end as soon as the client
        knows); results already being fetched get up to ``transfer_timeout`` seconds
        to arrive; only the watchers still running then are cut off.  A fetch cut
        off mid-transfer makes the worker log a ``CommClosedError`` traceback
        ("failed during get data"), so it is the last resort.
        """
        with self.cond:
            self._closed = True
            self._arrived.clear()
        watchers = [watcher for _, watcher in self._watchers.values()]
        self._watchers.clear()
        cancel(futures)
        if watchers:
            concurrent.futures.wait(watchers, timeout=transfer_timeout)
        for watcher in watchers:
            watcher.cancel()


class LossTracker:
    """Jobs lost unexpectedly (cancelled by someone else, result not fetched): back off, then fail.

    Examples
    --------
    >>> losses = LossTracker()
    >>> losses.lost([4, 5], now=0.0), losses.ready(now=0.1), losses.ready(now=0.5)
    (0.5, [], [[4, 5]])
    >>> losses.lost([4], now=1.0), losses.lost([4], now=2.0)  # the third loss in a row: fail
    (1.0, None)
    """

    def __init__(self) -> None:
        self._streak: dict[int, int] = {}  # position -> unexpected losses in a row
        self._held: list[tuple[float, list[int]]] = []  # (resubmit at, positions)

    def streak(self, positions: list[int]) -> int:
        """Losses in a row of the worst of ``positions``."""
        return max((self._streak.get(p, 0) for p in positions), default=0)

    def loaded(self, positions: list[int]) -> None:
        """These rows came back: their streak ends."""
        for p in positions:
            self._streak.pop(p, None)

    def lost(self, positions: list[int], *, now: float) -> float | None:
        """Record a loss; the back-off before resubmitting, or None when the rows must fail now."""
        streak = 1 + self.streak(positions)
        if streak >= MAX_UNEXPECTED:
            self.loaded(positions)
            return None
        for p in positions:
            self._streak[p] = streak
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** (streak - 1))
        self._held.append((now + delay, positions))
        return delay

    def ready(self, *, now: float) -> list[list[int]]:
        """Held jobs whose back-off is over (removed)."""
        if not self._held:
            return []
        ready = [positions for at, positions in self._held if at <= now]
        self._held = [(at, positions) for at, positions in self._held if at > now]
        return ready

    def drain(self) -> list[list[int]]:
        """Every held job (removed), at close."""
        held, self._held = [positions for _, positions in self._held], []
        return held

"""A reservoir's lifetime: one owner, closed at exit, finalized off dask's event loop.

- :class:`Uncopyable`: a reservoir owns a runner thread and dask futures, so
  ``copy``, ``deepcopy`` and ``pickle`` raise a clear ``TypeError`` instead of
  producing a second object that would close the first one's runner.
- :func:`track` / :func:`untrack`: reservoirs still open when the interpreter
  exits are closed before the thread pools stop (quietly, without dask's
  "cannot schedule new futures after shutdown" errors).
- :func:`close_in_background`: what ``__del__`` does; the cyclic GC may finalize
  a reservoir on any thread, dask's event loop included, where joining the
  runner or closing a client would freeze the loop.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, NoReturn, Protocol

__all__ = ["Uncopyable", "close_in_background", "track", "untrack"]

logger = logging.getLogger("dask_reservoir")


class _Closable(Protocol):
    def close(self) -> None: ...  # pragma: no cover - protocol


_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()
"""Reservoirs not closed yet."""


def track(reservoir: _Closable) -> None:
    """Close ``reservoir`` at interpreter exit unless it is closed before."""
    _OPEN.add(reservoir)


def untrack(reservoir: _Closable) -> None:
    """``reservoir`` was closed: nothing to do at exit."""
    _OPEN.discard(reservoir)


EXIT_SETTLE_SECONDS = 2.0
"""At exit, how long to wait for the scheduler to forget the tasks of closed reservoirs."""


def _close_all_at_exit() -> None:
    reservoirs = list(_OPEN)
    for reservoir in reservoirs:
        try:
            reservoir.close()
        except Exception as exc:  # pragma: no cover - best effort at exit
            logger.debug("closing %r at exit failed: %r", reservoir, exc)
    # releases reach the scheduler asynchronously: let it handle them before the
    # interpreter stops its thread pools (a user's own cluster lives on until then)
    for reservoir in reservoirs:
        settle = getattr(reservoir, "settle", None)
        if settle is not None:
            try:
                settle(EXIT_SETTLE_SECONDS)
            except Exception as exc:  # pragma: no cover - best effort at exit
                logger.debug("waiting for the scheduler at exit failed: %r", exc)


# concurrent.futures stops every executor (dask's offload pool included) from threading's
# exit hooks, which run before ``atexit`` handlers, last registered first: registered after
# it (distributed is imported before this module), ours runs first.  ``atexit`` is the
# fallback where the hook does not exist.
_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    _register_thread_exit(_close_all_at_exit)
atexit.register(_close_all_at_exit)


def close_in_background(reservoir: _Closable, name: str) -> None:
    """Call ``reservoir.close()`` in a daemon thread of its own and return at once."""
    threading.Thread(target=reservoir.close, name=name, daemon=True).start()


class Uncopyable:
    """Refuse ``copy.copy``, ``copy.deepcopy`` and ``pickle`` with a ``TypeError``.

    Examples
    --------
    >>> import copy
    >>> class Owner(Uncopyable):
    ...     pass
    >>> copy.copy(Owner())
    Traceback (most recent call last):
    ...
    TypeError: an Owner cannot be copied: it owns a background runner and dask futures; use subsample()/subsample_uids() for another reservoir on the same source, or pass the source and function to a new AsyncReservoir
    """

    def _refuse(self, what: str) -> NoReturn:
        raise TypeError(
            f"an {type(self).__name__} cannot be {what}: it owns a background runner and dask "
            "futures; use subsample()/subsample_uids() for another reservoir on the same source, "
            "or pass the source and function to a new AsyncReservoir"
        )

    def __copy__(self) -> NoReturn:
        self._refuse("copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        self._refuse("copied")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self._refuse("pickled")

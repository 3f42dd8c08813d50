"""Exceptions raised by dask_reservoir.

Every error states the rule that was broken and the value received; job
failures carry the UID of the source row that failed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

__all__ = [
    "ClusterLostError",
    "IteratorExpiredError",
    "JobError",
    "JobTimeoutError",
    "ReservoirClosedError",
    "first_values",
]

SHOWN = 5
"""Values quoted in an error message, at most."""


def first_values(values: Sequence[Any]) -> str:
    """The first :data:`SHOWN` of ``values`` for a message, and how many more.

    Examples
    --------
    >>> first_values([1, 2]), first_values(list(range(7)))
    ('[1, 2]', '[0, 1, 2, 3, 4] (and 2 more)')
    """
    more = f" (and {len(values) - SHOWN} more)" if len(values) > SHOWN else ""
    return f"{list(values[:SHOWN])!r}{more}"


class JobError(RuntimeError):
    """A job (``function_to_run`` on one source row) failed.

    Raised by ``iter()``/``next()`` when ``on_error="raise"``, and when every
    source row has been tried but too few loaded to reach the minimum.  The
    original exception, when it could travel back from the worker, is chained
    as ``__cause__``.

    Parameters
    ----------
    message : str
        What went wrong.
    uid : Hashable, optional
        The UID of the failing source row, when the error concerns one row.

    Examples
    --------
    >>> err = JobError("function_to_run failed for UID 3: ValueError: bad file", uid=3)
    >>> err.uid
    3
    """

    def __init__(self, message: str, *, uid: Hashable | None = None) -> None:
        super().__init__(message)
        self.uid = uid

    def __reduce__(self) -> tuple[object, ...]:
        # keep ``uid`` when the error travels between processes
        return (_rebuild_job_error, (str(self), self.uid))


def _rebuild_job_error(message: str, uid: Hashable | None) -> JobError:
    return JobError(message, uid=uid)


class JobTimeoutError(JobError):
    """A job ran longer than ``job_timeout`` and was abandoned."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_job_timeout_error, (str(self), self.uid))


def _rebuild_job_timeout_error(message: str, uid: Hashable | None) -> JobTimeoutError:
    return JobTimeoutError(message, uid=uid)


class ReservoirClosedError(RuntimeError):
    """The reservoir was closed; it cannot be iterated any more."""


class IteratorExpiredError(RuntimeError):
    """An epoch's iterator was expired: not advanced while too many newer epochs started.

    An iterator reads the entries its epoch started with, which keeps them in memory
    (pinned).  So that nothing a consumer holds or abandons stops the reservoir from
    refreshing, an iterator not advanced while more than ``max_stale_epochs`` newer
    epochs started (``iter()`` calls) is expired: its entries are released, the
    batches built ahead for it dropped, and its next ``next()`` raises this error.
    With ``deterministic=True``, ``iter()`` also expires the iterators of earlier
    epochs, oldest first, whose entries leave no room for its exact entries.

    Parameters
    ----------
    message : str
        What happened and how to avoid it.
    epoch : int or None
        The sampler's number of the expired epoch.
    behind : int
        Newer epochs started since the iterator was last advanced.

    Examples
    --------
    >>> err = IteratorExpiredError("expired", epoch=3, behind=3)
    >>> isinstance(err, RuntimeError), err.epoch, err.behind
    (True, 3, 3)
    """

    def __init__(self, message: str, *, epoch: int | None = None, behind: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.behind = behind

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_expired, (str(self), self.epoch, self.behind))


def _rebuild_expired(message: str, epoch: int | None, behind: int) -> IteratorExpiredError:
    return IteratorExpiredError(message, epoch=epoch, behind=behind)


class ClusterLostError(ConnectionError):
    """The dask client lost its scheduler and gave up reconnecting."""

"""The failure book: what happened to each UID, its failures, quarantine, the errors to report.

Plain synchronous state, no lock: the :class:`~dask_reservoir._core.ledger.Ledger`
calls it under its condition.  Tested in ``tests/core/test_ledger_failures.py``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Hashable, Iterable, KeysView, Sequence
from dataclasses import replace

from dask_reservoir._core.records import FailureRecord
from dask_reservoir.errors import JobError

__all__ = ["FailureBook", "misreported"]

logger = logging.getLogger("dask_reservoir")


def misreported(reported: Hashable, uid: Hashable) -> str:
    """The failure message of a row of ``uid`` whose worker reported it under UID ``reported``.

    Examples
    --------
    >>> misreported("b", "a")  # doctest: +NORMALIZE_WHITESPACE
    "the worker reported UID 'b' for the source row of UID 'a' (row order of the source
    changed between reads?); the result was dropped"
    """
    return (
        f"the worker reported UID {reported!r} for the source row of UID {uid!r} "
        "(row order of the source changed between reads?); the result was dropped"
    )


class FailureBook:
    """Per UID that failed: its failures, whether the store rejected it, its quarantine.

    A UID is quarantined (never submitted again until released) once it failed
    ``max_failures_per_uid`` times in a row; a load resets the count in a row, unless
    the store rejected the UID's entry since (a load that cannot be stored is no
    success).

    Parameters
    ----------
    max_failures_per_uid : int or None
        Failures in a row after which a UID is quarantined; None: never.
    collect_errors : bool
        Keep a ``JobError`` per failure for :meth:`pop_error`.

    Examples
    --------
    >>> book = FailureBook(max_failures_per_uid=2)
    >>> book.failed("u", "ValueError", "bad", "", None)
    >>> book.loaded("u")  # a success: the count in a row starts again
    >>> book.failed("u", "ValueError", "bad", "", None)
    >>> "u" in book.quarantined
    False
    >>> book.failed("u", "ValueError", "worse", "", None)
    >>> list(book.quarantined), book.records()[0].count
    (['u'], 3)
    """

    def __init__(self, *, max_failures_per_uid: int | None = None, collect_errors: bool = False) -> None:
        self._max_failures = max_failures_per_uid
        self._collect_errors = collect_errors
        self._failures: dict[Hashable, FailureRecord] = {}  # the latest failure of each UID
        self._quarantined: dict[Hashable, FailureRecord] = {}  # the failure that quarantined it
        self._errors: deque[JobError] = deque()  # not yet reported (collect_errors)
        self._rejected: set[Hashable] = set()  # a result was loaded but could not be stored

    # ------------------------------------------------------------------ what happened
    def loaded(self, uid: Hashable) -> None:
        """``uid`` loaded (with rows or none): its count of failures in a row is reset.

        Not reset while the store's rejection of the UID's entry stands (until
        :meth:`release`).  What loaded is counted by
        :class:`~dask_reservoir._core.ledger.coverage.Coverage`.
        """
        if self._failures and uid not in self._rejected:
            previous = self._failures.get(uid)
            if previous is not None and previous.consecutive:
                self._failures[uid] = replace(previous, consecutive=0)

    def loaded_chunk(self, uids: Sequence[Hashable]) -> None:
        """The UIDs of a job loaded at once (see :meth:`loaded`): a step per UID only once some failed.

        Examples
        --------
        >>> book = FailureBook()
        >>> book.failed("a", "ValueError", "bad", "", None)
        >>> book.loaded_chunk(["a", "b"])
        >>> book.records()[0].consecutive
        0
        """
        if self._failures:
            for uid in uids:
                self.loaded(uid)

    def failed(
        self, uid: Hashable, exc_type: str, message: str, text: str, exc: BaseException | None
    ) -> None:
        """``uid`` failed: record it, keep its error (``collect_errors``), quarantine it at the limit.

        The first failure of a UID is logged as a warning, the next ones as debug.

        Examples
        --------
        >>> book = FailureBook(max_failures_per_uid=1, collect_errors=True)
        >>> book.failed("u", "KeyError", "'k'", "traceback", KeyError("k"))
        >>> record = book.records()[0]
        >>> record.exc_type, record.count, record.consecutive, list(book.quarantined)
        ('KeyError', 1, 1, ['u'])
        >>> str(book.pop_error()), book.pop_error()
        ("function_to_run failed for UID 'u': KeyError: 'k'", None)
        """
        previous = self._failures.get(uid)
        count = 1 + (previous.count if previous else 0)
        consecutive = 1 + (previous.consecutive if previous else 0)
        record = FailureRecord(uid, exc_type, message, text, count, consecutive)
        self._failures[uid] = record
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

    def rejected(self, uid: Hashable, exc: BaseException) -> None:
        """The store could not keep ``uid``'s entry: a failure of the UID (loads do not reset it until released)."""
        self._rejected.add(uid)
        self.failed(uid, type(exc).__name__, str(exc), "", exc)

    # ------------------------------------------------------------------ quarantine
    @property
    def quarantined(self) -> KeysView[Hashable]:
        """The quarantined UIDs (a live view)."""
        return self._quarantined.keys()

    def release(self, uids: Iterable[Hashable] | None = None) -> list[Hashable]:
        """Release quarantined UIDs (all when ``uids`` is None); return those released, once each.

        Their count of failures in a row starts again from zero; UIDs that are not
        quarantined are ignored.

        Examples
        --------
        >>> book = FailureBook(max_failures_per_uid=1)
        >>> book.failed("u", "ValueError", "bad", "", None)
        >>> book.release(["u", "u", "v"]), list(book.quarantined), book.records()[0].consecutive
        (['u'], [], 0)
        """
        wanted = list(self._quarantined) if uids is None else [u for u in uids if u in self._quarantined]
        wanted = list(dict.fromkeys(wanted))  # a UID named twice is released once
        for uid in wanted:
            del self._quarantined[uid]
            self._rejected.discard(uid)
            record = self._failures.get(uid)
            if record is not None:
                self._failures[uid] = replace(record, consecutive=0)
        if wanted:
            logger.info("dask_reservoir: released %d UIDs from quarantine", len(wanted))
        return wanted

    def restore(self, quarantined: Iterable[Hashable], *, known: Collection[Hashable]) -> None:
        """Quarantine the UIDs a checkpoint had quarantined (those of ``known``, the source's)."""
        for uid in quarantined:
            if uid in known:
                record = FailureRecord(
                    uid, "Quarantined", "quarantined when the checkpoint was saved", "", 0, 0
                )
                self._quarantined[uid] = record

    # ------------------------------------------------------------------ reports
    def pop_error(self) -> JobError | None:
        """The oldest failure not yet reported, or None (kept only with ``collect_errors=True``)."""
        return self._errors.popleft() if self._errors else None

    @property
    def has_errors(self) -> bool:
        """Whether failures wait to be reported by :meth:`pop_error`."""
        return bool(self._errors)

    def records(self) -> tuple[FailureRecord, ...]:
        """The latest failure of each UID that ever failed."""
        return tuple(self._failures.values())

    def quarantine_records(self) -> dict[Hashable, FailureRecord]:
        """Each quarantined UID with its latest failure."""
        return {u: self._failures.get(u, r) for u, r in self._quarantined.items()}

    def unloadable(self) -> frozenset[Hashable]:
        """The quarantined UIDs: they cannot give an entry now (see also ``Coverage.unloadable``)."""
        return frozenset(self._quarantined)

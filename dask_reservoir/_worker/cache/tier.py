"""The persistent tier on the worker: read a row's result if kept, else compute and keep it.

A :class:`CacheTier` travels inside each task's options (a URL, a fingerprint and a
flag: a few hundred bytes).  :meth:`CacheTier.load` runs around the call of
``function_to_run`` for one source row; the task's :class:`CacheCounts` go back with
its outcomes in a :class:`CacheCounted`, which the runner unwraps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from dask_reservoir._core.records import Outcome, RowLoaded
from dask_reservoir._core.uid_index import same_uid
from dask_reservoir._worker.cache.files import CacheFiles
from dask_reservoir._worker.cache.fingerprint import function_fingerprint
from dask_reservoir._worker.cache.keys import entry_key, row_digest

__all__ = ["CacheCounted", "CacheCounts", "CacheTier", "cache_tier"]

logger = logging.getLogger("dask_reservoir")


class CacheCounts:
    """Hits, misses, bytes read and bytes written by one task (mutable, local to the task).

    Examples
    --------
    >>> counts = CacheCounts()
    >>> counts.hit(10); counts.miss(25); counts.as_tuple()
    (1, 1, 10, 25)
    """

    __slots__ = ("bytes_read", "bytes_written", "hits", "misses")

    def __init__(self) -> None:
        self.hits = self.misses = self.bytes_read = self.bytes_written = 0

    def hit(self, nbytes: int) -> None:
        self.hits += 1
        self.bytes_read += nbytes

    def miss(self, nbytes: int) -> None:
        self.misses += 1
        self.bytes_written += nbytes

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.hits, self.misses, self.bytes_read, self.bytes_written)


class CacheCounted(NamedTuple):
    """A task's result with its persistent-tier counts (hits, misses, bytes read, bytes written)."""

    result: Any
    counts: tuple[int, int, int, int]


@dataclass(frozen=True)
class CacheTier:
    """Where results are kept and how they are keyed.

    Attributes
    ----------
    files : CacheFiles
        The directory or URL.
    fingerprint : str
        :func:`~dask_reservoir._worker.cache.fingerprint.function_fingerprint` of ``function_to_run``.
    row_hash : bool
        Whether the source row's digest is part of the key (``cache_row_hash``).
    """

    files: CacheFiles
    fingerprint: str
    row_hash: bool = True

    def key(self, uid: Hashable, record: dict[str, Any]) -> str:
        """The key of ``uid``'s result computed from ``record`` (before the function may change it)."""
        return entry_key(uid, row_digest(record) if self.row_hash else None, self.fingerprint)

    def load(
        self,
        uid: Hashable,
        record: dict[str, Any],
        uid_column: str,
        compute: Callable[[], Outcome],
        counts: CacheCounts,
    ) -> Outcome:
        """The kept result of ``uid``, or ``compute()`` then kept when it loaded.

        A kept file whose rows name another UID is treated as corrupt (recomputed).  A
        value the files cannot hold makes the row fail (``TypeError`` naming the UID and the
        column); a filesystem error while writing is logged and the row served anyway.
        """
        start = time.perf_counter()
        key = self.key(uid, record)
        kept = self.files.read(key)
        if kept is not None:
            rows, nbytes = kept
            if all(same_uid(row.get(uid_column), uid) for row in rows):
                counts.hit(nbytes)
                return RowLoaded(uid, rows, time.perf_counter() - start)
            logger.warning(
                "dask_reservoir: the cache file %s holds rows of another UID than %r: recomputed",
                self.files.path(key),
                uid,
            )
        outcome = compute()
        if type(outcome) is RowLoaded:
            try:
                counts.miss(self.files.write(key, outcome.rows, uid=uid))
            except TypeError:
                counts.miss(0)  # computed, but the files cannot hold it: the row fails, naming the column
                raise
            except OSError as exc:
                counts.miss(0)
                logger.warning(
                    "dask_reservoir: could not write %s (%r): served, not kept", self.files.path(key), exc
                )
        return outcome


def cache_tier(function: Callable[..., Any], options: Any) -> CacheTier | None:
    """The tier of a reservoir's options (``cache``, ``cache_version``, ...), None without ``cache``."""
    if options.cache is None:
        return None
    files = CacheFiles(options.cache, storage_options=options.cache_storage_options)
    return CacheTier(
        files, function_fingerprint(function, version=options.cache_version), options.cache_row_hash
    )

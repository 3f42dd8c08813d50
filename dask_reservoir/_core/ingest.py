"""The rules of ``iter()``: how many waiting entries to ingest, and when waiting must stop.

Pure functions, no threads and no dask; :class:`~dask_reservoir.reservoir.AsyncReservoir`
applies them at each ``iter()``:

- the minimum ``iter()`` waits for is ``min_reservoir_samples`` capped by the source,
  or with ranks a whole rank's epoch (:func:`required_entries`); a source sampler that
  never draws some rows must draw at least that many (:func:`drawable_rows`);
- below the minimum, take what is missing, whatever the replacement cap;
- at or above it, take at most ``max_reservoir_replacement_size`` per epoch
  (everything waiting when it is None);
- never more than the store has room for: while an old iterator pins entries,
  the store's memory bound holds and further results wait (loading pauses);
- waiting for the minimum ends with an error when the scheduler is lost, when
  the UIDs that can still load (not quarantined, not empty, drawn by the source
  sampler) cannot reach it, or at the ``timeout``;
- ``deterministic=True`` waits for the next entries in submission order: that wait
  ends with an error once no row can give an entry any more.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable

import numpy as np

from dask_reservoir._core.options import ReservoirOptions
from dask_reservoir._core.records import FailureRecord
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.shards import rows_per_rank_epoch
from dask_reservoir._core.weighted import WeightedSampler
from dask_reservoir.errors import ClusterLostError, JobError

__all__ = [
    "drawable_rows",
    "minimum_error",
    "rank_epoch_rows",
    "required_entries",
    "single_take",
    "supply_error",
    "take_limit",
    "unreachable",
]

SHOWN_FAILURES = 5
"""Failures quoted in the error raised when the minimum cannot be reached."""


def take_limit(*, size: int, required: int, room: int, capped: bool, cap: int | None, counted: int) -> int:
    """How many waiting entries to move into the store now (0: none).

    Parameters
    ----------
    size : int
        Entries in the store now.
    required : int
        The minimum ``iter()`` waits for.
    room : int
        Puts the store can take now (see ``ReservoirStore.room``; huge when unbounded).
    capped : bool
        Whether the replacement cap applies (at the start of an epoch, not while waiting).
    cap : int or None
        ``max_reservoir_replacement_size``.
    counted : int
        Entries already taken this epoch at or above the minimum.

    Examples
    --------
    >>> take_limit(size=2, required=5, room=10, capped=True, cap=1, counted=0)  # below the minimum
    3
    >>> take_limit(size=5, required=5, room=10, capped=True, cap=4, counted=3)
    1
    >>> take_limit(size=5, required=5, room=0, capped=False, cap=None, counted=0)  # pinned: wait
    0
    >>> take_limit(size=5, required=5, room=7, capped=False, cap=None, counted=0)  # all, within room
    7
    """
    if room <= 0:
        return 0
    below = required - size
    if below > 0:
        return min(below, room)
    if not capped or cap is None:
        return room
    return max(0, min(cap - counted, room))


def single_take(*, size: int, required: int, capped: bool, cap: int | None) -> bool:
    """Whether one take ends the ingestion (no minimum to reach and no cap to count against).

    Examples
    --------
    >>> single_take(size=5, required=5, capped=False, cap=3), single_take(size=1, required=5, capped=False, cap=None)
    (True, False)
    """
    return size >= required and (not capped or cap is None)


def unreachable(
    *, required: int, n_source: int, unloadable: Collection[Hashable], in_store: int, undrawable: int = 0
) -> bool:
    """Whether the minimum can no longer be reached by the rows that can still load.

    ``unloadable`` are the UIDs that cannot give an entry now (quarantined, or their
    last result was empty), ``undrawable`` how many other rows the source sampler never
    draws (a weight of 0), and ``in_store`` how many of both still have an entry.  A UID
    that failed but may succeed on a later pass is not unloadable.

    Examples
    --------
    >>> unreachable(required=3, n_source=4, unloadable={"a"}, in_store=0)
    False
    >>> unreachable(required=3, n_source=4, unloadable={"a", "b"}, in_store=0)
    True
    >>> unreachable(required=3, n_source=4, unloadable={"a", "b"}, in_store=1)  # "a" is loaded
    False
    >>> unreachable(required=3, n_source=4, unloadable={"a"}, in_store=0, undrawable=1)
    True
    """
    return n_source - undrawable - (len(unloadable) - in_store) < required


def _blocked(
    *,
    n_source: int,
    unloadable: Collection[Hashable],
    quarantined: Collection[Hashable],
    undrawable: int,
    sampler: str,
) -> str:
    """Why rows cannot give an entry: ``"3 quarantined, 1 whose last result had no rows: [...]"``."""
    empty = sorted((u for u in unloadable if u not in quarantined), key=repr)
    detail = f"{len(unloadable) - len(empty)} quarantined, {len(empty)} whose last result had no rows"
    if empty:
        detail += f": {empty[:SHOWN_FAILURES]!r}" + (" ..." if len(empty) > SHOWN_FAILURES else "")
    if undrawable:
        detail += f", {undrawable} that source_sampler={sampler} never draws"
    return detail


def minimum_error(
    *,
    size: int,
    required: int,
    n_source: int,
    unloadable: Collection[Hashable],
    in_store: int,
    failures: tuple[FailureRecord, ...],
    quarantined: Collection[Hashable] = (),
    status: str,
    address: str,
    undrawable: int = 0,
    sampler: str = "",
) -> BaseException | None:
    """The error that must end a wait for the minimum now, or None to keep waiting.

    ``undrawable``: rows the source sampler (``sampler``, its repr) never draws, not among ``unloadable``.

    Examples
    --------
    >>> minimum_error(size=1, required=2, n_source=2, unloadable={"b"}, in_store=0,
    ...               failures=(), status="running", address="")
    JobError("only 1 of the 2 source rows can still give an entry (0 quarantined, 1 whose last result had no rows: ['b']), fewer than the minimum 2 (min_reservoir_samples); failures: none recorded")
    """
    if status == "lost":
        return ClusterLostError(
            f"lost the dask scheduler at {address!r} with {size} entries loaded, "
            f"fewer than the minimum {required}"
        )
    if unreachable(
        required=required, n_source=n_source, unloadable=unloadable, in_store=in_store, undrawable=undrawable
    ):
        blocked = len(unloadable) + undrawable - in_store
        shown = "; ".join(f.describe() for f in failures[:SHOWN_FAILURES]) or "none recorded"
        detail = _blocked(
            n_source=n_source,
            unloadable=unloadable,
            quarantined=quarantined,
            undrawable=undrawable,
            sampler=sampler,
        )
        return JobError(
            f"only {n_source - blocked} of the {n_source} source rows can still give an entry "
            f"({detail}), fewer than the minimum {required} (min_reservoir_samples); failures: {shown}"
        )
    return None


def supply_error(
    *,
    wanted: int,
    got: int,
    n_source: int,
    unloadable: Collection[Hashable],
    failures: tuple[FailureRecord, ...],
    quarantined: Collection[Hashable] = (),
    undrawable: int = 0,
    sampler: str = "",
) -> JobError | None:
    """``deterministic=True``: the error ending a wait for the next entries once no row can give one.

    The exact ingestion waits for ``wanted`` entries in submission order (``got`` so
    far); while some row can still give an entry, one will come, whatever the pass.

    Examples
    --------
    >>> supply_error(wanted=2, got=0, n_source=2, unloadable={"a", "b"}, failures=(), quarantined={"a", "b"})
    JobError('iter() waits for the next 2 entries in submission order (deterministic=True) and got 0, but none of the 2 source rows can give an entry any more (2 quarantined, 0 whose last result had no rows); failures: none recorded')
    >>> supply_error(wanted=2, got=0, n_source=3, unloadable={"a", "b"}, failures=()) is None
    True
    """
    if n_source - undrawable - len(unloadable) > 0:
        return None
    shown = "; ".join(f.describe() for f in failures[:SHOWN_FAILURES]) or "none recorded"
    detail = _blocked(
        n_source=n_source,
        unloadable=unloadable,
        quarantined=quarantined,
        undrawable=undrawable,
        sampler=sampler,
    )
    return JobError(
        f"iter() waits for the next {wanted} entries in submission order (deterministic=True) and got {got}, "
        f"but none of the {n_source} source rows can give an entry any more ({detail}); failures: {shown}"
    )


def drawable_rows(
    sampler: Sampler, n: int, *, required: int, minimum: int, refuse: bool
) -> tuple[np.ndarray | None, int]:
    """Which of ``n`` source rows ``sampler`` can draw (None: all) and how many it never draws.

    Raises
    ------
    ValueError
        With ``refuse``, when the rows it can draw are fewer than ``required``, the minimum
        ``iter()`` waits for.  A subset is not refused (its entries may be read with
        ``to_pandas`` only); its ``iter()`` raises :class:`~dask_reservoir.errors.JobError` instead.

    Examples
    --------
    >>> from dask_reservoir import WeightedSampler
    >>> drawable, never = drawable_rows(WeightedSampler([0.0, 1.0, 1.0]), 3, required=2, minimum=2, refuse=True)
    >>> drawable.tolist(), never
    ([False, True, True], 1)
    """
    never_drawn = getattr(sampler, "never_drawn", None)
    never = np.unique(np.asarray(never_drawn(n), dtype=np.int64)) if callable(never_drawn) else ()
    if not len(never):
        return None, 0
    drawable = np.ones(n, dtype=bool)
    drawable[never] = False
    count = int(drawable.sum())
    if refuse and count < required:
        column = getattr(sampler, "column", None)
        which = (
            "the others it never draws"
            if not isinstance(sampler, WeightedSampler)
            else (f"those of non-zero weight in column {column!r}" if column else "those of non-zero weight")
        )
        raise ValueError(
            f"source_sampler={sampler!r} can draw only {count} of the {n} source rows ({which}), "
            f"fewer than the minimum {required} that iter() waits for "
            f"(min_reservoir_samples={minimum}): the minimum could never be "
            "reached; give more rows a weight, or a smaller min_reservoir_samples"
        )
    return drawable, n - count


def rank_epoch_rows(options: ReservoirOptions, n_source: int) -> int:
    """With ranks: the entries every rank's epoch serves."""
    return rows_per_rank_epoch(
        min_reservoir_samples=options.min_reservoir_samples,
        maximum_number_of_samples_per_epoch=options.maximum_number_of_samples_per_epoch,
        n_source=n_source,
        capacity=options.max_reservoir_samples,
    )


def required_entries(options: ReservoirOptions, n_source: int) -> int:
    """Entries ``iter()`` waits for: the minimum (capped by the source), or with ranks a rank's epoch."""
    required = min(options.min_reservoir_samples, n_source)
    if options.world_size > 1:
        return max(required, rank_epoch_rows(options, n_source))
    return required

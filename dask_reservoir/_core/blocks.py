"""Column blocks: the rows of a vectorized job as columns, and what refers to them.

Plain data, no dask.  :mod:`~dask_reservoir._worker.chunks` builds a :class:`ColumnBlock`
on a worker per chunk (one array per column, rows grouped by source UID) and
returns it in a :class:`ChunkLoaded`; the ledger gives each UID an entry whose
rows are :class:`BlockRow` references into the block; the store writes runs of
them with one assignment per column; the loader process ships only the rows it
ships (:func:`compact`).  Pandas extension dtypes travel beside the arrays and
are applied again to tables of the rows (:meth:`ColumnBlock.restore`,
:func:`merge_dtypes`).  :func:`gc_paused` keeps the cyclic garbage collector
out of the creation of one entry per UID.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from dask_reservoir._core.records import Completed, RowFailed, RowLoaded

__all__ = [
    "BlockRow",
    "ChunkLoaded",
    "ColumnBlock",
    "CompletedBlock",
    "as_rows",
    "compact",
    "entry_count",
    "gc_paused",
    "merge_dtypes",
]

_GC_LOCK = threading.Lock()
_GC_HOLDERS = [0]  # threads inside gc_paused() that found the collector on


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk's entries are created.

    Creating one object per UID for a chunk of 100,000 rows triggers full
    collections that scan every live object: measured, they doubled the client's
    time per row.  Nothing is freed later than it would be; the collector is
    turned back on when the last thread that paused it leaves, and left off when
    it was off before.

    Examples
    --------
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    with _GC_LOCK:
        paused = gc.isenabled() or _GC_HOLDERS[0] > 0
        if paused:
            _GC_HOLDERS[0] += 1
            gc.disable()
    try:
        yield
    finally:
        if paused:
            with _GC_LOCK:
                _GC_HOLDERS[0] -= 1
                if _GC_HOLDERS[0] == 0:
                    gc.enable()


class ColumnBlock:
    """Produced rows as columns: ``columns[name][i]`` is column ``name`` of row ``i``.

    Parameters
    ----------
    columns : dict of str to numpy.ndarray
        Equal-length arrays (their first axis is the row).
    dtypes : dict of str to pandas dtype, optional
        The pandas dtype of columns that numpy cannot hold (see :meth:`restore`).
    python : frozenset of str, optional
        Columns whose values were Python ``bool``/``int``/``float``/``complex`` scalars
        (rows of a row function packed on the worker): read back as such, and stored
        in a table column that reads them back as such.

    Examples
    --------
    >>> block = ColumnBlock({"x": np.array([1.5, 2.5]), "uid": np.array([7, 8])}, python=frozenset({"uid"}))
    >>> len(block), block.row(1)
    (2, {'x': np.float64(2.5), 'uid': 8})
    >>> block.take(np.array([1])).columns["uid"].tolist()
    [8]
    """

    __slots__ = ("columns", "dtypes", "python")

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        dtypes: dict[str, Any] | None = None,
        python: frozenset[str] = frozenset(),
    ) -> None:
        self.columns = columns
        self.dtypes = dtypes or {}
        self.python = python

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (ColumnBlock, (self.columns, self.dtypes, self.python))

    def nbytes(self) -> int:
        """Bytes of the column arrays (object columns count their pointers)."""
        return sum(v.nbytes for v in self.columns.values())

    def row(self, index: int) -> dict[str, Any]:
        """Row ``index`` as a dict (numpy scalars, arrays or objects; Python scalars where they were)."""
        python = self.python
        return {
            name: values[index].item() if name in python else values[index]
            for name, values in self.columns.items()
        }

    def take(self, indices: np.ndarray) -> ColumnBlock:
        """A new block of rows ``indices``."""
        return ColumnBlock({k: v[indices] for k, v in self.columns.items()}, self.dtypes, self.python)

    @staticmethod
    def restore(frame: pd.DataFrame, dtypes: dict[str, Any]) -> pd.DataFrame:
        """Give ``frame``'s columns their pandas ``dtypes`` back (in place; returns it).

        A categorical gains the values it does not list (no value becomes missing);
        a column that cannot take its dtype (another chunk returned other values) is
        left as it is.
        """
        for name, recorded in dtypes.items():
            if name not in frame.columns or recorded is None:
                continue
            column, dtype = frame[name], recorded
            try:
                if isinstance(dtype, pd.DatetimeTZDtype):
                    frame[name] = pd.to_datetime(column).dt.tz_localize("UTC").dt.tz_convert(dtype.tz)
                    continue
                if isinstance(dtype, pd.CategoricalDtype):
                    known = column.isin(dtype.categories) | column.isna()
                    if not known.all():
                        extra = pd.unique(column[~known].to_numpy())
                        dtype = pd.CategoricalDtype([*dtype.categories, *extra], ordered=dtype.ordered)
                frame[name] = column.astype(dtype)
            except (TypeError, ValueError):
                continue
        return frame


class BlockRow(NamedTuple):
    """One produced row kept in a :class:`ColumnBlock` (what an entry holds instead of a dict).

    Examples
    --------
    >>> BlockRow(ColumnBlock({"x": np.array([3, 4])}), 1).as_dict()
    {'x': np.int64(4)}
    """

    block: ColumnBlock
    at: int

    def as_dict(self) -> dict[str, Any]:
        """The row as a dict."""
        return self.block.row(self.at)


class ChunkLoaded(NamedTuple):
    """What a vectorized task returns when the chunk loaded.

    ``uids`` are the chunk's source UIDs in order (as read on the worker);
    ``counts[i]`` rows of ``block`` belong to ``uids[i]``, the rows of each UID
    following those of the UIDs before it.
    """

    uids: list[Hashable]
    counts: np.ndarray
    block: ColumnBlock
    seconds: float
    row_seconds: np.ndarray | None = None
    """Running time per UID (rows of a row function packed on the worker); None: an equal share each."""

    def seconds_per_uid(self) -> np.ndarray:
        """Running time of each UID: its own when measured, else an equal share of the chunk's.

        Examples
        --------
        >>> chunk = ChunkLoaded(["a", "b"], np.array([1, 1]), ColumnBlock({"x": np.arange(2)}), 3.0)
        >>> chunk.seconds_per_uid().tolist()
        [1.5, 1.5]
        """
        if self.row_seconds is not None:
            return self.row_seconds
        return np.full(len(self.uids), self.seconds / max(1, len(self.uids)))


@dataclass(slots=True, eq=False)
class CompletedBlock:
    """The finished rows of one task, one produced row each in a column block, waiting together.

    What the ledger keeps of a task whose every source row loaded into one row of a
    :class:`ColumnBlock` (a vectorized job, or a row function's rows packed on the
    worker): arrays and the block, not a :class:`~dask_reservoir._core.records.Completed`
    per row.  The store takes it with one ``put_block``.

    Examples
    --------
    >>> block = ColumnBlock({"x": np.array([10, 11, 12])})
    >>> done = CompletedBlock(["a", "b", "c"], np.array([4, 0, 9]), block, np.arange(3), np.full(3, 0.5), 7.0)
    >>> head, tail = done.split(2)
    >>> len(head), tail.uids, tail.positions.tolist()
    (2, ['c'], [9])
    >>> [(c.uid, c.position, c.rows[0].as_dict(), c.loaded_at) for c in tail.items()]
    [('c', 9, {'x': np.int64(12)}, 7.0)]
    """

    uids: list[Hashable]
    positions: np.ndarray
    block: ColumnBlock
    rows: np.ndarray
    """The row of ``block`` of each UID."""
    load_seconds: np.ndarray
    loaded_at: float
    """``time.monotonic()`` when the task's result was received."""

    def __len__(self) -> int:
        return len(self.uids)

    def split(self, count: int) -> tuple[CompletedBlock, CompletedBlock]:
        """The first ``count`` rows, and the others."""
        return (
            CompletedBlock(
                self.uids[:count],
                self.positions[:count],
                self.block,
                self.rows[:count],
                self.load_seconds[:count],
                self.loaded_at,
            ),
            CompletedBlock(
                self.uids[count:],
                self.positions[count:],
                self.block,
                self.rows[count:],
                self.load_seconds[count:],
                self.loaded_at,
            ),
        )

    def items(self) -> list[Completed]:
        """One :class:`~dask_reservoir._core.records.Completed` per row (for the paths that need them)."""
        row = tuple.__new__
        block = self.block
        return [
            Completed(uid, position, (row(BlockRow, (block, at)),), seconds, self.loaded_at)
            for uid, position, at, seconds in zip(
                self.uids,
                self.positions.tolist(),
                self.rows.tolist(),
                self.load_seconds.tolist(),
                strict=True,
            )
        ]


def entry_count(items: Sequence[Any]) -> int:
    """Entries in a list of finished rows (:class:`CompletedBlock` counting its rows).

    Examples
    --------
    >>> block = CompletedBlock(["a", "b"], np.arange(2), ColumnBlock({}), np.arange(2), np.zeros(2), 0.0)
    >>> entry_count([block, Completed("c", 2, (), 0.0, 0.0)])
    3
    """
    return sum(len(item) if type(item) is CompletedBlock else 1 for item in items)


def merge_dtypes(known: dict[str, Any], new: dict[str, Any]) -> None:
    """Record the pandas dtypes of a new block in ``known`` (in place).

    Categoricals of different chunks merge their categories (the first chunk's
    first); a column given two other dtypes is not restored (None).

    Examples
    --------
    >>> known = {}
    >>> merge_dtypes(known, {"c": pd.CategoricalDtype(["low"])})
    >>> merge_dtypes(known, {"c": pd.CategoricalDtype(["high", "low"])})
    >>> list(known["c"].categories)
    ['low', 'high']
    """
    for name, dtype in new.items():
        old = known.get(name, dtype)
        if name not in known or old == dtype:
            known[name] = dtype
        elif isinstance(old, pd.CategoricalDtype) and isinstance(dtype, pd.CategoricalDtype):
            extra = [c for c in dtype.categories if c not in set(old.categories)]
            known[name] = pd.CategoricalDtype([*old.categories, *extra], ordered=old.ordered)
        else:
            known[name] = None


def compact(items: list[Any]) -> list[Any]:
    """Point the rows of ``items`` (finished entries) at blocks holding only their rows.

    The loader process ships a few hundred entries at a time: each shipment must
    carry the rows it ships, not every block they came from in full.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> block = ColumnBlock({"x": np.arange(10)})
    >>> items = [SimpleNamespace(rows=(BlockRow(block, 7),))]
    >>> [len(r.block) for i in compact(items) for r in i.rows], items[0].rows[0].as_dict()
    ([1], {'x': np.int64(7)})
    """
    wanted: dict[int, tuple[ColumnBlock, list[int]]] = {}
    for item in items:
        for row in item.rows:
            if type(row) is BlockRow:
                wanted.setdefault(id(row.block), (row.block, []))[1].append(row.at)
    moved: dict[int, tuple[ColumnBlock, dict[int, int]]] = {}
    for key, (block, ats) in wanted.items():
        if len(ats) < len(block):
            moved[key] = (block.take(np.asarray(ats, dtype=np.intp)), {at: k for k, at in enumerate(ats)})
    if moved:
        for item in items:
            if any(type(r) is BlockRow and id(r.block) in moved for r in item.rows):
                item.rows = tuple(
                    BlockRow(moved[id(r.block)][0], moved[id(r.block)][1][r.at])
                    if type(r) is BlockRow and id(r.block) in moved
                    else r
                    for r in item.rows
                )
    return items


def as_rows(outcome: ChunkLoaded | list[RowFailed]) -> list[Any]:
    """A chunk's outcome as one :class:`~dask_reservoir._core.records.RowLoaded` or ``RowFailed`` per UID."""
    if not isinstance(outcome, ChunkLoaded):
        return outcome
    out: list[Any] = []
    start = 0
    seconds = outcome.seconds_per_uid().tolist()
    for uid, count, took in zip(outcome.uids, outcome.counts.tolist(), seconds, strict=True):
        out.append(RowLoaded(uid, [outcome.block.row(i) for i in range(start, start + count)], took))
        start += count
    return out

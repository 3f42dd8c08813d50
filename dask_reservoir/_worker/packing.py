"""Rows of a row function packed into column blocks on the worker, for the client to unpickle cheaply.

Runs on the workers.  A task of ``rows_per_job`` rows of a row function returns one
outcome per source row; when every row loaded into exactly one row and each
column holds values of one kind, :func:`pack` turns them into a
:class:`~dask_reservoir._core.blocks.ChunkLoaded`: one array per column and the
running time of each row.  The client then unpickles a few arrays per task instead
of a dict per row, and the store writes the rows with one assignment per column.

Only values that the store would keep in its columnar table, and read back
unchanged, are packed:

- numpy arrays (of ``ndim >= 1``) of one dtype and shape, not of objects, in native byte order;
- numpy scalars of one dtype (not ``str_``, ``bytes_`` or ``void``);
- Python ``bool``, ``int`` (in the int64 range), ``float`` or ``complex`` of one type,
  read back as Python scalars;
- ``str``.

Anything else (a failed row, an empty or multi-row result, rows with other columns,
a column mixing kinds) leaves the outcomes as they are: the client handles them row
by row, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dask_reservoir._core.blocks import ChunkLoaded, ColumnBlock
from dask_reservoir._core.records import Outcome, RowLoaded

__all__ = ["pack", "pack_column"]

_PYTHON_SCALARS: dict[type, np.dtype[Any]] = {
    bool: np.dtype(np.bool_),
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
}
_NOT_PACKED = (np.str_, np.bytes_, np.void, np.object_)


PACKED_ARRAY_KINDS = "biufcmM"
"""numpy kinds of the arrays that pack: booleans, numbers, dates and durations."""


def pack_column(values: list[Any]) -> tuple[np.ndarray, bool] | None:
    """One column's values as an array, and whether they were Python scalars; None: not packable.

    Examples
    --------
    >>> pack_column([1, 2])[0].dtype, pack_column([1, 2])[1]
    (dtype('int64'), True)
    >>> pack_column([np.zeros(2, np.float32)] * 3)[0].shape
    (3, 2)
    >>> pack_column(["a", "b"])[0].dtype
    dtype('O')
    >>> pack_column([1, 2.5]) is None, pack_column([2**70, 1]) is None, pack_column([None]) is None
    (True, True, True)
    """
    first = values[0]
    kind = type(first)
    if any(type(v) is not kind for v in values):
        return None
    if kind is np.ndarray:
        dtype, shape = first.dtype, first.shape
        if (
            dtype.kind
            not in PACKED_ARRAY_KINDS  # text and records stay rows: the store keeps them as objects
            or not dtype.isnative  # numpy.stack would make it native: the rows would change dtype
            or not shape
            or any(v.dtype != dtype or v.shape != shape for v in values)
        ):
            return None
        return np.stack(values), False
    if kind is str:
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column, False
    python = _PYTHON_SCALARS.get(kind)
    if python is not None:
        try:
            column = np.array(values, dtype=python)
        except OverflowError:  # an int outside the int64 range: kept as an object, row by row
            return None
        return column, True
    if isinstance(first, np.generic) and not isinstance(first, _NOT_PACKED):
        dtype = first.dtype
        if any(v.dtype != dtype for v in values):  # e.g. datetime64 of other units
            return None
        return np.array(values, dtype=dtype), False
    return None


def pack(outcomes: Sequence[Outcome]) -> ChunkLoaded | None:
    """The outcomes of a task as one column block, or None when they do not pack (see the module).

    Examples
    --------
    >>> out = [RowLoaded("a", [{"x": 1.5, "uid": "a"}], 0.25), RowLoaded("b", [{"x": 2.5, "uid": "b"}], 0.5)]
    >>> chunk = pack(out)
    >>> chunk.uids, chunk.counts.tolist(), chunk.block.columns["x"].tolist(), chunk.row_seconds.tolist()
    (['a', 'b'], [1, 1], [1.5, 2.5], [0.25, 0.5])
    >>> chunk.block.row(1)
    {'x': 2.5, 'uid': 'b'}
    >>> pack([RowLoaded("a", [], 0.1), RowLoaded("b", [{"x": 1}], 0.1)]) is None  # an empty result
    True
    """
    if len(outcomes) < 2 or any(type(o) is not RowLoaded or len(o.rows) != 1 for o in outcomes):
        return None
    rows = [o.rows[0] for o in outcomes]  # type: ignore[union-attr]
    names = tuple(rows[0])
    if any(tuple(row) != names for row in rows):
        return None
    columns: dict[str, np.ndarray] = {}
    python: set[str] = set()
    for name in names:
        packed = pack_column([row[name] for row in rows])
        if packed is None:
            return None
        columns[name], is_python = packed
        if is_python:
            python.add(name)
    seconds = np.array([o.seconds for o in outcomes], dtype=np.float64)
    return ChunkLoaded(
        [o.uid for o in outcomes],
        np.ones(len(outcomes), np.int64),
        ColumnBlock(columns, python=frozenset(python)),
        float(seconds.sum()),
        seconds,
    )

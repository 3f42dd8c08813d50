"""Collate rows into a batch: ``list[dict] -> dict[str, numpy.ndarray]``.

Pure code with no threads and no dask.  Each column is stacked along a new
axis 0: scalars give a 1-D array, arrays of shape ``s`` give ``(n, *s)``,
strings give a numpy ``str`` array, anything else an ``object`` array.

A batch never shares memory with the rows it was made from: arrays are stacked
into new arrays and mutable objects of ``object`` columns are deep copies, so
writing into a batch cannot change what the reservoir stores.
:func:`private_rows` gives a ``collate_fn`` rows it may modify in the same way.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import fractions
import numbers
import uuid
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

__all__ = ["collate_rows", "dtype_family", "is_immutable", "private_rows", "str_array"]

_ATOMS = frozenset(
    {
        str,
        bytes,
        int,
        float,
        complex,
        bool,
        type(None),
        type(Ellipsis),
        range,
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        decimal.Decimal,
        fractions.Fraction,
        uuid.UUID,
    }
)

_MAX_UIDS_IN_MESSAGE = 5


def collate_rows(rows: Sequence[dict[str, Any]], *, uid_column: str = "sample_uid") -> dict[str, np.ndarray]:
    """Stack a list of rows, column by column, into a dict of numpy arrays.

    Parameters
    ----------
    rows : sequence of dict
        Rows with the same ``str`` keys; the values of one column must all be
        arrays of one shape, or all scalars/strings.
    uid_column : str, keyword-only
        Column whose values name the rows in error messages (row positions are
        used when it is absent).

    Returns
    -------
    dict of str to numpy.ndarray
        One array per column, of length ``len(rows)`` along axis 0.  New arrays:
        nothing in the batch shares memory with ``rows`` (mutable values of
        ``object`` columns are deep copies).

    Raises
    ------
    ValueError
        When ``rows`` is empty, rows have different columns, or the arrays of a
        column differ in shape or kind of values (text and numbers, see
        :func:`dtype_family`), or a column mixes arrays and scalars.  The
        message names the column and the UIDs.
    TypeError
        When a row is not a dict or a column name is not a ``str``.

    Examples
    --------
    >>> import numpy as np
    >>> batch = collate_rows([
    ...     {"sample_uid": 0, "image": np.zeros((2, 2)), "label": 1, "name": "a"},
    ...     {"sample_uid": 1, "image": np.ones((2, 2)), "label": 0, "name": "b"},
    ... ])
    >>> batch["image"].shape, batch["label"].tolist(), batch["name"].tolist()
    ((2, 2, 2), [1, 0], ['a', 'b'])
    >>> collate_rows([{"sample_uid": 0, "x": np.zeros(2)}, {"sample_uid": 1, "x": np.zeros(3)}])
    Traceback (most recent call last):
    ...
    ValueError: column 'x': arrays must have the same shape to be stacked, got shapes (2,) for UIDs [0] and (3,) for UIDs [1]
    """
    if not rows:
        raise ValueError("rows must hold at least one row, got an empty sequence")
    first = rows[0]
    if not isinstance(first, dict):
        raise TypeError(f"each row must be a dict, got {type(first).__name__} at position 0")
    columns = list(first)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"each row must be a dict, got {type(row).__name__} at position {i}")
        if len(row) != len(columns) or any(c not in row for c in columns):
            _raise_column_mismatch(rows, uid_column)
    batch: dict[str, np.ndarray] = {}
    for column in columns:
        if not isinstance(column, str):
            raise TypeError(f"column names must be str, got {type(column).__name__}: {column!r}")
        batch[column] = _stack_column(column, [row[column] for row in rows], rows, uid_column)
    return batch


def dtype_family(dtype: np.dtype[Any]) -> str:
    """The kind of values a dtype holds, as far as stacking them with others goes.

    numpy stacks numbers (bool, int, float, complex) together without changing them, not
    text, bytes, datetimes, timedeltas or other objects with numbers.  Stacking a text array with a number array makes every number text (``"1.0"``), so the
    collate refuses such a column and the store such a row, rather than serve changed values.

    Examples
    --------
    >>> [dtype_family(np.dtype(t)) for t in ("int8", "float32", "<U3", "datetime64[s]")]
    ['number', 'number', 'str', 'datetime']
    """
    return _FAMILIES.get(dtype.kind, "object")


_FAMILIES = dict.fromkeys("biufc", "number") | {"U": "str", "S": "bytes", "M": "datetime", "m": "timedelta"}


def is_immutable(value: object) -> bool:
    """Whether nothing can change ``value`` in place (so it may be shared, not copied).

    Examples
    --------
    >>> is_immutable("a"), is_immutable((1, np.float32(2))), is_immutable([1]), is_immutable((1, [2]))
    (True, True, False, False)
    """
    kind = type(value)
    if kind in _ATOMS:
        return True
    if isinstance(value, np.generic):
        return not isinstance(value, (np.void, np.object_))
    if kind is tuple or kind is frozenset:
        return all(is_immutable(v) for v in value)  # type: ignore[attr-defined]
    return False


def private_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``rows`` the caller may modify without changing the originals.

    New dicts; arrays are copied (items of ``object`` arrays deep-copied) and
    mutable objects deep-copied; immutable values (numbers, str, numpy
    scalars, datetimes, tuples of those) are shared.

    Examples
    --------
    >>> stored = [{"x": np.zeros(2), "tags": ["a"], "name": "n"}]
    >>> mine = private_rows(stored)
    >>> mine[0]["x"] += 1; mine[0]["tags"].append("b")
    >>> stored
    [{'x': array([0., 0.]), 'tags': ['a'], 'name': 'n'}]
    """
    return [{key: _private(value) for key, value in row.items()} for row in rows]


def _private(value: Any) -> Any:
    if is_immutable(value):
        return value
    if type(value) is np.ndarray and value.dtype != object:
        return value.copy()
    return copy.deepcopy(value)


def str_array(values: Sequence[str]) -> np.ndarray:
    r"""A numpy ``str`` array of ``values``; an ``object`` array when one ends with NUL.

    numpy's fixed-width unicode drops trailing NUL characters, so such strings
    would not come back unchanged.

    Examples
    --------
    >>> str_array(["a", "bc"]).dtype.kind, str_array(["a\x00"]).dtype.kind
    ('U', 'O')
    """
    if any(v.endswith("\x00") for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out
    return np.array(values, dtype=str)


def _uid_of(rows: Sequence[dict[str, Any]], i: int, uid_column: str) -> Hashable:
    row = rows[i]
    return row.get(uid_column, f"<row {i}>") if isinstance(row, dict) else f"<row {i}>"


def _uids(rows: Sequence[dict[str, Any]], positions: Sequence[int], uid_column: str) -> str:
    uids = [_uid_of(rows, i, uid_column) for i in positions[:_MAX_UIDS_IN_MESSAGE]]
    more = (
        "" if len(positions) <= _MAX_UIDS_IN_MESSAGE else f" and {len(positions) - _MAX_UIDS_IN_MESSAGE} more"
    )
    return f"{uids!r}{more}"


def _raise_column_mismatch(rows: Sequence[dict[str, Any]], uid_column: str) -> None:
    all_columns: dict[str, None] = {}
    for row in rows:
        all_columns.update(dict.fromkeys(row))
    for column in all_columns:
        missing = [i for i, row in enumerate(rows) if column not in row]
        if missing:
            present = [i for i, row in enumerate(rows) if column in row]
            raise ValueError(
                f"column {column!r}: every row of a batch must have the same columns, but "
                f"UIDs {_uids(rows, present, uid_column)} have it and UIDs "
                f"{_uids(rows, missing, uid_column)} do not"
            )


def _stack_column(
    column: str, values: list[Any], rows: Sequence[dict[str, Any]], uid_column: str
) -> np.ndarray:
    first = values[0]
    if isinstance(first, np.ndarray):
        if all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
            dtype = first.dtype  # families only when dtypes differ: the usual batch pays one compare per row
            if any(v.dtype != dtype for v in values) and len({dtype_family(v.dtype) for v in values}) > 1:
                _raise_kind_mismatch(column, values, rows, uid_column)
            stacked = np.stack(values)
            return copy.deepcopy(stacked) if stacked.dtype == object else stacked
        _raise_shape_mismatch(column, values, rows, uid_column)
    if any(isinstance(v, np.ndarray) for v in values):
        _raise_shape_mismatch(column, values, rows, uid_column)
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        return str_array(values)
    if all(isinstance(v, (numbers.Number, np.generic)) and not isinstance(v, (str, bytes)) for v in values):
        return np.asarray(values)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v if is_immutable(v) else copy.deepcopy(v)
    return out


def _raise_kind_mismatch(
    column: str, values: list[np.ndarray], rows: Sequence[dict[str, Any]], uid_column: str
) -> None:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(dtype_family(v.dtype), []).append(i)
    described = " and ".join(
        f"{k} values for UIDs {_uids(rows, pos, uid_column)}" for k, pos in groups.items()
    )
    raise ValueError(
        f"column {column!r}: arrays must hold one kind of values to be stacked (numpy would turn "
        f"them all into one, e.g. numbers into text), got {described}"
    )


def _raise_shape_mismatch(
    column: str, values: list[Any], rows: Sequence[dict[str, Any]], uid_column: str
) -> None:
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        key = str(v.shape) if isinstance(v, np.ndarray) else f"() ({type(v).__name__} scalar)"
        groups.setdefault(key, []).append(i)
    described = " and ".join(f"{k} for UIDs {_uids(rows, pos, uid_column)}" for k, pos in groups.items())
    if any(not isinstance(v, np.ndarray) for v in values):
        rule = "values must be all arrays of one shape or all scalars"
    else:
        rule = "arrays must have the same shape to be stacked"
    raise ValueError(f"column {column!r}: {rule}, got shapes {described}")

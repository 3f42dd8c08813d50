"""The columnar slot table: fixed-shape single-row entries kept in column arrays.

Pure code with no threads and no dask.

:class:`SlotTable` keeps single-row entries whose columns have fixed shapes and
dtypes in column arrays allocated once, at the slot pool's size (see
:class:`~dask_reservoir._core.store.slots.SlotPool`), with ``numpy.empty`` (pages never
written cost no resident memory).  Serving a batch from it is one ``numpy.take``
per column instead of stacking per-sample arrays.  A slot is only written while
free, so what a live snapshot reads never changes.  :class:`Column` says how one
column is stored; :class:`StoreError` names a value that cannot be.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from dask_reservoir._core.collate import is_immutable, str_array

__all__ = ["Column", "SlotTable", "StoreError", "describe_value"]

_ARRAY, _SCALAR, _OBJECT = "array", "scalar", "object"
_PYTHON_SCALARS: dict[type, np.dtype[Any]] = {
    bool: np.dtype(np.bool_),
    int: np.dtype(np.int64),
    float: np.dtype(np.float64),
    complex: np.dtype(np.complex128),
}


class StoreError(ValueError):
    """A row the store cannot keep; names the UID, the column and its dtype when known.

    Attributes
    ----------
    uid : Hashable or None
        UID of the entry being put.
    column : str or None
        The column that could not be stored, if one is to blame.
    dtype : str or None
        What that column's value was (dtype and shape, or type).
    """

    def __init__(
        self, message: str, *, uid: object = None, column: str | None = None, dtype: str | None = None
    ) -> None:
        super().__init__(message)
        self.uid = uid
        self.column = column
        self.dtype = dtype


def describe_value(value: object) -> str:
    """What ``value`` is, as a batch sees it: dtype and shape, or type.

    Examples
    --------
    >>> describe_value(np.zeros((2, 3), np.float32)), describe_value(3), describe_value(np.int8(1))
    ('float32 array of shape (2, 3)', 'Python int', 'int8 numpy scalar')
    """
    if isinstance(value, np.ndarray):
        kind = "array" if type(value) is np.ndarray else type(value).__name__
        return f"{value.dtype} {kind} of shape {value.shape}"
    if isinstance(value, np.generic):
        return f"{value.dtype} numpy scalar"
    if type(value) is int and not -(2**63) <= value < 2**63:
        return "Python int outside the int64 range"
    return f"Python {type(value).__name__}"


def _buffer_copy_ok(dtype: np.dtype[Any]) -> bool:
    """Whether arrays of ``dtype`` export a buffer (datetime64/timedelta64 do not)."""
    if dtype.hasobject:
        return False
    try:
        np.empty(1, dtype).data.cast("B")
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class Column:
    """How one column is stored: ``kind`` is "array", "scalar" or "object".

    Examples
    --------
    >>> Column.of(np.zeros(3, "datetime64[s]")).describe()
    'datetime64[s] array of shape (3,)'
    >>> Column.of(2).describe(), Column.of("a").describe()
    ('Python int', 'object')
    """

    kind: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...] = ()
    python: bool = False  # scalars given as Python bool/int/float/complex are read back as such

    @classmethod
    def of(cls, value: object) -> Column | None:
        """The column a first value calls for; None when no column can keep it unchanged."""
        if isinstance(value, np.ndarray):
            if type(value) is not np.ndarray or value.dtype == object:
                return None  # subclasses lose their extras, object arrays share their items
            return cls(_ARRAY, value.dtype, value.shape)
        if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_, np.void, np.object_)):
            return cls(_SCALAR, value.dtype)
        python = _PYTHON_SCALARS.get(type(value))
        if python is not None and not (isinstance(value, int) and not -(2**63) <= value < 2**63):
            return cls(_SCALAR, python, python=True)
        return cls(_OBJECT, np.dtype(object))

    def fits(self, value: object) -> bool:
        """Whether ``value`` can be stored here and read back unchanged."""
        if self.kind == _ARRAY:  # the common case, without building a Column
            return type(value) is np.ndarray and value.dtype == self.dtype and value.shape == self.shape
        return Column.of(value) == self

    def describe(self) -> str:
        """The column's dtype and shape, in the words of :func:`describe_value`."""
        if self.kind == _ARRAY:
            return f"{self.dtype} array of shape {self.shape}"
        if self.kind == _SCALAR:
            python = next(t for t, d in _PYTHON_SCALARS.items() if d == self.dtype) if self.python else None
            return f"Python {python.__name__}" if python else f"{self.dtype} numpy scalar"
        return "object"


def _batch_signature(value: object) -> tuple[str, tuple[int, ...]]:
    """Dtype and per-row shape a value gives a collated batch (object for non-numeric values)."""
    column = Column.of(value)
    if column is None:
        return describe_value(value), ()
    return str(column.dtype), column.shape


class SlotTable:
    """Column arrays of ``size`` slots, allocated once, holding one row per slot.

    Parameters
    ----------
    columns : dict of str to Column
        The schema; rows must have exactly these columns.
    size : int
        Number of slots (the :class:`SlotPool` size).

    Examples
    --------
    >>> row = {"image": np.ones((2, 2), np.float32), "label": 3, "name": "a"}
    >>> table = SlotTable.infer(row, size=4)
    >>> table.write(0, row)
    >>> table.write(1, {"image": np.zeros((2, 2), np.float32), "label": 5, "name": "b"})
    >>> batch = table.gather(np.array([1, 0]))
    >>> batch["image"].shape, batch["label"].tolist(), batch["name"].tolist()
    ((2, 2, 2), [5, 3], ['b', 'a'])
    >>> table.nbytes()  # two slots written, 16 + 8 + 8 bytes each
    64
    """

    def __init__(self, columns: dict[str, Column], size: int) -> None:
        self.columns = columns
        self.size = size
        self.arrays: dict[str, np.ndarray] = {
            name: np.empty((size, *c.shape), dtype=c.dtype) for name, c in columns.items()
        }
        self._buffer_copy = {name: _buffer_copy_ok(c.dtype) for name, c in columns.items()}
        objects = [name for name, c in columns.items() if c.kind == _OBJECT]
        self._is_str = {name: np.zeros(size, bool) for name in objects}
        self._mutable = {name: np.zeros(size, bool) for name in objects}
        self._written = np.zeros(size, bool)
        self.written = 0  # distinct slots ever written
        self.row_nbytes = sum(
            a.itemsize * int(np.prod(c.shape))
            for a, c in zip(self.arrays.values(), columns.values(), strict=True)
        )

    @classmethod
    def infer(cls, row: dict[str, Any], size: int) -> SlotTable | None:
        """A table for rows like ``row``, or None when a column name is not a str or a value cannot be slotted."""
        if not row or not all(isinstance(k, str) for k in row):
            return None
        columns = {k: Column.of(v) for k, v in row.items()}
        if any(c is None for c in columns.values()):
            return None
        return cls({k: c for k, c in columns.items() if c is not None}, size)

    def fits(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` has exactly the table's columns, each value fitting its column."""
        columns = self.columns
        if len(row) != len(columns):
            return False
        for key, value in row.items():
            column = columns.get(key)
            if column is None or not column.fits(value):
                return False
        return True

    def changes(self, row: dict[str, Any]) -> list[tuple[str, str, str]]:
        """``(column, old, new)`` for each shared column whose batch dtype or shape ``row`` changes.

        Examples
        --------
        >>> table = SlotTable.infer({"x": np.zeros(2, np.float32), "y": 1}, size=1)
        >>> table.changes({"x": np.zeros(2, np.float64), "y": np.int64(1)})  # int64 either way
        [('x', 'float32 array of shape (2,)', 'float64 array of shape (2,)')]
        """
        found = []
        for key, value in row.items():
            column = self.columns.get(key)
            if column is None or column.fits(value):
                continue
            if _batch_signature(value) != (str(column.dtype), column.shape):
                found.append((key, column.describe(), describe_value(value)))
        return found

    def write(self, slot: int, row: dict[str, Any]) -> None:
        """Copy ``row`` (which must :meth:`fits`) into ``slot``.

        Raises
        ------
        StoreError
            Naming the column and its value's dtype when a copy fails; the slot is
            then left as if never written.
        """
        arrays = self.arrays
        for key, value in row.items():
            try:
                _copy_value(arrays[key], slot, value, self._buffer_copy[key])
            except Exception as exc:
                self.forget(np.array([slot]))
                what = describe_value(value)
                raise StoreError(
                    f"cannot store column {key!r} ({what}): {type(exc).__name__}: {exc}",
                    column=key,
                    dtype=what,
                ) from exc
        for key in self._is_str:
            value = row[key]
            self._is_str[key][slot] = type(value) is str
            self._mutable[key][slot] = not is_immutable(value)
        if not self._written[slot]:
            self._written[slot] = True
            self.written += 1

    def write_many(self, slots: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray) -> None:
        """Copy rows ``rows`` of ``columns`` (a block's arrays, matching the schema) into ``slots``.

        One assignment per column, for entries of a vectorized job (see
        :mod:`~dask_reservoir._worker.chunks`); the caller checked :meth:`block_columns`.
        """
        for name, array in self.arrays.items():
            array[slots] = columns[name][rows]
        for key in self._is_str:
            values = self.arrays[key][slots].tolist()
            self._is_str[key][slots] = [type(v) is str for v in values]
            self._mutable[key][slots] = [not is_immutable(v) for v in values]
        self.written += int(np.count_nonzero(~self._written[slots]))
        self._written[slots] = True

    @staticmethod
    def block_columns(
        columns: dict[str, np.ndarray], python: frozenset[str] = frozenset()
    ) -> dict[str, Column] | None:
        """The schema a table needs for one row of each of ``columns`` (None: not slottable).

        ``python``: the scalar columns whose values were Python scalars (read back as such).

        Examples
        --------
        >>> schema = SlotTable.block_columns({"x": np.zeros((4, 2), np.float32), "n": np.array(["a"] * 4)})
        >>> [c.describe() for c in schema.values()]
        ['float32 array of shape (2,)', 'object']
        >>> SlotTable.block_columns({"words": np.array([["a", "b"]] * 4)}) is None  # a str array per row
        True
        """
        if not columns or not all(isinstance(k, str) for k in columns):
            return None
        schema = {}
        for name, values in columns.items():
            if values.dtype.kind in "OUSV":
                if values.ndim != 1:  # an array of text or records per row: kept row by row
                    return None
                schema[name] = Column(_OBJECT, np.dtype(object))
            elif values.ndim == 1:
                schema[name] = Column(_SCALAR, values.dtype, python=name in python)
            else:
                schema[name] = Column(_ARRAY, values.dtype, values.shape[1:])
        return schema

    @property
    def has_objects(self) -> bool:
        """Whether some column holds Python objects (which :meth:`forget` drops)."""
        return bool(self._is_str)

    def forget(self, slots: np.ndarray) -> None:
        """Drop the references object columns hold in ``slots`` (now free)."""
        for key in self._is_str:
            self.arrays[key][slots] = None

    def read_row(self, slot: int, *, copy: bool = True) -> dict[str, Any]:
        """The row in ``slot``, as produced.

        With ``copy`` (default) the caller may modify it freely: arrays are copies
        and mutable objects deep copies.  Without, arrays are read-only views of
        the table and objects are shared: read them, do not keep them.
        """
        out: dict[str, Any] = {}
        for name, column in self.columns.items():
            array = self.arrays[name]
            if column.kind == _ARRAY:
                value = array[slot, ...]
                if copy:
                    value = value.copy()
                else:
                    value.flags.writeable = False
            else:
                value = array[slot]
                if column.python:
                    value = value.item()
                elif copy and column.kind == _OBJECT and self._mutable[name][slot]:
                    value = _deepcopy(value)
            out[name] = value
        return out

    def nbytes(self) -> int:
        """Bytes of the slots ever written (object columns count their pointers only)."""
        return self.written * self.row_nbytes

    def gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of rows ``slots``: one ``numpy.take`` per column, fresh arrays.

        Object columns holding only ``str`` become ``str`` arrays, as
        :func:`~dask_reservoir._core.collate.collate_rows` makes them; their mutable
        values are deep copies, so a batch never shares anything with the table.
        """
        batch: dict[str, np.ndarray] = {}
        for name, array in self.arrays.items():
            taken = array.take(slots, axis=0, mode="clip")
            if not array.dtype.isnative:  # as numpy.stack in collate_rows does
                taken = taken.astype(array.dtype.newbyteorder("="))
            if name in self._is_str:
                if self._is_str[name].take(slots, mode="clip").all():
                    taken = str_array(taken.tolist())
                else:
                    for i in np.flatnonzero(self._mutable[name].take(slots, mode="clip")).tolist():
                        taken[i] = _deepcopy(taken[i])
            batch[name] = taken
        return batch


def _deepcopy(value: Any) -> Any:
    return copy.deepcopy(value)


def _copy_value(target: np.ndarray, slot: int, value: Any, buffer_copy: bool) -> None:
    """Copy ``value`` into ``target[slot]``."""
    if (
        buffer_copy
        and isinstance(value, np.ndarray)
        and value.ndim
        and value.flags.c_contiguous
        and value.nbytes
    ):
        # a memcpy that keeps the GIL: numpy's copy releases it for large arrays, and
        # getting it back from the client's event loop thread costs far more than 49 KB
        target[slot].data.cast("B")[:] = value.data.cast("B")
    elif target.dtype == object:
        target[slot] = value  # the object itself, never unpacked as a sequence
    else:
        target[slot, ...] = value

"""Columnar slot table: fixed-shape columns of single-row entries in preallocated arrays.

Pure code with no threads and no dask.  Serving a batch from a slot table is
one ``numpy.take`` per column instead of stacking per-sample arrays.  A slot
freed by eviction or replacement is only written again once no live epoch
snapshot can still read it; when none is free, the arrays grow (a snapshot
keeps the arrays it was taken from, so growing never changes what it reads).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .collate import str_array

__all__ = ["Column", "SlotTable"]

_ARRAY, _SCALAR, _OBJECT = "array", "scalar", "object"


@dataclass(frozen=True)
class Column:
    """How one column is stored: ``kind`` is "array", "scalar" or "object"."""

    kind: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...] = ()
    python: bool = False  # scalars given as Python bool/int/float are read back as such

    @classmethod
    def of(cls, value: object) -> Column:
        """The column a first value calls for."""
        if isinstance(value, np.ndarray) and value.dtype != object:
            return cls(_ARRAY, value.dtype, value.shape)
        if isinstance(value, (np.generic, bool, numbers.Integral, numbers.Real)) and not isinstance(
            value, (str, bytes, np.str_, np.bytes_, np.object_)
        ):
            return cls(_SCALAR, np.asarray(value).dtype, python=not isinstance(value, np.generic))
        return cls(_OBJECT, np.dtype(object))

    def fits(self, value: object) -> bool:
        """Whether ``value`` can be stored here and read back unchanged."""
        if self.kind == _ARRAY:
            return isinstance(value, np.ndarray) and value.dtype == self.dtype and value.shape == self.shape
        if self.kind == _SCALAR:
            if isinstance(value, np.generic):
                return not self.python and value.dtype == self.dtype
            if not self.python:
                return False
            if isinstance(value, bool):
                return self.dtype == np.bool_
            if isinstance(value, numbers.Integral):
                return self.dtype == np.int64 and -(2**63) <= int(value) < 2**63
            if isinstance(value, float):
                return self.dtype == np.float64
            return False
        return not isinstance(value, np.ndarray)


class SlotTable:
    """Preallocated column arrays holding one row per slot.

    Parameters
    ----------
    columns : dict of str to Column
        The schema; rows must have exactly these columns.
    capacity : int
        Initial number of slots.

    Examples
    --------
    >>> import numpy as np
    >>> row = {"image": np.ones((2, 2), np.float32), "label": 3, "name": "a"}
    >>> table = SlotTable.infer(row, capacity=4)
    >>> s = table.write(row)
    >>> t = table.write({"image": np.zeros((2, 2), np.float32), "label": 5, "name": "b"})
    >>> batch = table.gather(table.arrays, np.array([t, s]))
    >>> batch["image"].shape, batch["label"].tolist(), batch["name"].tolist()
    ((2, 2, 2), [5, 3], ['b', 'a'])
    """

    def __init__(self, columns: dict[str, Column], capacity: int) -> None:
        self.columns = columns
        self.capacity = 0
        self.arrays: dict[str, np.ndarray] = {}
        self.last_snapshot = np.empty(0, np.int64)  # per slot: last snapshot generation that read it
        self._free: list[int] = []  # reusable at once
        self._pending: list[int] = []  # freed, possibly still read by a live snapshot
        self._grow(capacity)

    @classmethod
    def infer(cls, row: dict[str, Any], capacity: int) -> SlotTable | None:
        """A table for rows like ``row``, or None when a column name is not a str."""
        if not row or not all(isinstance(k, str) for k in row):
            return None
        return cls({k: Column.of(v) for k, v in row.items()}, capacity)

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

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        new_arrays = {}
        for name, column in self.columns.items():
            array = np.empty((capacity, *column.shape), dtype=column.dtype)
            if old:
                array[:old] = self.arrays[name]
            new_arrays[name] = array
        # a snapshot keeps the dict it was taken from, so replace, never mutate
        self.arrays = new_arrays
        self.last_snapshot = np.concatenate([self.last_snapshot, np.full(capacity - old, -1, np.int64)])
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def write(self, row: dict[str, Any], *, oldest_live: int | None = None) -> int:
        """Store ``row`` (which must :meth:`fits`) in a free slot; return the slot.

        ``oldest_live`` is the generation of the oldest snapshot still being read:
        a freed slot last read by that snapshot or a later one is not reused yet.
        """
        slot = self._allocate(oldest_live)
        arrays = self.arrays
        for key, value in row.items():
            target = arrays[key]
            if isinstance(value, np.ndarray) and value.ndim and value.flags.c_contiguous and value.nbytes:
                # a memcpy that keeps the GIL: numpy's copy releases it for large arrays, and
                # getting it back from the client's event loop thread costs far more than 49 KB
                target[slot].data.cast("B")[:] = value.data.cast("B")
            else:
                target[slot] = value
        return slot

    def _allocate(self, oldest_live: int | None) -> int:
        if not self._free and self._pending:
            if oldest_live is None:
                self._free, self._pending = self._pending, []
            else:
                last = self.last_snapshot
                self._free = [s for s in self._pending if last[s] < oldest_live]
                self._pending = [s for s in self._pending if last[s] >= oldest_live]
        if not self._free:
            self._grow(max(self.capacity + 1, self.capacity * 3 // 2))
        return self._free.pop()

    def release(self, slot: int) -> None:
        """Free ``slot``; it is reused once no live snapshot can read it."""
        self._pending.append(slot)

    def mark_read(self, slots: np.ndarray, generation: int) -> None:
        """Record that snapshot ``generation`` reads ``slots``."""
        self.last_snapshot[slots] = generation

    def read_row(self, slot: int, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """A copy of the row in ``slot`` (of ``arrays``, default the current ones), as produced."""
        arrays = self.arrays if arrays is None else arrays
        out: dict[str, Any] = {}
        for name, column in self.columns.items():
            value = arrays[name][slot]
            if column.kind == _ARRAY:
                value = value.copy()
            elif column.python:
                value = value.item()
            out[name] = value
        return out

    def nbytes(self) -> int:
        """Bytes of the column arrays (object columns count their pointers only)."""
        return sum(a.nbytes for a in self.arrays.values())

    @staticmethod
    def gather(arrays: dict[str, np.ndarray], slots: np.ndarray) -> dict[str, np.ndarray]:
        """The batch of rows ``slots``: one ``numpy.take`` per column."""
        batch: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            taken = array.take(slots, axis=0, mode="clip")
            if array.dtype == object:
                taken = _object_column(taken)
            batch[name] = taken
        return batch


def _object_column(values: np.ndarray) -> np.ndarray:
    """As :func:`collate_rows` does: all-str values become a str array."""
    if all(type(v) is str for v in values):
        return str_array(values.tolist())
    return values

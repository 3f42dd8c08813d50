"""What travels to the workers with a task, and how rows are rebuilt there.

:class:`Opaque` hides a big argument from dask's scan for futures; :class:`RowColumns` carries
pandas rows as columns; :func:`partition_records` reads rows of a dask partition on a worker.
Plain values only: the client builds them, the workers unpickle them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Opaque", "RowColumns", "missing_to_none", "none_if_missing", "partition_records", "text_columns"]


class Opaque:
    """A task argument dask must not scan for futures (a list of thousands of row dicts).

    dask walks lists, tuples and dicts of every argument looking for futures,
    which costs microseconds per element; this wrapper is passed as one object.

    Examples
    --------
    >>> Opaque([1, 2]).value
    [1, 2]
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (Opaque, (self.value,))


def none_if_missing(value: Any) -> Any:
    """None for NaN/NA/NaT, the value otherwise (arrays and strings are never missing)."""
    if value is None or isinstance(value, (str, np.ndarray)):
        return value
    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


def missing_to_none(records: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Replace NaN/NA/NaT in string and object columns by None (in place)."""
    for record in records:
        for column in columns:
            if column in record:
                record[column] = none_if_missing(record[column])
    return records


def text_columns(dtypes: pd.Series) -> list[str]:
    """Names of the object and string columns."""
    return [
        str(c)
        for c, t in dtypes.items()
        if pd.api.types.is_object_dtype(t) or pd.api.types.is_string_dtype(t)
    ]


def partition_records(part: pd.DataFrame, offsets: Sequence[int]) -> list[dict[str, Any]]:
    """Rows ``offsets`` of one partition as dicts, missing text as None.

    Runs on a worker for dask sources; the caller checks and sets the UID column.

    Examples
    --------
    >>> import pandas as pd
    >>> part = pd.DataFrame({"path": ["a.nii", None]})
    >>> partition_records(part, [1, 0])
    [{'path': None}, {'path': 'a.nii'}]
    """
    records = part.iloc[list(offsets)].to_dict("records")
    missing_to_none(records, text_columns(part.dtypes))  # type: ignore[arg-type]
    return records  # type: ignore[return-value]


class RowColumns:
    """Rows of a pandas source as columns: what a task carries instead of one dict per row.

    Numeric columns are numpy arrays (pickled as buffers), the others lists of
    Python values; :meth:`records` builds the row dicts on the worker, with the
    same values as ``frame.iloc[positions].to_dict("records")`` (missing text as None).

    Examples
    --------
    >>> RowColumns(["x", "uid"], [np.array([1, 2]), ["a", "b"]]).records()
    [{'x': 1, 'uid': 'a'}, {'x': 2, 'uid': 'b'}]
    """

    __slots__ = ("names", "values")

    def __init__(self, names: list[Any], values: list[np.ndarray | list[Any]]) -> None:
        self.names = names
        self.values = values

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (RowColumns, (self.names, self.values))

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts of Python values (``tolist`` turns numpy scalars into Python ones)."""
        columns = [v.tolist() if isinstance(v, np.ndarray) else v for v in self.values]
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]

"""What an entry weighs: the bytes the store's byte bound (``max_reservoir_bytes``) counts.

Pure code.  A row kept in the columnar table weighs the table's ``row_nbytes`` (its
arrays' items, whatever the values); a row kept as a dict weighs the sum of its values:
arrays by ``nbytes``, ``str``/``bytes`` by length, anything else 8 bytes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from dask_reservoir._core.store.table import StoreError

__all__ = ["check_weight", "rows_nbytes", "value_nbytes"]

SCALAR_NBYTES = 8
"""What a value that is not an array nor text is counted as."""


def value_nbytes(value: Any) -> int:
    """Bytes ``value`` is counted as.

    Examples
    --------
    >>> value_nbytes(np.zeros((4, 4), np.float32)), value_nbytes("abc"), value_nbytes(3)
    (64, 3, 8)
    """
    if isinstance(value, (np.ndarray, np.generic)):
        return int(value.nbytes)
    if isinstance(value, (str, bytes)):
        return len(value)
    return SCALAR_NBYTES


def rows_nbytes(rows: Sequence[Mapping[str, Any]]) -> int:
    """Bytes of an entry kept as rows.

    Examples
    --------
    >>> rows_nbytes([{"x": np.zeros(10), "uid": 1}, {"x": np.zeros(2), "uid": 1}])
    112
    """
    return sum(value_nbytes(v) for row in rows for v in row.values())


def check_weight(uid: Hashable, nbytes: int, max_bytes: int | None) -> None:
    """Refuse an entry heavier than the whole byte bound (``StoreError`` naming the UID).

    Examples
    --------
    >>> check_weight("a", 10, None), check_weight("a", 10, 10)
    (None, None)
    >>> check_weight("a", 11, 10)
    Traceback (most recent call last):
    ...
    dask_reservoir._core.store.table.StoreError: the entry of UID 'a' takes 11 bytes, more than max_reservoir_bytes=10: it can never be stored (raise max_reservoir_bytes, or return less for this row)
    """
    if max_bytes is not None and nbytes > max_bytes:
        raise StoreError(
            f"the entry of UID {uid!r} takes {nbytes} bytes, more than max_reservoir_bytes={max_bytes}: "
            "it can never be stored (raise max_reservoir_bytes, or return less for this row)",
            uid=uid,
        )

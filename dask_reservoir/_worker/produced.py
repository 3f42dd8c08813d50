"""What ``function_to_run`` returned: checked and normalised into rows carrying the UID."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir._core.uid_index import same_uid
from dask_reservoir.errors import JobError

__all__ = ["normalize_result"]


def _check_row(row: object, uid: Hashable, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise JobError(
            f"function_to_run returned a list holding a {type(row).__name__} {where} for UID "
            f"{uid!r}; each item must be a dict of column -> value",
            uid=uid,
        )
    for key, value in row.items():
        if not isinstance(key, str):
            raise JobError(
                f"function_to_run returned a dict with a non-str key {key!r} "
                f"({type(key).__name__}) for UID {uid!r}; column names must be str",
                uid=uid,
            )
        if isinstance(value, np.ndarray) and value.dtype == object:
            raise JobError(
                f"function_to_run returned column {key!r} as an object-dtype array for UID "
                f"{uid!r}; return numeric, bool or str arrays (or scalars)",
                uid=uid,
            )
    return row


def normalize_result(result: object, uid: Hashable, uid_column: str) -> list[dict[str, Any]]:
    """Turn what ``function_to_run`` returned into a list of rows carrying ``uid``.

    A dict is one row; a list of dicts or a pandas DataFrame are several rows;
    an empty list or frame is no row.  Anything else raises :class:`JobError`
    naming the UID and the type returned, and so does a row whose UID column
    holds another value than ``uid`` (an equal value is kept).

    Examples
    --------
    >>> normalize_result({"x": 1}, 7, "sample_uid")
    [{'x': 1, 'sample_uid': 7}]
    >>> normalize_result([], 7, "sample_uid")
    []
    >>> normalize_result(None, 7, "sample_uid")
    Traceback (most recent call last):
    ...
    dask_reservoir.errors.JobError: function_to_run must return a dict, a list of dicts or a pandas DataFrame, got NoneType for UID 7
    >>> normalize_result({"sample_uid": 8}, 7, "sample_uid")
    Traceback (most recent call last):
    ...
    dask_reservoir.errors.JobError: function_to_run returned 8 in the UID column 'sample_uid' (row 0) for UID 7; leave the column out or return the row's own UID
    """
    if isinstance(result, dict):
        rows: list[Any] = [result]
    elif isinstance(result, list):
        rows = result
    elif isinstance(result, pd.DataFrame):
        rows = result.to_dict("records")
    else:
        raise JobError(
            "function_to_run must return a dict, a list of dicts or a pandas DataFrame, "
            f"got {type(result).__name__} for UID {uid!r}",
            uid=uid,
        )
    out = []
    for i, row in enumerate(rows):
        checked = dict(_check_row(row, uid, f"at index {i}"))
        if uid_column in checked and not same_uid(checked[uid_column], uid):
            raise JobError(
                f"function_to_run returned {checked[uid_column]!r} in the UID column {uid_column!r} "
                f"(row {i}) for UID {uid!r}; leave the column out or return the row's own UID",
                uid=uid,
            )
        checked[uid_column] = uid
        out.append(checked)
    return out

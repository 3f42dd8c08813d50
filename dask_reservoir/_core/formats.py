"""Batch formats: a collated batch (``dict[str, numpy.ndarray]``) as numpy, pandas or torch.

Pure code.  ``batch_format="numpy"`` is the collated dict itself; ``"pandas"`` a
``DataFrame`` with one row per sample (a column of arrays of more than one dimension
holds one array per row, in an ``object`` column); ``"torch"`` the dict with numeric
arrays as tensors (:func:`dask_reservoir.torch.to_tensors`, through the torch extra).
The conversion runs where the batch is built, in the reservoir's batch thread when
batches are built ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir._core.blocks import ColumnBlock
from dask_reservoir._core.tensors import require_torch, to_tensors

__all__ = ["BATCH_FORMATS", "check_batch_format", "converter", "rows_frame", "to_frame"]

BATCH_FORMATS = ("numpy", "pandas", "torch")


def to_frame(batch: dict[str, np.ndarray], dtypes: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per sample; a column of ``(n, *shape)`` arrays becomes ``n`` arrays of ``shape``.

    ``dtypes``: pandas dtypes to give columns back (those a vectorized ``function_to_run``
    returned that numpy cannot hold: categorical, string, nullable, time-zone aware).

    Examples
    --------
    >>> frame = to_frame({"uid": np.array([3, 4]), "image": np.zeros((2, 2, 2))})
    >>> frame.dtypes.astype(str).to_dict(), frame["image"].iloc[0].shape
    ({'uid': 'int64', 'image': 'object'}, (2, 2))
    """
    columns: dict[str, Any] = {}
    for name, values in batch.items():
        if values.ndim > 1:
            column = np.empty(len(values), dtype=object)
            column[:] = list(values)
            columns[name] = column
        else:
            columns[name] = values
    frame = pd.DataFrame(columns, copy=False)
    if dtypes:
        ColumnBlock.restore(frame, dtypes)
    return frame


def rows_frame(rows: Sequence[dict[str, Any]], uid_column: str, uid_dtype: np.dtype[Any]) -> pd.DataFrame:
    """One row per dict and one value per cell, for rows that do not stack into one batch.

    Arrays of other shapes or kinds of values (only stored with ``batch_size=1`` or a
    ``collate_fn``) stay one array per cell, as they were produced; a column some rows lack
    holds None there.  Columns of scalars get their inferred dtype, the UID column the
    source's (``uid_dtype``).

    Examples
    --------
    >>> rows = [{"uid": 1, "x": np.zeros(2)}, {"uid": 2, "x": np.array(["a", "b", "c"])}]
    >>> frame = rows_frame(rows, "uid", np.dtype("uint64"))
    >>> frame["uid"].dtype, [x.tolist() for x in frame["x"]]
    (dtype('uint64'), [[0.0, 0.0], ['a', 'b', 'c']])
    """
    names = dict.fromkeys(name for row in rows for name in row)
    columns: dict[str, Any] = {}
    for name in names:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row.get(name) for row in rows]
        columns[name] = column
    frame = pd.DataFrame(columns, copy=False).infer_objects()
    if uid_column in frame.columns and uid_dtype.kind in "iu":
        frame[uid_column] = frame[uid_column].astype(uid_dtype)
    return frame


def check_batch_format(batch_format: object, *, custom_collate: bool) -> str:
    """``batch_format`` checked; ``"torch"`` needs torch; a ``collate_fn`` makes its own batches.

    Examples
    --------
    >>> check_batch_format("pandas", custom_collate=False)
    'pandas'
    >>> check_batch_format("arrow", custom_collate=False)
    Traceback (most recent call last):
    ...
    ValueError: batch_format must be one of ['numpy', 'pandas', 'torch'], got 'arrow'
    """
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"batch_format must be one of {list(BATCH_FORMATS)}, got {batch_format!r}")
    if batch_format != "numpy" and custom_collate:
        raise ValueError(
            f"batch_format={batch_format!r} converts the default collate's batches; with a collate_fn, "
            "return the format you want from it and leave batch_format='numpy'"
        )
    if batch_format == "torch":
        require_torch()  # an ImportError naming the extra when torch is absent
    return str(batch_format)


def converter(
    batch_format: str, dtypes: dict[str, Any] | None = None
) -> Callable[[dict[str, np.ndarray]], Any] | None:
    """The function turning a collated batch into ``batch_format`` (None for numpy).

    ``dtypes`` (for pandas) is read at each call: it may gain columns meanwhile.
    """
    if batch_format == "pandas":
        return lambda batch: to_frame(batch, dtypes)
    if batch_format == "torch":
        return to_tensors
    return None

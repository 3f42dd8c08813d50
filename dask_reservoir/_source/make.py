"""``make_source``: validate a pandas or dask DataFrame and describe its rows."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir._core.etiquette import Placement
from dask_reservoir._core.uid_index import UidIndex, validate_uids
from dask_reservoir._source.dask_source import dask_source_from
from dask_reservoir._source.pandas_source import PandasSource, Source, check_columns

__all__ = ["is_dask_frame", "make_source"]


def is_dask_frame(obj: object) -> bool:
    """Whether ``obj`` is a ``dask.dataframe.DataFrame``.

    Without importing ``dask.dataframe`` (a quarter of a second) when it is not
    imported yet: then nothing can be one of its frames.

    Examples
    --------
    >>> is_dask_frame(pd.DataFrame())
    False
    """
    module = sys.modules.get("dask.dataframe")
    return module is not None and isinstance(obj, module.DataFrame)


def make_source(
    source: object, uid_column: str, *, scheduler: Any = None, placement: Placement | None = None
) -> Source:
    """Validate ``source`` and describe its rows.

    Parameters
    ----------
    source : pandas.DataFrame or dask.dataframe.DataFrame
        One row per job.
    uid_column : str
        Column naming each row; when absent, UIDs are the positions ``0..n-1``
        and the column is added (for a dask source, on the workers).
    scheduler : distributed.Client, optional
        The client that persists a dask source (default: distributed's default client).
    placement : Placement, optional
        The reservoir's etiquette options, on the tasks that persist and read a dask source.

    Raises
    ------
    TypeError
        For another type of source, or unhashable UIDs.
    ValueError
        For an empty source, duplicate column names, missing or duplicate UIDs, or UIDs
        that are not equal to themselves after a pickle round trip (``("A", nan)``).

    Examples
    --------
    >>> import pandas as pd
    >>> src = make_source(pd.DataFrame({"path": ["a", "b"]}), "sample_uid")
    >>> list(src.uids), src.records([1])
    ([0, 1], [{'path': 'b', 'sample_uid': 1}])
    >>> make_source(pd.DataFrame({"sample_uid": [1, 1]}), "sample_uid")
    Traceback (most recent call last):
    ...
    ValueError: UID column 'sample_uid' must hold unique values, got duplicate UIDs [1]
    """
    if not isinstance(uid_column, str):
        raise TypeError(f"uid_column must be a str, got {type(uid_column).__name__}: {uid_column!r}")
    if isinstance(source, pd.DataFrame):
        if len(source) == 0:
            raise ValueError("source must hold at least one row, got an empty DataFrame")
        frame = source
        check_columns(list(frame.columns))
        if uid_column in frame.columns:
            uids = validate_uids(frame[uid_column], uid_column)
        else:
            positions = np.arange(len(frame), dtype=np.int64)
            uids = UidIndex(positions)
            frame = frame.assign(**{uid_column: positions})
        return PandasSource(uids=uids, uid_column=uid_column, frame=frame)
    if is_dask_frame(source):
        return dask_source_from(source, uid_column, scheduler, placement)  # type: ignore[arg-type]
    raise TypeError(
        "source must be a pandas.DataFrame or a dask.dataframe.DataFrame, "
        f"got {type(source).__module__}.{type(source).__qualname__}"
    )

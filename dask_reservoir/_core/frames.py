"""The loaded entries as a pandas DataFrame (``AsyncReservoir.to_pandas``).

Pure code over a store :class:`~dask_reservoir._core.store.Snapshot`: rows in source order (or in
the order of the UIDs asked for), collated as a ``batch_format="pandas"`` batch, plus a column
saying when each entry's job finished.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable
from typing import Any, Protocol

import numpy as np
import pandas as pd

from dask_reservoir._core.collate import collate_rows
from dask_reservoir._core.formats import rows_frame, to_frame
from dask_reservoir._core.store import Snapshot

__all__ = ["UidLookup", "entries_frame", "load_time_column"]


class UidLookup(Protocol):
    """What :func:`entries_frame` reads of a source: its UIDs and their positions."""

    def has(self, uid: Hashable) -> bool: ...

    def position(self, uid: Hashable) -> int: ...


def load_time_column(loaded_at: object, uid_column: str) -> str | None:
    """The name ``to_pandas(loaded_at=...)`` asks for (None: no column), checked.

    Examples
    --------
    >>> load_time_column(True, "uid"), load_time_column("t", "uid"), load_time_column(False, "uid")
    ('loaded_at', 't', None)
    """
    if loaded_at is False:
        return None
    if loaded_at is True:
        loaded_at = "loaded_at"
    if not isinstance(loaded_at, str) or not loaded_at:
        raise TypeError(
            f"loaded_at must be a bool or a non-empty str (the column name), got "
            f"{type(loaded_at).__name__}: {loaded_at!r}"
        )
    if loaded_at == uid_column:
        raise ValueError(
            f"to_pandas() cannot name its load-time column {loaded_at!r}: that is the UID column; "
            "pass loaded_at='<another name>', or loaded_at=False for no load-time column"
        )
    return loaded_at


def entries_frame(
    snapshot: Snapshot,
    uids: Iterable[Hashable] | None,
    *,
    source: UidLookup,
    uid_values: np.ndarray,
    uid_column: str,
    stamp_column: str | None,
    dtypes: dict[str, Any],
) -> pd.DataFrame:
    """One row per produced row of the entries of ``snapshot`` (all, or those of ``uids``).

    ``uid_values`` are the source's UIDs (an empty frame keeps their dtype); ``dtypes`` the
    pandas dtypes of produced columns.  Raises ``KeyError`` naming UIDs not in the source and
    ``ValueError`` when ``stamp_column`` is a column the entries hold.
    """
    wall_minus_monotonic = time.time() - time.monotonic()
    if uids is None:
        indices = list(range(len(snapshot)))
    else:
        wanted = list(uids)
        missing = [u for u in wanted if not source.has(u)]
        if missing:
            raise KeyError(f"UIDs not in the source ({len(missing)}): {missing[:10]!r}")
        positions = np.asarray([source.position(u) for u in wanted], dtype=np.int64)
        indices = []
        if len(snapshot):
            found = np.minimum(np.searchsorted(snapshot.positions, positions), len(snapshot) - 1)
            loaded = snapshot.positions[found] == positions
            indices = [int(i) for i in found[loaded]]
    rows: list[dict[str, Any]] = []
    stamps: list[float] = []
    for index in indices:
        entry_rows = snapshot.rows_at(index)
        rows.extend(entry_rows)
        stamps.extend([snapshot.entry(index).loaded_at + wall_minus_monotonic] * len(entry_rows))
    if rows:
        try:
            frame = to_frame(collate_rows(rows, uid_column=uid_column), dtypes)
        except ValueError:  # rows that do not stack: stored with batch_size=1 or a collate_fn
            frame = rows_frame(rows, uid_column, uid_values.dtype)
    else:
        frame = pd.DataFrame({uid_column: uid_values[:0]})
    if stamp_column is not None:
        if stamp_column in frame.columns:
            raise ValueError(
                f"to_pandas() cannot add its load-time column {stamp_column!r}: function_to_run "
                f"produces a column named {stamp_column!r}; pass loaded_at='<another name>', or "
                "loaded_at=False for no load-time column"
            )
        frame[stamp_column] = pd.to_datetime(np.asarray(stamps, dtype=np.float64), unit="s")
    return frame

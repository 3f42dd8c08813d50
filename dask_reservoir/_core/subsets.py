"""Which source rows a subset reservoir takes: drawn at random, or selected by UID or column value.

Pure functions over a source's lookups (:class:`SourceLookup`; a dask source computes only the
one column asked for).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Protocol

import numpy as np

__all__ = ["SourceLookup", "positions_by_values", "random_positions"]


class SourceLookup(Protocol):
    """What :func:`positions_by_values` reads of a source (pandas and dask sources have it)."""

    @property
    def columns(self) -> list[str]: ...

    def has(self, uid: Hashable) -> bool: ...

    def position(self, uid: Hashable) -> int: ...

    def column_values(self, name: str, *, scheduler: Any = None) -> list[Any]: ...


def _first(values: list[Any]) -> str:
    return f"{values[:5]!r}" + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def random_positions(n: int, nb_samples: object, seed: int | None) -> list[int]:
    """``nb_samples`` positions of ``range(n)`` drawn without replacement, in source order.

    Examples
    --------
    >>> random_positions(10, 3, seed=0)
    [5, 6, 9]
    >>> random_positions(10, 11, seed=0)
    Traceback (most recent call last):
    ...
    ValueError: nb_samples must be between 1 and the 10 source rows, got 11
    """
    if isinstance(nb_samples, bool) or not isinstance(nb_samples, (int, np.integer)):
        raise TypeError(f"nb_samples must be an int, got {type(nb_samples).__name__}: {nb_samples!r}")
    if not 1 <= nb_samples <= n:
        raise ValueError(f"nb_samples must be between 1 and the {n} source rows, got {nb_samples}")
    return sorted(np.random.default_rng(seed).choice(n, size=int(nb_samples), replace=False).tolist())


def positions_by_values(
    source: SourceLookup, uids: Iterable[Hashable], column: str, *, uid_column: str, scheduler: Any = None
) -> list[int]:
    """Positions of the rows whose ``column`` is in ``uids``, in the order of ``uids``.

    Raises
    ------
    ValueError
        When ``uids`` is empty or ``column`` is not a column of the source.
    KeyError
        When some values are absent from the column (naming the first few).

    Examples
    --------
    >>> import pandas as pd
    >>> from dask_reservoir._source.make import make_source
    >>> src = make_source(pd.DataFrame({"site": ["A", "B", "A"]}), "uid")
    >>> positions_by_values(src, [2, 0], "uid", uid_column="uid")
    [2, 0]
    >>> positions_by_values(src, ["A"], "site", uid_column="uid")
    [0, 2]
    """
    wanted = [uids] if isinstance(uids, (str, bytes)) else list(uids)
    if not wanted:
        raise ValueError("uids must hold at least one UID, got an empty collection")
    if column == uid_column:
        missing = [u for u in wanted if not source.has(u)]
        if missing:
            raise KeyError(f"UIDs not in the source column {column!r}: {_first(missing)}")
        return list(dict.fromkeys(source.position(u) for u in wanted))
    if column not in source.columns:
        raise ValueError(
            f"uids_name must be a column of the source, got {column!r}; columns are {source.columns}"
        )
    by_value: dict[Any, list[int]] = {}
    for position, value in enumerate(source.column_values(column, scheduler=scheduler)):
        try:
            by_value.setdefault(value, []).append(position)
        except TypeError:  # an unhashable cell cannot match
            continue
    missing = [u for u in wanted if u not in by_value]
    if missing:
        raise KeyError(f"values not in the source column {column!r}: {_first(missing)}")
    return list(dict.fromkeys(p for u in dict.fromkeys(wanted) for p in by_value[u]))

"""The source's UIDs as arrays: row position -> UID, and UID -> row position, for any source size.

A source of 10 million rows must not cost a Python list and a dict of 10
million entries on the client.  :class:`UidIndex` keeps the UIDs in one numpy
array (numbers as a numeric array, other values as an object array) and looks
positions up through a ``pandas.Index`` hash table built on first use.  It
reads like the list it replaces: ``uids[i]`` is a Python value, ``len(uids)``,
iteration.  :func:`validate_uids` checks a UID column vectorized: no missing
value, hashable, unique, and unchanged by a pickle round trip.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, cast, overload

import numpy as np
import pandas as pd

from dask_reservoir.errors import SHOWN, first_values

__all__ = ["UidIndex", "validate_uids"]

_STABLE = frozenset({str, int, bytes})
"""Types whose values always come back equal, with equal hashes, from a pickle round trip."""


class UidIndex(Sequence[Hashable]):
    """UIDs in source order, kept as one array.

    Examples
    --------
    >>> uids = UidIndex(np.array([10, 20, 30]))
    >>> uids[1], type(uids[1]).__name__, len(uids), list(uids)
    (20, 'int', 3, [10, 20, 30])
    >>> uids.position(30), uids.has(30.0), uids.has("x"), uids.take([2, 0])
    (2, True, False, [30, 10])
    """

    __slots__ = ("_index", "values")

    def __init__(self, values: np.ndarray | pd.api.extensions.ExtensionArray | Sequence[Hashable]) -> None:
        if isinstance(values, UidIndex):
            values = values.values
        if not isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)):
            values = _as_array(list(values))
        # numbers: a numeric array; pandas strings: their (Arrow) string array; else objects
        self.values: Any = values
        self._index: pd.Index | None = None

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Hashable: ...

    @overload
    def __getitem__(self, i: slice) -> list[Hashable]: ...

    def __getitem__(self, i: int | slice) -> Hashable | list[Hashable]:
        if isinstance(i, slice):
            return list(self.values[i].tolist())
        value = self.values[i]
        return value.item() if isinstance(value, np.generic) else value

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.values.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UidIndex):
            other = other.values.tolist()
        return isinstance(other, (list, tuple)) and self.values.tolist() == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = list(self.values[:SHOWN].tolist())
        more = f", ... ({len(self)} UIDs)" if len(self) > SHOWN else ""
        return f"UidIndex({shown!r}{more}, dtype={self.values.dtype})"

    @property
    def stored_type(self) -> type[np.unsignedinteger[Any]] | None:
        """The numpy type a UID takes in the UID column of produced rows, or None: as it is.

        UIDs are handed around as Python values, and numpy types a column of Python
        ints by their values: int64 for those below 2**63, object or float64 beyond.  So
        the UIDs of an unsigned column (64-bit hashes) are stored as its numpy scalars,
        and batches and ``to_pandas()`` keep the source's dtype.  Signed integers are
        int64 already (the index keeps them so), other UIDs are not numbers.

        Examples
        --------
        >>> UidIndex(np.array([2**63, 5], np.uint64)).stored_type, UidIndex(np.array([5])).stored_type
        (<class 'numpy.uint64'>, None)
        """
        dtype = getattr(self.values, "dtype", None)
        if isinstance(dtype, np.dtype) and dtype.kind == "u":
            return cast(type[np.unsignedinteger[Any]], dtype.type)
        return None

    def take(self, positions: Sequence[int] | np.ndarray) -> list[Hashable]:
        """The UIDs at ``positions`` (Python values)."""
        return list(self.values.take(np.asarray(positions, dtype=np.intp)).tolist())

    @property
    def lookup(self) -> pd.Index:
        """The ``pandas.Index`` of the UIDs (built once, on first use)."""
        if self._index is None:
            self._index = pd.Index(self.values, copy=False)
        return self._index

    def position(self, uid: Hashable) -> int:
        """Row position of ``uid`` (``KeyError`` when absent)."""
        try:
            found = self.lookup.get_loc(uid)
        except (TypeError, ValueError, pd.errors.InvalidIndexError):
            raise KeyError(uid) from None
        if not isinstance(found, (int, np.integer)):  # pragma: no cover - UIDs are unique
            raise KeyError(uid)
        return int(found)

    def has(self, uid: Hashable) -> bool:
        """Whether ``uid`` names a row."""
        try:
            self.position(uid)
        except KeyError:
            return False
        return True

    def positions(self, uids: Sequence[Hashable]) -> np.ndarray:
        """Row positions of ``uids``, -1 for those absent (vectorized)."""
        return np.asarray(self.lookup.get_indexer(pd.Index(_as_array(list(uids)))), dtype=np.int64)

    def nbytes(self) -> int:
        """Bytes of the array and, once built, the lookup table (object values not counted)."""
        table = 0 if self._index is None else int(self._index.memory_usage(deep=False))
        return int(self.values.nbytes) + table


def _as_array(values: list[Any]) -> np.ndarray:
    """Numbers (not bools) as a numeric array; anything else as an object array, values unchanged.

    Python ints are int64, or uint64 when some are 2**63 or more and none is negative
    (64-bit hashes): never an object array that numpy would turn into float64 later.

    Examples
    --------
    >>> _as_array([3, 1]).dtype, _as_array([2**63, 5]).dtype, _as_array([2**64, 5]).dtype
    (dtype('int64'), dtype('uint64'), dtype('O'))
    >>> _as_array([*range(64), 2.5])[-1]
    2.5
    """
    if values and set(map(type, values)) == {int}:  # every value: a float or bool among ints stays as is
        for dtype in (np.int64, np.uint64):
            try:
                array = np.asarray(values, dtype=dtype)
            except (OverflowError, TypeError, ValueError):
                continue
            if array.dtype.kind in "iu":
                return array
    return np.fromiter(values, dtype=object, count=len(values))  # never unpacks a sequence value


def validate_uids(values: Any, uid_column: str) -> UidIndex:
    """Check a UID column (a ``pandas.Series`` or a list) and index it.

    Raises
    ------
    ValueError
        For missing, duplicate, or pickle-unstable UIDs (``("A", nan)``), naming
        the column and the first offenders.
    TypeError
        For unhashable UIDs.

    Examples
    --------
    >>> validate_uids(pd.Series([3, 1, 2]), "uid")[0]
    3
    >>> validate_uids(pd.Series(["a", "b", "a"]), "uid")
    Traceback (most recent call last):
    ...
    ValueError: UID column 'uid' must hold unique values, got duplicate UIDs ['a']
    """
    series = values if isinstance(values, pd.Series) else pd.Series(_as_array(list(values)), dtype=object)
    if isinstance(series.dtype, pd.StringDtype):  # kept as the string array: no Python str per UID
        array: Any = series.array
    elif series.dtype.kind in "iu" and isinstance(series.dtype, np.dtype):
        array = series.to_numpy(dtype=np.int64) if series.dtype.kind == "i" else series.to_numpy()
    else:
        array = _as_array(series.tolist())
    python_objects = isinstance(array, np.ndarray) and array.dtype == object
    if python_objects or isinstance(array, pd.api.extensions.ExtensionArray):
        missing = np.flatnonzero(pd.isna(array))
        if len(missing):
            raise ValueError(
                f"UID column {uid_column!r} must not hold missing values (None/NaN/NA), "
                f"found them at row positions {first_values(missing.tolist())}"
            )
    if python_objects:
        _check_hashable(array.tolist(), uid_column)
    index = UidIndex(array)
    duplicated = index.lookup.duplicated()
    if duplicated.any():
        dupes = list(dict.fromkeys(array[duplicated].tolist()))
        raise ValueError(
            f"UID column {uid_column!r} must hold unique values, got duplicate UIDs {first_values(dupes)}"
        )
    if python_objects:
        objects = array.tolist()
        if not all(type(v) in _STABLE for v in objects):  # str and int always come back equal
            _check_round_trip(objects, uid_column)
    return index


def _check_hashable(uids: list[Any], uid_column: str) -> None:
    try:
        list(map(hash, uids))
    except TypeError:
        for i, u in enumerate(uids):
            try:
                hash(u)
            except TypeError:
                raise TypeError(
                    f"UID column {uid_column!r} must hold hashable values, got "
                    f"{type(u).__name__} {u!r} at row position {i}"
                ) from None


def _check_round_trip(uids: list[Hashable], uid_column: str) -> None:
    """Refuse UIDs that do not survive the trip to a worker and back (``("A", nan)``, say)."""
    try:
        back = pickle.loads(pickle.dumps(uids, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise TypeError(f"UID column {uid_column!r} must hold picklable values: {exc}") from None
    if back == uids and list(map(hash, back)) == list(map(hash, uids)):
        return
    for i, (u, v) in enumerate(zip(uids, back, strict=True)):
        if not same_uid(u, v):
            raise ValueError(
                f"UID column {uid_column!r} must hold values equal to themselves after a pickle round "
                f"trip (a NaN inside, say), got {type(u).__name__} {u!r} at row position {i}"
            )


def same_uid(a: object, b: object) -> bool:
    """Whether two UIDs are the same: equal, with equal hashes (so a dict finds one by the other).

    Examples
    --------
    >>> same_uid(3, 3.0), same_uid(("A", float("nan")), ("A", float("nan"))), same_uid([1], [1])
    (True, False, False)
    """
    try:
        return a is b or (bool(a == b) and hash(a) == hash(b))
    except Exception:
        return False

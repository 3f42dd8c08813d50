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

import hashlib
import pickle
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, cast, overload

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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

    __slots__ = ("_digest", "_index", "values")

    def __init__(self, values: np.ndarray | pd.api.extensions.ExtensionArray | Sequence[Hashable]) -> None:
        if isinstance(values, UidIndex):
            values = values.values
        if not isinstance(values, (np.ndarray, pd.api.extensions.ExtensionArray)):
            values = _as_array(list(values))
        # numbers: a numeric array; pandas strings: their (Arrow) string array; else objects
        self.values: Any = values
        self._index: pd.Index | None = None
        self._digest: str | None = None

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
        """Row positions of ``uids``, -1 for those absent (vectorized).

        Before the lookup table is built (:attr:`lookup`), integer and string UIDs are
        found by one scan of the source's UIDs against a table of ``uids``: a resumed
        reservoir finds its former members without a hash table of every UID (which,
        for ten million strings, costs seconds and gigabytes).

        Examples
        --------
        >>> UidIndex(np.array([10, 20, 30])).positions([30, 5, 10]).tolist()
        [2, -1, 0]
        >>> UidIndex(pd.array(["a", "b"], dtype="string[pyarrow]")).positions(["b", "z"]).tolist()
        [1, -1]
        """
        wanted = _as_array(list(uids))
        if self._index is None:
            found = _scan(self.values, wanted)
            if found is not None:
                return found
        return np.asarray(self.lookup.get_indexer(pd.Index(wanted)), dtype=np.int64)

    def digest(self) -> str:
        """SHA-256 of the UIDs in order, computed once: vectorized for integer and string UIDs.

        Equal UIDs in the same order give the same digest whatever holds them: integers of
        any width, strings in an Arrow or an object array.  Integers and strings never share
        a digest; other UIDs (floats, bools, mixed) are hashed one by one, by their repr.

        Examples
        --------
        >>> a = UidIndex(np.array([1, 2], np.uint8)).digest()
        >>> a == UidIndex([1, 2]).digest(), a == UidIndex([2, 1]).digest(), a == UidIndex(["1", "2"]).digest()
        (True, False, False)
        >>> UidIndex(pd.array(["a", "b"], dtype="string[pyarrow]")).digest() == UidIndex(["a", "b"]).digest()
        True
        """
        if self._digest is None:
            self._digest = _digest(self.values)
        return self._digest

    def nbytes(self) -> int:
        """Bytes of the array and, once built, the lookup table (object values not counted)."""
        table = 0 if self._index is None else int(self._index.memory_usage(deep=False))
        return int(self.values.nbytes) + table


def _scan(values: Any, wanted: np.ndarray) -> np.ndarray | None:
    """Positions in ``values`` of each of ``wanted`` (-1: absent) by one scan, or None: not here.

    Integers scan against a hash table of ``wanted``, strings through Arrow; UIDs are
    unique, so each row matches at most one of them.
    """
    if not len(wanted):
        return np.empty(0, np.int64)
    codes, distinct = pd.factorize(wanted)  # a UID asked twice gets its row twice
    distinct = np.asarray(distinct, dtype=wanted.dtype)
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "iu" and distinct.dtype.kind in "iu":
        match = np.asarray(pd.Index(distinct).get_indexer(values), dtype=np.int64)
    elif _is_strings(values) and distinct.dtype == object and all(type(w) is str for w in distinct.tolist()):
        found = pc.index_in(
            pa.array(values, type=pa.large_string()), value_set=pa.array(distinct, pa.large_string())
        )
        match = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    else:
        return None
    rows = np.flatnonzero(match >= 0)
    at = np.full(len(distinct), -1, np.int64)
    at[match[rows]] = rows
    return at[codes]


def _is_strings(values: Any) -> bool:
    return isinstance(getattr(values, "dtype", None), pd.StringDtype)


def _digest(values: Any) -> str:
    """See :meth:`UidIndex.digest`."""
    h = hashlib.sha256()
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        if dtype.kind == "i" or not len(values) or int(values.max()) < 2**63:
            h.update(b"int64:")
            h.update(np.ascontiguousarray(values, dtype="<i8").tobytes())
        else:
            h.update(b"uint64:")
            h.update(np.ascontiguousarray(values, dtype="<u8").tobytes())
        return h.hexdigest()
    strings = _string_buffers(values)
    if strings is not None:
        offsets, data = strings
        h.update(b"str:")
        h.update(offsets.tobytes())
        h.update(data)
        return h.hexdigest()
    h.update(b"repr:")
    for uid in values.tolist() if hasattr(values, "tolist") else values:
        h.update(repr(uid).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _string_buffers(values: Any) -> tuple[np.ndarray, memoryview] | None:
    """The UTF-8 bytes of all-string UIDs and where each starts (int64 offsets from 0); None otherwise."""
    if isinstance(values, np.ndarray):
        if values.dtype != object or not all(type(v) is str for v in values.tolist()):
            return None
    elif not isinstance(getattr(values, "dtype", None), pd.StringDtype):
        return None
    try:
        array = pa.array(values, type=pa.large_string())
    except (UnicodeEncodeError, pa.ArrowException):  # a lone surrogate: not UTF-8, digested by repr
        return None
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        return None
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype="<i8")[array.offset : array.offset + len(array) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = memoryview(b"") if data_buffer is None else memoryview(data_buffer)[start:end]
    return offsets - start, data


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
    # Integer UIDs in increasing order (the usual arange) are unique without a hash table: pandas 2
    # builds one for duplicated() and is_unique, 34 B per row at 1e6 rows.  duplicated() names them.
    increasing = array.dtype.kind in "iu" and bool(np.all(array[1:] > array[:-1]))
    duplicated = np.zeros(0, bool) if increasing or index.lookup.is_unique else index.lookup.duplicated()
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

"""The source's UID index: reads like the list it replaces, validates vectorized, stays an array."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.uid_index import UidIndex, validate_uids
from dask_reservoir._source.make import make_source

PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3
"""pandas 3 stores strings in its own dtype; pandas 2 as Python objects."""

UIDS = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), unique=True, min_size=1, max_size=40),
    st.lists(st.text(max_size=6), unique=True, min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 5), st.text(max_size=2)), unique=True, min_size=1, max_size=20),
)


@given(UIDS, st.data())
@settings(max_examples=80, deadline=None)
def test_it_behaves_like_the_list_and_dict_it_replaces(uids: list[Any], data: st.DataObject) -> None:
    index = validate_uids(
        pd.Series(uids, dtype=object) if isinstance(uids[0], tuple) else pd.Series(uids), "uid"
    )
    assert len(index) == len(uids) and list(index) == uids
    assert [index[i] for i in range(len(uids))] == uids
    assert all(type(a) is type(b) for a, b in zip(index, uids, strict=True))  # Python values, not numpy
    positions = data.draw(st.lists(st.integers(0, len(uids) - 1), max_size=10))
    assert index.take(positions) == [uids[p] for p in positions]
    for p, uid in enumerate(uids):
        assert index.position(uid) == p and index.has(uid)
    assert index.positions([uids[-1], "absent-uid", uids[0]]).tolist() == [len(uids) - 1, -1, 0]
    assert not index.has(("absent", "uid", 1))
    with pytest.raises(KeyError):
        index.position(["unhashable"])  # type: ignore[arg-type]


def test_integer_uids_stay_one_numpy_array() -> None:
    n = 1_000_000
    frame = pd.DataFrame({"uid": np.arange(n, dtype=np.int64)[::-1].copy()})
    source = make_source(frame, "uid")
    assert isinstance(source.uids, UidIndex)
    assert source.uid_index.values.dtype == np.int64 and source.uid_index.values.shape == (n,)
    assert source.position(0) == n - 1 and source.uids[0] == n - 1 and type(source.uids[0]) is int
    # the array and the lookup table: bytes per UID, not a Python object per UID
    assert source.uid_index.nbytes() < 64 * n  # a list and a dict of Python ints: about 140 B per UID


def test_equal_numbers_are_the_same_uid() -> None:
    index = validate_uids(pd.Series([1, 2, 3]), "uid")
    assert index.position(3.0) == 2 and index.has(np.int64(2)) and not index.has("3")


@pytest.mark.parametrize(
    ("values", "error", "words"),
    [
        ([1, 2, 1, 3, 3], ValueError, r"duplicate UIDs \[1, 3\]"),
        (["a", None, "b"], ValueError, r"missing values.*positions \[1\]"),
        ([1.5, float("nan")], ValueError, r"missing values.*positions \[1\]"),
        ([[1], [2]], TypeError, r"hashable values, got list \[1\] at row position 0"),
        (
            [("A", 1.0), ("A", float("nan"))],
            ValueError,
            r"pickle round trip.*got tuple \('A', nan\) at row position 1",
        ),
        (["x", Decimal("NaN")], ValueError, r"missing values.*positions \[1\]"),
    ],
)
def test_bad_uids_are_refused_naming_the_column_and_the_values(
    values: list[Any], error: type, words: str
) -> None:
    with pytest.raises(error, match=r"UID column 'uid'.*" + words):
        validate_uids(
            pd.Series(values, dtype=object) if isinstance(values[0], (list, tuple)) else values, "uid"
        )


def test_a_subset_keeps_the_array() -> None:
    source = make_source(pd.DataFrame({"uid": ["a", "b", "c", "d"]}), "uid")
    sub = source.subset([3, 1])  # type: ignore[attr-defined]
    assert list(sub.uids) == ["d", "b"] and sub.position("b") == 1 and not sub.has("a")


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (pd.Series([3, 1, 2]), "int64"),
        (pd.Series(np.array([3, 1], np.uint32)), "uint32"),
        ([5, 7, 9], "int64"),  # a dask source's UIDs arrive as a list
        ([2**70, 1], "object"),  # beyond uint64: kept as Python ints
        ([2**63, 5], "uint64"),  # 64-bit hashes: an object array before, float64 in batches
        ([*range(64), 100.5], "object"),  # was int64, the float cut to 100: every value is checked
        ([1, "a"], "object"),
        (["b", "a"], "object"),  # a list's strings: the Python objects, not an inferred string array
        ([True, False], "object"),  # bools are not numbers here
        (pd.Series(["a", "b"], dtype="str"), "str" if PANDAS_3 else "object"),  # the string array itself
        (pd.Series([1.5, 2.5]), "object"),
    ],
)
def test_uids_are_stored_as_the_narrowest_faithful_array(values: Any, kind: str) -> None:
    index = validate_uids(values, "uid")
    assert str(index.values.dtype) == kind
    expected = values.tolist() if isinstance(values, pd.Series) else list(values)
    assert list(index) == expected and [type(u) for u in index] == [type(u) for u in expected]
    assert index.position(expected[-1]) == len(expected) - 1


def test_unsigned_uids_are_stored_as_their_numpy_type() -> None:
    """What a uint64 UID column's UIDs are in produced rows, so batches keep the dtype."""
    hashes = pd.Series(np.array([2**63, 2**63 + 1, 5], np.uint64))
    assert validate_uids(hashes, "uid").stored_type is np.uint64
    assert validate_uids([2**64 - 1, 0], "uid").stored_type is np.uint64  # a dask source's list
    assert validate_uids(pd.Series(np.array([3, 1], np.uint32)), "uid").stored_type is np.uint32
    for plain in (pd.Series([3, 1]), pd.Series(["a", "b"]), [2**70, 1], pd.Series([1.5, 2.5])):
        assert validate_uids(plain, "uid").stored_type is None
    index = validate_uids(hashes, "uid")
    assert list(index) == [2**63, 2**63 + 1, 5] and index.position(5) == 2 and index.has(2**63 + 1)
    assert index.positions([5, 2**63, 7]).tolist() == [2, 0, -1]


class SameHashToken:
    """Hashes like every other token, equal only to itself: a pickled copy is another UID."""

    def __hash__(self) -> int:
        return 1


def test_a_list_of_uids_reads_like_the_list() -> None:
    uids = UidIndex(["a", "b", "c"])
    assert len(uids) == 3 and uids[1] == "b" and uids[1:] == ["b", "c"] and uids[:0] == []
    assert UidIndex([3, 1])[0:2] == [3, 1]


def test_equality_with_lists_tuples_and_other_indexes() -> None:
    uids = UidIndex(np.array([1, 2, 3]))
    assert uids == [1, 2, 3] and uids == (1, 2, 3) and uids == UidIndex([1, 2, 3])
    assert not uids == [1, 2] and not uids == UidIndex([3, 2, 1]) and not uids == [3, 2, 1]
    assert uids != "123" and uids != np.array([1, 2, 3]) and uids != {1, 2, 3}


def test_repr_shows_the_first_uids_and_how_many_there_are() -> None:
    from dask_reservoir.errors import SHOWN

    assert repr(UidIndex(np.array([7, 8]))) == "UidIndex([7, 8], dtype=int64)"
    assert repr(UidIndex(np.arange(SHOWN))) == f"UidIndex({list(range(SHOWN))!r}, dtype=int64)"
    long = repr(UidIndex(np.arange(1000)))
    assert long.startswith(f"UidIndex({list(range(SHOWN))!r}, ... (1000 UIDs)") and "999" not in long


def test_an_absent_uid_is_a_key_error_naming_it() -> None:
    uids = UidIndex(["a", "b"])
    with pytest.raises(KeyError) as info:
        uids.position("zz")
    assert info.value.args == ("zz",)
    with pytest.raises(KeyError) as info:
        uids.position(["unhashable"])  # type: ignore[arg-type]
    assert info.value.args == (["unhashable"],)


def test_nbytes_counts_the_array_then_the_lookup_table_not_the_objects() -> None:
    numbers = UidIndex(np.arange(100, dtype=np.int64))
    assert numbers.nbytes() == 800  # 100 int64, no lookup table yet
    numbers.position(5)
    assert numbers.nbytes() > 800  # the lookup table is built now
    short = UidIndex(["a", 1, 2.5])  # mixed values: an object array and table
    long = UidIndex(["a" * 1000, 1, 2.5])
    short.position(1)
    long.position(1)
    assert short.nbytes() == long.nbytes()  # the Python objects themselves are not counted


def test_signed_integer_uids_of_any_width_are_kept_as_int64() -> None:
    index = validate_uids(pd.Series([3, 1, 2], dtype=np.int32), "uid")
    assert index.values.dtype == np.int64 and list(index) == [3, 1, 2]


def test_unpicklable_uids_are_refused_naming_the_column() -> None:
    with pytest.raises(TypeError, match=r"UID column 'uid' must hold picklable values"):
        validate_uids(["a", lambda: 1], "uid")


def test_uids_not_equal_to_their_pickled_copy_are_refused_even_with_equal_hashes() -> None:
    with pytest.raises(
        ValueError, match=r"UID column 'uid'.*pickle round trip.*SameHashToken.*row position 0"
    ):
        validate_uids([SameHashToken(), "b"], "uid")


class HashedById:
    """Equal to any copy of itself (same value), but hashed by identity: a pickled copy hashes otherwise."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashedById) and other.value == self.value

    def __hash__(self) -> int:
        return id(self)


def test_uids_equal_to_their_pickled_copy_but_hashing_otherwise_are_refused() -> None:
    """A worker's copy must be found by a dict of the originals: equal is not enough, the hash must agree."""
    with pytest.raises(
        ValueError, match=r"UID column 'uid'.*pickle round trip.*got HashedById .* row position 0"
    ):
        validate_uids([HashedById(1), HashedById(2)], "uid")


def expected_digest(uids: list[Any]) -> str:
    """The version 3 ``uids_sha256`` of ``uids``, computed from its description, one UID at a time.

    Integers: ``int64:`` then each as 8 little-endian bytes (``uint64:``, unsigned, when one is
    2**63 or more); strings: ``str:``, the int64 offsets of each string's UTF-8 bytes, then the
    bytes; anything else: ``repr:`` then each repr in UTF-8 and a NUL.
    """
    if all(type(u) is int for u in uids):
        signed = all(u < 2**63 for u in uids)
        head = b"int64:" if signed else b"uint64:"
        return hashlib.sha256(
            head + b"".join(u.to_bytes(8, "little", signed=signed) for u in uids)
        ).hexdigest()
    if all(type(u) is str for u in uids):
        encoded = [u.encode("utf-8") for u in uids]
        ends = [0]
        for e in encoded:
            ends.append(ends[-1] + len(e))
        offsets = b"".join(end.to_bytes(8, "little", signed=True) for end in ends)
        return hashlib.sha256(b"str:" + offsets + b"".join(encoded)).hexdigest()
    return hashlib.sha256(
        b"repr:" + b"".join(repr(u).encode("utf-8", "surrogatepass") + b"\0" for u in uids)
    ).hexdigest()


STRINGS = ["a", "héllo", "", "日本", "zz"]


def chunked_strings() -> Any:
    """An Arrow string array in two chunks, as a concatenation leaves it."""
    parts = [pd.Series(STRINGS[:2], dtype="string[pyarrow]"), pd.Series(STRINGS[2:], dtype="string[pyarrow]")]
    return pd.concat(parts, ignore_index=True).array


@pytest.mark.parametrize(
    ("values", "uids"),
    [
        (np.array([3, -1, 2**40]), [3, -1, 2**40]),
        (np.array([1, 200], np.uint8), [1, 200]),
        (np.array([2**63 - 1, 5], np.uint64), [2**63 - 1, 5]),  # unsigned, all below 2**63: as int64
        (np.array([2**63, 5], np.uint64), [2**63, 5]),
        ([2**64 - 1, 0], [2**64 - 1, 0]),
        (STRINGS, STRINGS),
        (pd.array(STRINGS, dtype="string[pyarrow]"), STRINGS),
        (pd.array(STRINGS, dtype="string[python]"), STRINGS),
        (pd.array(["x", *STRINGS, "y"], dtype="string[pyarrow]")[1:-1], STRINGS),  # a slice: Arrow offset 1
        (chunked_strings(), STRINGS),
        ([1, "a"], [1, "a"]),
        (np.array([1.5, -2.0]), [1.5, -2.0]),  # Python floats' reprs, not numpy scalars'
        ([True, False], [True, False]),
        ([(1, "a"), (2, "b")], [(1, "a"), (2, "b")]),
    ],
    ids=[
        "int64",
        "uint8",
        "uint64 below 2**63",
        "uint64",
        "list of 64-bit hashes",
        "list of strings",
        "arrow strings",
        "python strings",
        "sliced arrow strings",
        "chunked arrow strings",
        "mixed",
        "float64",
        "bools",
        "tuples",
    ],
)
def test_the_uid_digest_is_the_documented_stable_format(values: Any, uids: list[Any]) -> None:
    """States of version 3 hold this digest: it must not change, whatever array holds the UIDs."""
    index = UidIndex(values)
    assert list(index) == uids
    assert index.digest() == expected_digest(uids) == UidIndex(uids).digest()


def test_integers_of_any_width_digest_alike_even_when_empty() -> None:
    empty = UidIndex(np.array([], np.int64)).digest()
    assert UidIndex(np.array([], np.uint64)).digest() == empty == UidIndex(np.array([], np.int8)).digest()
    assert empty != UidIndex([]).digest() != UidIndex(np.array([], np.float64)).digest()


class SurrogateRepr:
    """A UID whose repr holds a lone surrogate (not valid UTF-8)."""

    def __repr__(self) -> str:
        return "SurrogateRepr(\udc80)"


def test_any_repr_can_be_digested() -> None:
    uids = [SurrogateRepr(), 1]
    assert UidIndex(uids).digest() == expected_digest(uids)


@pytest.mark.parametrize(
    "values",
    [np.array([1, 2]), np.array([1, 2], np.uint64), ["a", "b"], pd.array(["a", "b"], dtype="str"), [1, "a"]],
    ids=["int64", "uint64", "object strings", "arrow strings", "mixed"],
)
def test_no_uids_asked_no_positions(values: Any) -> None:
    index = UidIndex(values)
    found = index.positions([])
    assert found.dtype == np.int64 and found.shape == (0,)
    assert index.take(found) == []


@pytest.mark.parametrize(
    ("values", "asked", "expected"),
    [
        (np.array([1, 2, 3]), ["1", "a", 3], [-1, -1, 2]),  # a string is never an integer UID
        (np.array([1, 2, 3]), ["1"], [-1]),
        (pd.array(["1", "2"], dtype="string[pyarrow]"), [1, 2], [-1, -1]),
        (
            pd.array(["1", "2"], dtype="string[pyarrow]"),
            ["2", "2", "1"],
            [1, 1, 0],
        ),  # asked twice: found twice
        ([1, "a", 2.5], ["a", "b"], [1, -1]),
        ([1, "a", 2.5], [2.5, 1], [2, 0]),
        ([(1, "a"), (2, "b")], [(2, "b"), (1, "a"), (3, "c")], [1, 0, -1]),
        (chunked_strings(), ["zz", "a", "nope", ""], [4, 0, -1, 2]),
    ],
)
def test_positions_find_uids_only_among_uids_of_their_kind(
    values: Any, asked: list[Any], expected: list[int]
) -> None:
    index = UidIndex(values)
    assert index.positions(asked).tolist() == expected
    assert [index.has(u) for u in asked] == [p >= 0 for p in expected]  # the same answer as one by one


def test_a_string_uid_that_is_not_utf8_is_digested_by_its_repr() -> None:
    """A lone surrogate passed validation, then saving the state raised UnicodeEncodeError."""
    uids = ["a", "\ud800"]
    digest = UidIndex(uids).digest()
    assert len(digest) == 64 and digest == UidIndex(list(uids)).digest()
    assert digest != UidIndex(["a", "\ud801"]).digest()


@pytest.mark.parametrize("values", [[1, 1, 2], [0, 1, 2, 2, 3], np.array([5, 6, 6], dtype=np.uint64), [3, 3]])
def test_sorted_integer_uids_with_duplicates_are_refused(values: Any) -> None:
    with pytest.raises(ValueError, match=r"must hold unique values, got duplicate UIDs \["):
        validate_uids(values, "uid")


def test_integer_uids_in_order_are_checked_without_a_hash_table() -> None:
    """pandas 2 builds one for ``duplicated()``: about 34 B per row; the order check costs 1."""
    import tracemalloc

    n = 200_000
    values = pd.Series(np.arange(n, dtype=np.int64))  # a source's UID column
    tracemalloc.start()
    try:
        index = validate_uids(values, "uid")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.position(n - 1) == n - 1
    assert peak < 12 * n, f"{peak / n:.1f} B per row"  # the UID array itself (8) and the order check (1)

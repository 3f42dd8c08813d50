"""collate_rows: shapes, dtypes and errors (pure, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dask_reservoir import collate_rows
from dask_reservoir._core.collate import private_rows


def test_stacks_arrays_scalars_and_strings() -> None:
    rows = [
        {
            "sample_uid": i,
            "image": np.full((3, 4), i, np.float32),
            "label": i,
            "w": i / 2,
            "name": f"n{i}",
            "ok": i % 2 == 0,
        }
        for i in range(5)
    ]
    batch = collate_rows(rows)
    assert batch["image"].shape == (5, 3, 4) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int64 and batch["label"].tolist() == [0, 1, 2, 3, 4]
    assert batch["w"].dtype == np.float64
    assert batch["name"].dtype.kind == "U" and batch["name"].tolist() == ["n0", "n1", "n2", "n3", "n4"]
    assert batch["ok"].dtype == np.bool_
    assert batch["sample_uid"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(batch["image"][3], np.full((3, 4), 3))


def test_mixed_values_become_object_arrays() -> None:
    batch = collate_rows([{"v": "a"}, {"v": None}, {"v": [1, 2]}])
    assert batch["v"].dtype == object and batch["v"].tolist() == ["a", None, [1, 2]]


def test_numpy_scalars_keep_dtype() -> None:
    batch = collate_rows([{"v": np.float32(1)}, {"v": np.float32(2)}])
    assert batch["v"].dtype == np.float32


def test_shape_mismatch_names_column_and_uids() -> None:
    rows = [
        {"sample_uid": "a", "x": np.zeros(2)},
        {"sample_uid": "b", "x": np.zeros(3)},
        {"sample_uid": "c", "x": np.zeros(2)},
    ]
    with pytest.raises(
        ValueError, match=r"column 'x'.*\(2,\) for UIDs \['a', 'c'\].*\(3,\) for UIDs \['b'\]"
    ):
        collate_rows(rows)


def test_text_and_number_arrays_are_not_stacked() -> None:
    """numpy would stack them as text: every number of the batch served as a string ("1.0")."""
    rows = [
        {"sample_uid": 1, "x": np.ones(2)},
        {"sample_uid": 2, "x": np.array(["a", "b"])},
        {"sample_uid": 3, "x": np.arange(2)},  # ints and floats are numbers alike
    ]
    with pytest.raises(
        ValueError,
        match=r"column 'x': arrays must hold one kind.*number values for UIDs \[1, 3\] and str values for UIDs \[2\]",
    ):
        collate_rows(rows)
    assert collate_rows([rows[0], rows[2]])["x"].tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_array_and_scalar_mixed() -> None:
    with pytest.raises(ValueError, match="column 'x': values must be all arrays of one shape or all scalars"):
        collate_rows([{"sample_uid": 1, "x": np.zeros(2)}, {"sample_uid": 2, "x": 3}])


def test_column_mismatch_names_column_and_uids() -> None:
    with pytest.raises(ValueError, match=r"column 'y'.*UIDs \[2\] have it and UIDs \[1\] do not"):
        collate_rows([{"sample_uid": 1, "x": 1}, {"sample_uid": 2, "x": 1, "y": 2}])
    with pytest.raises(ValueError, match=r"column 'y'.*UIDs \[1\] have it and UIDs \[2\] do not"):
        collate_rows([{"sample_uid": 1, "y": 1}, {"sample_uid": 2, "x": 1}])


def test_uid_column_option_and_positions_when_absent() -> None:
    with pytest.raises(ValueError, match=r"\['<row 1>'\]"):
        collate_rows([{"x": np.zeros(1)}, {"x": np.zeros(2)}])
    with pytest.raises(ValueError, match=r"\['k2'\]"):
        collate_rows([{"key": "k1", "x": np.zeros(1)}, {"key": "k2", "x": np.zeros(2)}], uid_column="key")


@pytest.mark.parametrize(
    "rows, error, match",
    [
        ([], ValueError, "at least one row"),
        ([{"x": 1}, 5], TypeError, "each row must be a dict, got int at position 1"),
        ([{1: 1}], TypeError, "column names must be str, got int"),
    ],
)
def test_bad_rows(rows: list, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        collate_rows(rows)


@given(
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    n=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.int64, np.uint8, np.bool_]),
)
def test_stack_roundtrip(shape: tuple[int, ...], n: int, dtype: type) -> None:
    """Any fixed shape and dtype: (n, *shape), same dtype, rows recovered exactly."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 2, size=shape).astype(dtype) for _ in range(n)]
    batch = collate_rows([{"sample_uid": i, "a": a} for i, a in enumerate(arrays)])
    assert batch["a"].shape == (n, *shape) and batch["a"].dtype == dtype
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(batch["a"][i], a)


@given(
    values=st.lists(
        st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=5)),
        min_size=1,
        max_size=8,
    )
)
def test_scalars_roundtrip(values: list[object]) -> None:
    """Any list of scalars comes back equal, one element per row."""
    batch = collate_rows([{"v": v} for v in values])
    assert batch["v"].shape == (len(values),)
    kinds = {type(v) for v in values}
    if kinds == {int}:
        assert batch["v"].dtype.kind == "i" and batch["v"].tolist() == values
    elif kinds == {float}:
        assert batch["v"].dtype.kind == "f" and batch["v"].tolist() == values
    elif kinds == {str}:
        assert batch["v"].dtype.kind in "UO" and batch["v"].tolist() == values
    elif str in kinds:  # text mixed with numbers: kept as the objects given
        assert batch["v"].dtype == object and batch["v"].tolist() == values
    else:  # ints and floats: one float column, equal values
        assert batch["v"].dtype.kind == "f" and batch["v"].tolist() == [float(v) for v in values]  # type: ignore[arg-type]


def test_batch_shares_nothing_with_rows() -> None:
    rows = [{"x": np.zeros(2), "tags": ["a"], "meta": {"k": [1]}, "t": (1, 2)} for _ in range(2)]
    batch = collate_rows(rows)
    batch["x"] += 1
    batch["tags"][0].append("b")
    batch["meta"][1]["k"].append(2)
    assert rows[0] == {"x": rows[0]["x"], "tags": ["a"], "meta": {"k": [1]}, "t": (1, 2)}
    np.testing.assert_array_equal(rows[0]["x"], np.zeros(2))
    assert batch["t"][0] is rows[0]["t"]  # immutable values are shared, not copied


def test_object_dtype_arrays_are_deep_copied() -> None:
    rows = [{"x": np.array([[1], [2]], dtype=object)[:, 0]} for _ in range(2)]
    rows[0]["x"][0] = [1]
    batch = collate_rows(rows)
    batch["x"][0, 0].append(5)
    assert rows[0]["x"][0] == [1]


def test_private_rows_copies_what_can_change() -> None:
    stored = [{"x": np.zeros(2), "o": np.array([[1]], dtype=object), "tags": ["a"], "s": "s"}]
    mine = private_rows(stored)
    mine[0]["x"] += 1
    mine[0]["o"][0, 0] = 9
    mine[0]["tags"].append("b")
    np.testing.assert_array_equal(stored[0]["x"], np.zeros(2))
    assert stored[0]["o"][0, 0] == 1 and stored[0]["tags"] == ["a"]
    assert mine[0]["s"] is stored[0]["s"] and mine[0] is not stored[0]

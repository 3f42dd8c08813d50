"""Batch formats: numpy, pandas, torch conversions and their checks (pure)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask_reservoir._core.formats import check_batch_format, converter, rows_frame, to_frame

torch = pytest.importorskip("torch")


def test_to_frame_keeps_vectors_as_one_array_per_row() -> None:
    frame = to_frame({"uid": np.array([1, 2]), "v": np.array([[1, 2], [3, 4]])})
    assert frame["v"].dtype == object and [x.tolist() for x in frame["v"]] == [[1, 2], [3, 4]]
    assert frame["uid"].tolist() == [1, 2]


def test_to_frame_gives_dtypes_back() -> None:
    dtypes = {"c": pd.CategoricalDtype(["q", "p"])}
    frame = to_frame({"c": np.array(["p", "q"], dtype=object)}, dtypes)
    assert isinstance(frame["c"].dtype, pd.CategoricalDtype) and frame["c"].tolist() == ["p", "q"]


def test_rows_frame_casts_only_an_int_uid_column() -> None:
    rows = [{"uid": 1, "x": 1.5}, {"uid": 2, "x": 2.5}]
    assert rows_frame(rows, "uid", np.dtype("int32"))["uid"].dtype == np.int32
    # a source of str UIDs: the column keeps its values, not cast to the source's dtype
    frame = rows_frame([{"uid": "a"}, {"uid": "b"}], "uid", np.dtype("<U1"))
    assert frame["uid"].tolist() == ["a", "b"]
    # no UID column in the rows: nothing to cast, no error
    assert list(rows_frame([{"x": 1}], "uid", np.dtype("int64")).columns) == ["x"]


def test_check_batch_format_with_a_collate_fn() -> None:
    assert check_batch_format("numpy", custom_collate=True) == "numpy"
    assert check_batch_format("torch", custom_collate=False) == "torch"
    with pytest.raises(
        ValueError,
        match=r"^batch_format='torch' converts the default collate's batches; with a collate_fn, "
        r"return the format you want from it and leave batch_format='numpy'$",
    ):
        check_batch_format("torch", custom_collate=True)


def test_check_batch_format_asks_for_torch_only_for_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # torch missing
    assert check_batch_format("pandas", custom_collate=False) == "pandas"
    assert check_batch_format("numpy", custom_collate=False) == "numpy"
    with pytest.raises(ImportError, match=r"dask_reservoir\[torch\]"):
        check_batch_format("torch", custom_collate=False)


def test_converter_per_format() -> None:
    batch = {"uid": np.array([1, 2]), "x": np.array([0.5, 1.5])}
    assert converter("numpy") is None
    frame = converter("pandas")(batch)  # type: ignore[misc]
    assert isinstance(frame, pd.DataFrame) and frame["x"].tolist() == [0.5, 1.5]
    dtypes: dict[str, object] = {}
    to_pandas = converter("pandas", dtypes)
    dtypes["c"] = pd.CategoricalDtype(["b", "a"])  # read at each call
    out = to_pandas({"c": np.array(["a"], dtype=object)})  # type: ignore[misc]
    assert list(out["c"].cat.categories) == ["b", "a"]
    tensors = converter("torch")(batch)  # type: ignore[misc]
    assert isinstance(tensors["x"], torch.Tensor) and tensors["x"].tolist() == [0.5, 1.5]

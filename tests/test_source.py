"""Source validation and row building (pandas part is pure; dask part on a real cluster)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from decimal import Decimal

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir._source.make import make_source
from dask_reservoir._source.pandas_source import PandasSource
from dask_reservoir._worker.wire import RowColumns, partition_records


def test_uid_column_added_when_missing() -> None:
    src = make_source(pd.DataFrame({"path": ["a", "b", "c"]}), "sample_uid")
    assert isinstance(src, PandasSource)
    assert src.uids == [0, 1, 2]
    assert src.records([2, 0]) == [{"path": "c", "sample_uid": 2}, {"path": "a", "sample_uid": 0}]


def test_existing_uid_column_and_positions() -> None:
    src = make_source(pd.DataFrame({"case": ["x", "y"], "v": [1.5, 2.5]}), "case")
    assert src.uids == ["x", "y"] and src.position("y") == 1 and src.has("x") and not src.has("z")
    assert not src.has([1])  # unhashable: simply absent


def test_missing_text_becomes_none_float_stays_nan() -> None:
    src = make_source(pd.DataFrame({"s": ["a", None], "f": [1.0, np.nan]}), "uid")
    rec = src.records([1])[0]
    assert rec["s"] is None and np.isnan(rec["f"])


def test_subset_keeps_order() -> None:
    src = make_source(pd.DataFrame({"v": range(5)}), "uid").subset([4, 1])
    assert src.uids == [4, 1] and [r["v"] for r in src.records([0, 1])] == [4, 1]


@pytest.mark.parametrize(
    "source, error, match",
    [
        (
            [1, 2],
            TypeError,
            "source must be a pandas.DataFrame or a dask.dataframe.DataFrame, got builtins.list",
        ),
        (pd.Series([1]), TypeError, r"got pandas(\.core\.series)?\.Series"),  # pandas 2 names its module
        (pd.DataFrame({"a": []}), ValueError, "at least one row"),
        (pd.DataFrame({"uid": [1, 2, 1, 3, 3]}), ValueError, r"duplicate UIDs \[1, 3\]"),
        (pd.DataFrame({"uid": [1.0, np.nan]}), ValueError, r"missing values.*positions \[1\]"),
        (pd.DataFrame({"uid": ["a", None]}), ValueError, r"missing values.*positions \[1\]"),
        (pd.DataFrame({"uid": [[1], [2]]}), TypeError, "hashable values, got list"),
    ],
)
def test_bad_sources(source: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        make_source(source, "uid")


def test_uid_column_type() -> None:
    with pytest.raises(TypeError, match="uid_column must be a str, got int"):
        make_source(pd.DataFrame({"a": [1]}), 3)  # type: ignore[arg-type]


def test_partition_records() -> None:
    part = pd.DataFrame({"v": [10, 20, 30]})
    assert partition_records(part, [2, 0]) == [{"v": 30}, {"v": 10}]


def test_records_match_to_dict_for_many_dtypes() -> None:
    df = pd.DataFrame(
        {
            "i": np.arange(6),
            "f": [0.5, np.nan, 1.5, 2.0, 3.0, 4.0],
            "b": [True, False] * 3,
            "t": pd.date_range("2020", periods=6),
            "c": pd.Categorical(["a", "b"] * 3),
            "n": pd.array([1, None] * 3, dtype="Int64"),
            "s": ["x", None, "z", "w", "v", "u"],
        }
    )
    src = make_source(df, "uid")
    ours = src.records([1, 4])
    theirs = df.assign(uid=range(6)).iloc[[1, 4]].to_dict("records")
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.keys() == ref.keys()
        for key, value in ref.items():
            if key == "s" and mine[key] is None:
                assert pd.isna(value)  # missing text is normalised to None
            elif key == "f" and np.isnan(value):
                assert np.isnan(mine[key])
            else:
                assert mine[key] == value and type(mine[key]) is type(value), key


@pytest.mark.parametrize(
    "bad, shown",
    [
        (("A", float("nan")), r"tuple \('A', nan\)"),
        # NaN scalars of other types are missing values for pandas: refused as such
        (np.float32("nan"), None),
        (Decimal("NaN"), None),
    ],
)
def test_uids_that_do_not_survive_a_round_trip_are_refused(bad: object, shown: str | None) -> None:
    source = pd.DataFrame({"uid": pd.Series([("A", 1.0), bad, 3], dtype=object)})
    expected = (
        r"missing values.*positions \[1\]"
        if shown is None
        else rf"pickle round trip.*got {shown} at row position 1"
    )
    with pytest.raises(ValueError, match=expected):
        make_source(source, "uid")


def test_duplicate_column_names_are_refused(client: Client) -> None:
    df = pd.DataFrame([[1, 2, 3, 4]], columns=["a", "b", "a", "b"])
    with pytest.raises(ValueError, match=r"duplicated columns \['a', 'b'\]"):
        make_source(df, "uid")
    with pytest.raises(ValueError, match=r"duplicated columns \['a', 'b'\]"):
        make_source(dd.from_pandas(df, npartitions=1), "uid", scheduler=client)


def test_row_columns_travel_as_arrays_and_give_the_records() -> None:
    df = pd.DataFrame({"i": np.arange(1000), "s": [f"f{i}.nii" for i in range(1000)]})
    src = make_source(df, "uid")
    columns = src.row_columns([5, 999, 0])
    assert isinstance(columns, RowColumns) and len(columns) == 3 and columns.names == ["i", "s", "uid"]
    assert isinstance(columns.values[0], np.ndarray) and columns.values[1] == ["f5.nii", "f999.nii", "f0.nii"]
    back = pickle.loads(pickle.dumps(columns, protocol=5))
    assert (
        back.records()
        == src.records([5, 999, 0])
        == df.assign(uid=range(1000)).iloc[[5, 999, 0]].to_dict("records")
    )
    assert all(type(r["i"]) is int and type(r["uid"]) is int for r in back.records())  # Python scalars
    assert isinstance(src.row_columns(list(range(1000))).values[2], np.ndarray)  # the UIDs too


def test_a_pandas_source_does_not_import_dask_dataframe() -> None:
    code = (
        "import sys, pandas as pd\n"
        "from dask_reservoir._source.make import is_dask_frame, make_source\n"
        "make_source(pd.DataFrame({'v': [1, 2]}), 'uid')\n"
        "assert not is_dask_frame(pd.DataFrame())\n"
        "print('dask.dataframe' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"  # a quarter of a second saved at construction

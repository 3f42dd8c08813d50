"""Column blocks without a cluster: dtypes that travel, shipments, merged dtypes, the paused GC."""

from __future__ import annotations

import gc
import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dask_reservoir._core.blocks import (
    BlockRow,
    ChunkLoaded,
    ColumnBlock,
    as_rows,
    compact,
    gc_paused,
    merge_dtypes,
)
from dask_reservoir._core.records import RowFailed, RowLoaded
from dask_reservoir._worker.chunks import to_block


def test_extension_dtypes_travel_as_numpy_and_come_back() -> None:
    out = pd.DataFrame(
        {
            "uid": ["a", "b", "c"],
            "cat": pd.Categorical(["p", "q", "p"], categories=["q", "p"], ordered=True),
            "s": pd.array(["x", None, "z"], dtype="string"),
            "t": pd.to_datetime([0, 1, 2], unit="D").tz_localize("Asia/Tokyo"),
            "n": pd.array([1, None, 3], dtype="Int64"),
        }
    )
    _, block = to_block(out, pd.Index(["a", "b", "c"]), "uid")
    back = pickle.loads(pickle.dumps(block))
    assert all(v.dtype.kind in "OMf" for v in back.columns.values())  # plain numpy
    frame = ColumnBlock.restore(pd.DataFrame(back.columns), back.dtypes)
    pd.testing.assert_frame_equal(frame, out)


def test_compact_ships_only_the_rows_it_ships() -> None:
    block = ColumnBlock({"x": np.arange(100)})

    class Item:
        def __init__(self, rows: tuple[Any, ...]) -> None:
            self.rows = rows

    items = [Item((BlockRow(block, 90),)), Item((BlockRow(block, 3), BlockRow(block, 4))), Item(({"x": 1},))]
    compact(items)
    assert [[r.as_dict()["x"] if isinstance(r, BlockRow) else r["x"] for r in i.rows] for i in items] == [
        [90],
        [3, 4],
        [1],
    ]
    assert len(items[0].rows[0].block) == 3 and items[0].rows[0].block is items[1].rows[0].block
    assert len(pickle.dumps(items[0].rows[0].block)) < len(pickle.dumps(block))


def test_gc_paused_nests_and_respects_a_disabled_collector() -> None:
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()


def test_categories_of_different_chunks_merge_and_no_value_becomes_missing() -> None:
    known: dict[str, Any] = {}
    merge_dtypes(known, {"c": pd.CategoricalDtype(["low"]), "n": pd.Int64Dtype()})
    merge_dtypes(known, {"c": pd.CategoricalDtype(["high"]), "n": pd.StringDtype()})
    assert list(known["c"].categories) == ["low", "high"]
    assert known["n"] is None  # two other dtypes: left as it comes
    frame = ColumnBlock.restore(
        pd.DataFrame({"c": ["low", "high", "new", None], "n": ["1", "x", None, "2"]}), known
    )
    assert frame["c"].tolist()[:3] == ["low", "high", "new"] and pd.isna(frame["c"].iloc[3])
    assert list(frame["c"].cat.categories) == ["low", "high", "new"]
    assert frame["n"].isna().tolist() == [False, False, True, False] and frame["n"].iloc[1] == "x"


def test_as_rows_splits_a_chunk_per_uid_in_order() -> None:
    block = ColumnBlock({"x": np.array([10, 11, 12, 13, 14])})
    # uid "a" produced 2 rows, "b" none, "c" 3: the rows of each follow those before it
    out = as_rows(ChunkLoaded(["a", "b", "c"], np.array([2, 0, 3]), block, 6.0))
    assert [type(r) for r in out] == [RowLoaded] * 3
    assert [r.uid for r in out] == ["a", "b", "c"]
    assert [[row["x"] for row in r.rows] for r in out] == [[10, 11], [], [12, 13, 14]]
    assert [r.seconds for r in out] == [2.0, 2.0, 2.0]  # the chunk's time shared by its rows
    assert as_rows(ChunkLoaded([], np.array([], dtype=np.int64), ColumnBlock({}), 1.0)) == []
    (single,) = as_rows(ChunkLoaded(["z"], np.array([1]), block, 0.75))  # one row: the whole time
    assert single.seconds == 0.75 and single.rows[0]["x"] == 10
    with pytest.raises(ValueError):  # counts not matching the UIDs: refused, not silently cut
        as_rows(ChunkLoaded(["a"], np.array([1, 1]), block, 1.0))
    failed = [RowFailed("a", "ValueError", "bad")]  # a failed chunk passes through as it is
    assert as_rows(failed) is failed


def test_empty_block_has_no_rows_and_take_keeps_dtypes() -> None:
    assert len(ColumnBlock({})) == 0
    block = ColumnBlock(
        {"c": np.array(["p", "q", "p"], dtype=object)}, {"c": pd.CategoricalDtype(["q", "p"])}
    )
    taken = block.take(np.array([2, 0]))
    assert len(taken) == 2 and taken.dtypes == block.dtypes
    assert taken.row(0)["c"] == "p"


def test_compact_keeps_a_block_whose_every_row_is_shipped() -> None:
    whole = ColumnBlock({"x": np.arange(2)})
    part = ColumnBlock({"x": np.arange(10)})
    items = [
        SimpleNamespace(rows=(BlockRow(whole, 0), BlockRow(part, 8))),
        SimpleNamespace(rows=(BlockRow(whole, 1), {"x": 99})),
    ]
    compact(items)
    # the whole block is shipped as it is; the other is cut down to the one row shipped
    assert items[0].rows[0].block is whole and items[1].rows[0].block is whole
    assert len(items[0].rows[1].block) == 1 and items[0].rows[1].as_dict() == {"x": 8}
    assert items[1].rows[1] == {"x": 99}

"""Vectorized jobs without a cluster: what a batched function may return, and the blocks."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.blocks import BlockRow, ChunkLoaded, ColumnBlock
from dask_reservoir._core.records import RowFailed, RowLoaded
from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._core.store.table import SlotTable
from dask_reservoir._worker.calls import JobSpec
from dask_reservoir._worker.chunks import run_chunk, run_partition_chunk, to_block
from dask_reservoir.errors import JobError

PANDAS_3 = int(pd.__version__.split(".")[0]) >= 3
"""pandas 3 stores strings in its own dtype; pandas 2 as Python objects."""

CHUNK = pd.DataFrame({"uid": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})


def spec_of(function: Any, *, retries: int = 0) -> JobSpec:
    return JobSpec.from_function(function, uid_column="uid", retries=retries, rows_per_job=3, batched=True)


def run(function: Any, *, retries: int = 0) -> Any:
    spec = spec_of(function, retries=retries)
    return run_chunk(spec.options(), spec.payload, CHUNK, list(CHUNK["uid"]))


@given(st.lists(st.integers(0, 5), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_rows_are_grouped_by_source_uid_in_chunk_order(owners: list[int]) -> None:
    uids = pd.Index([f"u{i}" for i in range(6)])
    rng = np.random.default_rng(len(owners))
    produced = rng.permutation(len(owners))
    out = pd.DataFrame({"uid": uids[np.asarray(owners)[produced]], "k": produced})
    counts, block = to_block(out, uids, "uid")
    assert counts.tolist() == np.bincount(owners, minlength=6).tolist()
    assert len(block) == len(owners)
    got = block.columns["uid"].tolist()
    assert got == sorted(got, key=uids.get_loc)  # grouped, in chunk order
    # each UID keeps its rows in the order the function returned them (a stable grouping)
    for uid in set(got):
        mine = [k for u, k in zip(out["uid"], out["k"], strict=True) if u == uid]
        assert [k for u, k in zip(got, block.columns["k"].tolist(), strict=True) if u == uid] == mine


def test_a_dict_of_arrays_and_2d_columns() -> None:
    out = run(lambda df: {"uid": df["uid"].to_numpy(), "img": np.ones((len(df), 2, 2), np.float32)})
    assert isinstance(out, ChunkLoaded)
    assert out.counts.tolist() == [1, 1, 1]
    assert out.block.columns["img"].shape == (3, 2, 2)


def test_zero_or_several_rows_per_uid() -> None:
    out = run(lambda df: pd.DataFrame({"uid": ["c", "a", "c"], "y": [1, 2, 3]}))
    assert out.uids == ["a", "b", "c"]
    assert out.counts.tolist() == [1, 0, 2]
    assert out.block.columns["y"].tolist() == [2, 1, 3]


@pytest.mark.parametrize(
    ("function", "words"),
    [
        (lambda df: 3.0, "got float"),
        (lambda df: [{"uid": "a", "y": 1}], "got list"),
        (lambda df: pd.DataFrame({"y": [1, 2, 3]}), "UID column 'uid', which it did not return"),
        (lambda df: pd.DataFrame({"uid": ["a", "zz"], "y": [1, 2]}), "not in the chunk, such as ['zz']"),
        (lambda df: {"uid": ["a", "b"], "y": [1, 2, 3]}, "equal lengths, got {'uid': 2, 'y': 3}"),
        (lambda df: pd.DataFrame([[1, 2]], columns=["uid", "uid"]), "duplicate columns ['uid']"),
        (lambda df: {"uid": ["a"], "y": 5}, "column 'y' is a scalar"),
        (lambda df: {"uid": ["a"], 3: [1]}, "column names must be str, got 3"),
    ],
)
def test_a_wrong_result_fails_every_uid_of_the_chunk_naming_function_and_uids(
    function: Any, words: str
) -> None:
    out = run(function)
    assert isinstance(out, list) and len(out) == 3
    assert all(isinstance(o, RowFailed) for o in out)
    assert [o.uid for o in out] == ["a", "b", "c"]
    message = out[0].message
    assert words in message, message
    assert "<lambda>" in message and "['a', 'b', 'c']" in message and "batched=True" in message
    assert isinstance(out[0].exception, JobError)


def test_a_raising_function_is_retried_then_fails_the_chunk() -> None:
    calls = []

    def flaky(df: pd.DataFrame) -> pd.DataFrame:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("disk hiccup")
        return df

    assert isinstance(run(flaky, retries=1), ChunkLoaded)

    def broken(df: pd.DataFrame) -> pd.DataFrame:
        raise OSError("gone")

    failed = run(broken, retries=2)
    assert [o.exc_type for o in failed] == ["OSError"] * 3
    assert "gone" in failed[0].message and "broken" in failed[0].traceback


def test_the_function_gets_the_source_dtypes_and_cannot_change_the_source() -> None:
    source = pd.DataFrame(
        {"uid": ["a", "b"], "c": pd.Categorical(["x", "y"]), "n": pd.array([1, None], "Int64")}
    )

    def look(df: pd.DataFrame) -> pd.DataFrame:
        kinds = ",".join(df.dtypes.astype(str).tolist())
        df["n"] = 0  # changes its own copy
        return pd.DataFrame({"uid": df["uid"], "kinds": [kinds] * len(df)})

    spec = spec_of(look)
    out = run_chunk(spec.options(), spec.payload, source, ["a", "b"])
    assert out.block.columns["kinds"][0].split(",")[1:] == ["category", "Int64"]
    assert source["n"].isna().tolist() == [False, True]


def test_partition_chunks_keep_the_order_of_refs_and_check_uids() -> None:
    parts = {0: pd.DataFrame({"uid": ["a", "b"], "x": [1, 2]}), 1: pd.DataFrame({"uid": ["c"], "x": [3]})}
    spec = spec_of(lambda df: df.assign(y=df["x"] * 10))
    out = run_partition_chunk(spec.options(check_uid=True), spec.payload, parts, [(1, 0), (0, 0)], ["c", "a"])
    assert out.uids == ["c", "a"] and out.block.columns["y"].tolist() == [30, 10]
    # the row read for "b" has another UID: that row fails, the others load, in refs' order
    mixed = run_partition_chunk(
        spec.options(check_uid=True), spec.payload, parts, [(0, 0), (0, 1), (1, 0)], ["a", "zz", "c"]
    )
    assert [type(o).__name__ for o in mixed] == ["RowLoaded", "RowFailed", "RowLoaded"]
    assert "expected UID 'zz'" in mixed[1].message
    assert mixed[2] == RowLoaded("c", [mixed[2].rows[0]], mixed[2].seconds) and mixed[2].rows[0]["y"] == 30


def test_the_store_writes_a_block_with_one_assignment_per_column_and_evicts_as_put() -> None:
    n = 50
    block = ColumnBlock(
        {"uid": np.arange(n), "v": np.arange(n) * 2.0, "name": np.array([f"n{i}" for i in range(n)])}
    )
    store = ReservoirStore(20)
    entries = [Entry(i, i, (BlockRow(block, i),)) for i in range(n)]
    for start in range(0, 30, 10):
        assert store.put_many(entries[start : start + 10]) == []
    snap = store.snapshot()  # pins the 20 entries: the next puts must not write their slots
    pinned = [snap.rows_at(i) for i in range(len(snap))]
    assert store.put_many(entries[30:40]) == []
    assert [snap.rows_at(i) for i in range(len(snap))] == pinned
    assert store.pinned_retired == 10
    snap.release()
    assert store.put_many(entries[40:]) == []
    assert store.uids() == list(range(30, 50))
    assert [store.rows_of(store.get(u))[0]["v"] for u in (30, 49)] == [60.0, 98.0]
    assert store.rows_of(store.get(31))[0]["name"] == "n31"
    batch = store.table.gather(store.snapshot().handles)  # type: ignore[union-attr]
    assert batch["uid"].tolist() == list(range(30, 50)) and batch["name"].dtype.kind == "U"
    assert batch["v"].tolist() == [2.0 * u for u in range(30, 50)]
    assert store.evicted == 30 and store.ingested == 50


def test_a_block_unlike_the_table_is_put_row_by_row_with_the_warning() -> None:
    store = ReservoirStore(4)
    store.put(Entry("first", 0, ({"v": np.float32(1)},)))
    block = ColumnBlock({"v": np.array([2.0, 3.0])})  # float64, the table holds float32
    with pytest.warns(UserWarning, match="column 'v' changed"):
        assert (
            store.put_many([Entry("a", 1, (BlockRow(block, 0),)), Entry("b", 2, (BlockRow(block, 1),))]) == []
        )
    assert store.rows_of(store.get("b"))[0]["v"] == 3.0


def test_block_schema() -> None:
    schema = SlotTable.block_columns(
        {"a": np.zeros(3), "b": np.zeros((3, 4), np.int8), "c": np.array([None] * 3)}
    )
    assert schema is not None
    assert [c.describe() for c in schema.values()] == [
        "float64 numpy scalar",
        "int8 array of shape (4,)",
        "object",
    ]
    assert SlotTable.block_columns({}) is None


def test_a_block_larger_than_the_room_stores_what_fits_then_raises() -> None:
    from dask_reservoir._core.store import NoRoomError

    block = ColumnBlock({"v": np.arange(8) * 1.0})
    entries = [Entry(i, i, (BlockRow(block, i),)) for i in range(8)]
    store = ReservoirStore(4)  # 4 + 2 slots
    store.put_many(entries[:4])
    snap = store.snapshot()  # pins the 4: 2 puts fit
    with pytest.raises(NoRoomError):
        store.put_many(entries[4:])
    assert store.uids() == [2, 3, 4, 5]
    assert [store.rows_of(store.get(u))[0]["v"] for u in (4, 5)] == [4.0, 5.0]
    assert [snap.rows_at(i)[0]["v"] for i in range(4)] == [0.0, 1.0, 2.0, 3.0]
    snap.release()


def test_a_raising_chunk_names_the_function_and_uids_and_keeps_only_exceptions_that_travel() -> None:
    import threading

    def featurize(df: pd.DataFrame) -> pd.DataFrame:
        raise ValueError("cannot open", threading.Lock())

    failed = run(featurize)
    assert [o.exc_type for o in failed] == ["ValueError"] * 3
    assert "featurize" in failed[0].message and "['a', 'b', 'c']" in failed[0].message
    assert failed[0].exception is None  # a lock inside: it could not cross a process boundary
    pickle.loads(pickle.dumps(failed))  # what the task returns travels


def test_object_columns_of_equal_arrays_are_stacked_and_others_kept() -> None:
    from dask_reservoir._worker.chunks import _stacked

    same = np.empty(3, dtype=object)
    same[:] = [np.full((2,), i, np.float32) for i in range(3)]
    stacked = _stacked(same)
    assert stacked.shape == (3, 2) and stacked.dtype == np.float32 and stacked[2].tolist() == [2.0, 2.0]
    for odd in (
        [np.zeros(2), np.zeros(3)],
        [np.zeros(2, np.float32), np.zeros(2, np.float64)],
        [np.zeros(2), "x"],
    ):
        column = np.empty(len(odd), dtype=object)
        column[:] = odd
        assert _stacked(column) is column
    assert _stacked(np.empty(0, dtype=object)).shape == (0,)
    strings = np.array(["a", "b"], dtype=object)
    assert _stacked(strings) is strings
    assert _stacked(np.arange(3)).dtype == np.int64


def test_a_dict_with_series_keeps_their_dtypes_whatever_their_index() -> None:
    chunk_uids = pd.Index(["a", "b"])
    series = pd.Series(pd.Categorical(["x", "y"]), index=[10, 20])
    counts, block = to_block({"uid": pd.Series(["b", "a"], index=[5, 6]), "c": series}, chunk_uids, "uid")
    assert counts.tolist() == [1, 1]
    assert block.columns["uid"].tolist() == ["a", "b"] and block.columns["c"].tolist() == ["y", "x"]
    assert str(block.dtypes["c"]) == "category"
    assert ("uid" in block.dtypes) == PANDAS_3  # the str dtype of pandas 3; pandas 2 strings are objects
    with pytest.raises(ValueError, match=r"column names must be str, got 3 \(int\)"):
        to_block({"uid": ["a"], 3: [1]}, chunk_uids, "uid")


def test_tasks_receive_their_arguments_wrapped_as_the_runner_sends_them() -> None:
    from dask_reservoir._worker.wire import Opaque

    spec = spec_of(lambda df: df.assign(y=df["x"] + 1))
    out = run_chunk(spec.options(), spec.payload, Opaque(CHUNK), Opaque(["a", "b", "c"]))
    assert out.uids == ["a", "b", "c"] and out.block.columns["y"].tolist() == [2.0, 3.0, 4.0]
    parts = {0: pd.DataFrame({"uid": ["a", "b"], "x": [1, 2]})}
    out = run_partition_chunk(
        spec.options(check_uid=True), spec.payload, parts, Opaque([(0, 1), (0, 0)]), Opaque(["b", "a"])
    )
    assert out.uids == ["b", "a"] and out.block.columns["y"].tolist() == [3, 2]


def test_retries_zero_is_one_call_and_job_timeout_applies_to_the_chunk(tmp_path: Any) -> None:
    import time as time_module

    def calls_in(path: Any) -> Any:
        def second_call_works(df: pd.DataFrame) -> pd.DataFrame:  # counts its calls in a file
            calls = int(path.read_text() or 0) + 1 if path.exists() else 1
            path.write_text(str(calls))
            if calls == 1:
                raise OSError("first call fails")
            return df.assign(calls=calls)

        return second_call_works

    assert isinstance(run(calls_in(tmp_path / "once"), retries=0), list)  # one call: it failed
    assert (tmp_path / "once").read_text() == "1"
    loaded = run(calls_in(tmp_path / "twice"), retries=1)
    assert loaded.block.columns["calls"].tolist() == [2, 2, 2]

    def quick(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(y=1)

    def slow(df: pd.DataFrame) -> pd.DataFrame:
        time_module.sleep(2)
        return df

    fast = JobSpec.from_function(quick, uid_column="uid", retries=0, rows_per_job=3, batched=True, timeout=30)
    assert run_chunk(fast.options(), fast.payload, CHUNK, ["a", "b", "c"]).block.columns["y"].tolist() == [
        1,
        1,
        1,
    ]
    late = JobSpec.from_function(slow, uid_column="uid", retries=0, rows_per_job=3, batched=True, timeout=0.2)
    failed = run_chunk(late.options(), late.payload, CHUNK, ["a", "b", "c"])
    assert [f.exc_type for f in failed] == ["JobTimeoutError"] * 3


def test_a_value_that_cannot_be_served_rejects_only_its_own_entry() -> None:
    import threading

    names = np.empty(3, dtype=object)
    names[:] = ["a", threading.Lock(), "c"]  # a lock cannot be copied into batches
    block = ColumnBlock({"name": names})
    store = ReservoirStore(4)
    rejected = store.put_many([Entry(u, i, (BlockRow(block, i),)) for i, u in enumerate("xyz")])
    assert [(entry.uid, exc.uid, exc.column) for entry, exc in rejected] == [("y", "y", "name")]
    assert store.uids() == ["x", "z"]


_CHUNK_BUFFER = np.zeros(8)


def _into_one_buffer(chunk: pd.DataFrame) -> dict[str, Any]:
    out = _CHUNK_BUFFER[: len(chunk)]
    out[:] = chunk["x"].to_numpy()
    return {"uid": chunk["uid"].to_numpy(), "y": out}


def test_a_chunk_run_in_the_clients_process_hands_over_copies() -> None:
    """A threaded cluster passes results by reference: the function's next chunk overwrote them."""
    spec = JobSpec.from_function(_into_one_buffer, uid_column="uid", retries=0, rows_per_job=2, batched=True)

    def two_chunks(options: Any) -> list[float]:
        first = run_chunk(
            options, spec.payload, pd.DataFrame({"uid": ["a", "b"], "x": [1.0, 2.0]}), ["a", "b"]
        )
        run_chunk(options, spec.payload, pd.DataFrame({"uid": ["c", "d"], "x": [3.0, 4.0]}), ["c", "d"])
        assert isinstance(first, ChunkLoaded)
        return list(first.block.columns["y"].tolist())

    assert two_chunks(spec.options()) == [1.0, 2.0]
    # from another process the result is serialized when the task ends: not copied here, so shared
    assert two_chunks(replace(spec.options(), client_pid=None)) == [3.0, 4.0]

"""put_all: finished rows into the store, a finished task's block at once (pure, no cluster)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.blocks import BlockRow, ColumnBlock, CompletedBlock
from dask_reservoir._core.records import Completed
from dask_reservoir._core.store import Entry, NoRoomError, ReservoirStore
from dask_reservoir._core.store.runs import block_run, put_all


def test_block_runs_group_the_rows_of_one_block() -> None:
    one, two = ColumnBlock({"x": np.arange(3)}), ColumnBlock({"x": np.arange(2)})
    entries = [Entry(i, i, (BlockRow(one, i),)) for i in range(3)]
    entries += [Entry(3, 3, (BlockRow(two, 0),)), Entry(4, 4, ({"x": 1},)), Entry(5, 5, ())]
    assert block_run(entries, 0, limit=10) == (3, one)
    assert block_run(entries, 1, limit=1) == (2, one)
    assert block_run(entries, 3, limit=10) == (4, two)
    assert block_run(entries, 4, limit=10) == (5, None) and block_run(entries, 5, limit=10) == (6, None)
    two_rows = Entry(6, 6, (BlockRow(one, 0), BlockRow(one, 1)))
    assert block_run([two_rows], 0, limit=10) == (1, None)  # two rows: kept as rows


def finished(block: ColumnBlock, uids: list[int], *, at: float = 5.0) -> list[Completed]:
    return [Completed(uid, uid, (BlockRow(block, k),), 0.25 * k, at + k) for k, uid in enumerate(uids)]


class Counting(ReservoirStore):
    """A store counting its put() and put_block() calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def put(self, entry: Entry) -> list[Entry]:
        self.calls.append("put")
        return super().put(entry)

    def put_block(self, *args: Any, **kwargs: Any) -> bool:
        stored = super().put_block(*args, **kwargs)
        self.calls.append(f"block:{len(args[0])}:{stored}")
        return stored


def test_a_finished_task_goes_in_as_one_block_keeping_each_rows_times() -> None:
    block = ColumnBlock({"sample_uid": np.arange(10, 14), "x": np.arange(4) * 1.5})
    store = Counting(8, uid_column="sample_uid")
    stored, rejected = put_all(store, finished(block, [10, 11, 12, 13]))
    assert (stored, rejected, store.calls) == (4, [], ["block:4:True"])
    entry = store.get(12)
    assert entry is not None and (entry.position, entry.loaded_at, entry.load_seconds) == (12, 7.0, 0.5)
    assert store.rows_of(entry)[0]["x"] == 3.0 and store.uids() == [10, 11, 12, 13]


def test_runs_are_cut_at_capacity_and_the_rest_goes_in_one_by_one() -> None:
    block = ColumnBlock({"sample_uid": np.arange(5), "x": np.arange(5)})
    store = Counting(2, uid_column="sample_uid")
    items = [*finished(block, [0, 1, 2, 3, 4]), Completed(9, 9, ({"sample_uid": 9, "x": 9},), 0.0, 0.0)]
    items.append(Completed(8, 8, (), 0.0, 0.0))  # an empty result: nothing stored, nothing refused
    stored, rejected = put_all(store, items)
    assert stored == 6 and rejected == []
    assert store.calls == ["block:2:True", "block:2:True", "block:1:True", "put"]
    assert store.uids() == [4, 9] and (store.evicted, store.ingested) == (4, 6)


def test_rows_that_cannot_be_stored_are_refused_one_by_one_with_the_reason() -> None:
    values = np.empty(3, dtype=object)
    values[:] = [[1], threading.Lock(), [3]]  # a lock cannot be copied into a batch
    block = ColumnBlock({"x": values})
    store = Counting(4)
    items = finished(block, [0, 1, 2])
    stored, rejected = put_all(store, items)
    assert store.calls == ["block:3:False", "put", "put", "put"]  # not servable at once: each alone
    assert stored == 2 and [item.uid for item, _ in rejected] == [1]
    assert "UID 1" in str(rejected[0][1]) and store.uids() == [0, 2]


def test_a_run_the_store_has_no_room_for_goes_in_until_room_runs_out() -> None:
    block = ColumnBlock({"x": np.arange(3)})
    store = ReservoirStore(2)  # 2 + 1 slots
    store.put(Entry(7, 7, ({"x": 7},)))
    store.put(Entry(8, 8, ({"x": 8},)))
    snapshot = store.snapshot()  # pins both
    with pytest.raises(NoRoomError):
        put_all(store, finished(block, [0, 1]))  # one fits, the second finds every slot taken
    assert store.uids() == [8, 0]
    snapshot.release()


def waiting_block(uids: list[int], *, first_row: int = 0) -> CompletedBlock:
    n = len(uids)
    block = ColumnBlock(  # packed from Python ints, as a row function's rows are
        {"sample_uid": np.array(uids), "x": np.array(uids) * 10}, python=frozenset({"sample_uid", "x"})
    )
    return CompletedBlock(list(uids), np.array(uids), block, np.arange(n), np.full(n, 0.5), 9.0)


def test_a_waiting_block_goes_in_at_once_in_pieces_of_capacity_in_order() -> None:
    store = Counting(3, uid_column="sample_uid")
    alone = Completed(20, 20, ({"sample_uid": 20, "x": 200},), 0.0, 1.0)
    stored, rejected = put_all(store, [alone, waiting_block([0, 1, 2, 3, 4])])
    assert (stored, rejected) == (6, [])
    assert store.calls == ["put", "block:3:True", "block:2:True"]  # the row before the block first
    assert store.uids() == [2, 3, 4] and store.evicted == 3
    entry = store.get(3)
    assert entry is not None and (entry.loaded_at, entry.load_seconds) == (9.0, 0.5)
    assert store.rows_of(entry)[0]["x"] == 30


def test_a_waiting_block_that_cannot_go_in_at_once_goes_in_row_by_row() -> None:
    store = Counting(4, uid_column="sample_uid")
    store.put(Entry(7, 1, ({"sample_uid": 7, "x": 70},)))  # position 1 held by another UID
    with pytest.raises(ValueError, match="position 1 holds UID 7, got UID 1"):
        put_all(store, [waiting_block([0, 1, 2])])
    assert store.uids() == [7]  # refused before any change
    other = Counting(4, uid_column="sample_uid")
    other.put(Entry(9, 9, ({"sample_uid": 9, "x": np.zeros(2)},)))  # another table schema
    with pytest.warns(UserWarning, match="column 'x' changed from float64 array"):
        stored, rejected = put_all(other, [waiting_block([0, 1])])
    assert stored == 2 and rejected == [] and other.calls == ["put", "block:2:False", "put", "put"]
    assert other.uids() == [9, 0, 1] and other.rows_of(other.get(1))[0]["x"] == 10  # type: ignore[arg-type]

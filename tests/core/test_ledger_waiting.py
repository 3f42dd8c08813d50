"""Entries waiting to be taken, shipped, held back, and the UIDs out, without a cluster."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pytest

from dask_reservoir._core.blocks import BlockRow, ChunkLoaded, ColumnBlock, CompletedBlock, entry_count
from dask_reservoir._core.ledger.waiting import Waiting, chunk_entries
from dask_reservoir._core.records import Completed


def entry(uid: Hashable) -> Completed:
    return Completed(uid, 0, (), 0.0, 0.0)


def out_with(waiting: Waiting, *uids: Hashable) -> Waiting:
    waiting.submitted(uids)
    waiting.numbered(uids)
    return waiting


def state(waiting: Waiting) -> tuple[bool, bool, int, int]:
    """``(has_entries, busy, occupied, entries)``."""
    return waiting.has_entries, waiting.busy, waiting.occupied, waiting.entries


def test_a_new_waiting_holds_nothing() -> None:
    waiting = Waiting()
    assert not waiting.has_entries and not waiting.busy
    assert (waiting.occupied, waiting.entries) == (0, 0) and set(waiting.out) == set()
    assert waiting.take() == [] and waiting.ship() == [] and waiting.pending() == []


def test_entries_are_taken_oldest_first_up_to_the_limit() -> None:
    waiting = out_with(Waiting(), "a", "b", "c")
    for uid in "abc":
        waiting.arrived(uid, entry(uid))
    assert state(waiting) == (True, True, 3, 3)
    assert [c.uid for c in waiting.take(2)] == ["a", "b"]
    assert set(waiting.out) == {"c"} and state(waiting) == (True, True, 1, 1)
    assert waiting.take(0) == []
    assert [c.uid for c in waiting.take(5)] == ["c"]
    assert state(waiting) == (False, False, 0, 0) and set(waiting.out) == set()


def test_a_row_with_no_entry_stays_out_until_dropped() -> None:
    waiting = out_with(Waiting(), "a", "b")
    waiting.arrived("a", None)  # cancelled: no entry, still out
    assert not waiting.has_entries and set(waiting.out) == {"a", "b"}
    waiting.dropped("b")
    assert set(waiting.out) == {"a"} and waiting.occupied == 0


def test_shipped_entries_stay_out_until_acknowledged() -> None:
    waiting = out_with(Waiting(), "a", "b", "c")
    for uid in "abc":
        waiting.arrived(uid, entry(uid))
    assert [c.uid for c in waiting.ship(2)] == ["a", "b"]
    assert not waiting.take(0)
    assert state(waiting) == (True, True, 3, 1) and set(waiting.out) == {"a", "b", "c"}
    waiting.take()
    assert state(waiting) == (False, True, 2, 0)
    waiting.acknowledge(["a"])
    assert waiting.occupied == 1 and set(waiting.out) == {"b"}
    waiting.acknowledge(["b", "x"])  # more than shipped: none left
    assert waiting.occupied == 0 and not waiting.busy and set(waiting.out) == set()


def test_pending_lists_the_uids_out_in_submission_order() -> None:
    waiting = Waiting()
    waiting.submitted(["c", "a"])
    waiting.numbered(["c"])
    waiting.numbered(["a"])
    waiting.submitted(["b"])  # chosen, not yet numbered: last
    assert waiting.pending() == ["c", "a", "b"]


def test_deterministic_entries_wait_for_those_submitted_before() -> None:
    waiting = out_with(Waiting(deterministic=True), "a", "b", "c")
    waiting.arrived("b", entry("b"))
    waiting.dropped("c")
    assert not waiting.has_entries and (waiting.occupied, waiting.entries) == (2, 1)
    waiting.arrived("a", entry("a"))
    assert [c.uid for c in waiting.take()] == ["a", "b"] and waiting.occupied == 0


def test_a_chunk_arrives_in_order_or_at_once() -> None:
    waiting = out_with(Waiting(), "a", "b")
    waiting.arrived_chunk(["b", "a"], [entry("b"), entry("a")])
    assert [c.uid for c in waiting.take()] == ["b", "a"]
    det = out_with(Waiting(deterministic=True), "a", "b", "c")
    det.arrived_chunk(["b", "c"], [entry("b"), entry("c")])
    assert not det.has_entries and det.entries == 2
    det.arrived_chunk(["a"], [entry("a")])
    assert [c.uid for c in det.take()] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        det.arrived_chunk(["x", "y"], [entry("x")])


def test_clear_drops_everything() -> None:
    waiting = out_with(Waiting(deterministic=True), "a", "b", "c")
    waiting.arrived("b", entry("b"))
    waiting.arrived("a", entry("a"))
    waiting.ship(1)
    waiting.clear()
    assert (waiting.occupied, waiting.entries) == (0, 0) and set(waiting.out) == set()
    assert not waiting.busy and waiting.take() == []


# ---------------------------------------------------------------------- chunk entries


def chunk(uids: list[Hashable], counts: list[int], seconds: float = 1.0) -> ChunkLoaded:
    rows = sum(counts)
    return ChunkLoaded(uids, np.array(counts), ColumnBlock({"x": np.arange(rows)}), seconds)


def test_one_row_per_uid_refers_to_the_block_row_by_row() -> None:
    loaded = chunk(["a", "b"], [1, 1], seconds=3.0)
    items = chunk_entries(["a", "b"], [5, 7], loaded, now=9.0)
    assert items is not None
    assert [(c.uid, c.position, c.load_seconds, c.loaded_at) for c in items] == [
        ("a", 5, 1.5, 9.0),
        ("b", 7, 1.5, 9.0),
    ]
    assert [c.rows for c in items] == [(BlockRow(loaded.block, 0),), (BlockRow(loaded.block, 1),)]
    assert all(type(r) is BlockRow and r.block is loaded.block for c in items for r in c.rows)


def test_several_rows_per_uid_follow_the_counts() -> None:
    loaded = chunk([1, 2, 3], [2, 0, 3], seconds=6.0)
    items = chunk_entries([1, 2, 3], [0, 1, 2], loaded, now=0.0)
    assert items is not None
    assert [[r.at for r in c.rows] for c in items] == [[0, 1], [], [2, 3, 4]]
    assert [c.load_seconds for c in items] == [2.0, 2.0, 2.0]


def test_counts_of_one_with_a_block_of_other_length_use_the_counts() -> None:
    loaded = ChunkLoaded(["a", "b"], np.array([1, 1]), ColumnBlock({"x": np.arange(3)}), 1.0)
    items = chunk_entries(["a", "b"], [0, 1], loaded, now=0.0)
    assert items is not None and [[r.at for r in c.rows] for c in items] == [[0], [1]]


def test_an_empty_chunk_gives_no_entries() -> None:
    assert chunk_entries([], [], chunk([], [], seconds=2.0), now=0.0) == []


@pytest.mark.parametrize(
    "reported",
    [["b", "a"], ["a"], ["a", "b", "c"], ["a", -2]],
    ids=["another order", "fewer", "more", "equal hash, other value"],
)
def test_uids_reported_otherwise_give_none(reported: list[Hashable]) -> None:
    loaded = chunk(reported, [1] * len(reported))
    assert chunk_entries(["a", -1], [0, 1], loaded, now=0.0) is None


def test_uids_reported_equal_are_the_same() -> None:
    loaded = chunk([1.0, "b"], [1, 1])
    items = chunk_entries([1, "b"], [0, 1], loaded, now=0.0)
    assert items is not None and [c.uid for c in items] == [1, "b"]  # the submitted UIDs


def test_several_rows_per_uid_keep_uid_position_and_finish_time() -> None:
    loaded = chunk(["a", "b"], [2, 1], seconds=4.0)
    items = chunk_entries(["a", "b"], [3, 8], loaded, now=7.5)
    assert items is not None
    assert [(c.uid, c.position, c.load_seconds, c.loaded_at) for c in items] == [
        ("a", 3, 2.0, 7.5),
        ("b", 8, 2.0, 7.5),
    ]


def test_a_chunk_of_one_uid_gets_all_of_the_chunk_time() -> None:
    items = chunk_entries(["a"], [0], chunk(["a"], [1], seconds=3.0), now=0.0)
    assert items is not None and [c.load_seconds for c in items] == [3.0]


def test_a_block_as_long_as_the_uids_still_follows_uneven_counts() -> None:
    # two rows for "a", none for "b": the block has as many rows as there are UIDs
    items = chunk_entries(["a", "b"], [0, 1], chunk(["a", "b"], [2, 0]), now=0.0)
    assert items is not None and [[r.at for r in c.rows] for c in items] == [[0, 1], []]


# ---------------------------------------------------------------- a task's rows waiting as one block
def task_block(uids: list[str], first: int = 0) -> CompletedBlock:
    block = ColumnBlock({"x": np.arange(first, first + len(uids))})
    n = len(uids)
    return CompletedBlock(uids, np.arange(first, first + n), block, np.arange(n), np.full(n, 0.5), 3.0)


def test_a_task_block_waits_as_one_item_and_is_split_at_the_limit() -> None:
    waiting = out_with(Waiting(), "a", "b", "c", "d", "e")
    waiting.arrived_block(task_block(["a", "b", "c"]))
    waiting.arrived("d", entry("d"))
    assert state(waiting) == (True, True, 4, 4)
    first = waiting.take(2)
    assert len(first) == 1 and isinstance(first[0], CompletedBlock) and first[0].uids == ["a", "b"]
    assert sorted(waiting.out) == ["c", "d", "e"] and state(waiting) == (True, True, 2, 2)
    rest = waiting.take()
    assert isinstance(rest[0], CompletedBlock) and rest[0].uids == ["c"] and rest[0].positions.tolist() == [2]
    assert [type(i).__name__ for i in rest] == ["CompletedBlock", "Completed"] and entry_count(rest) == 2
    assert sorted(waiting.out) == ["e"] and state(waiting) == (False, False, 0, 0)


def test_a_shipped_block_travels_row_by_row() -> None:
    waiting = out_with(Waiting(), "a", "b", "c")
    waiting.arrived_block(task_block(["a", "b", "c"], first=10))
    shipped = waiting.ship(2)
    assert [(c.uid, c.position, c.rows[0].at, c.load_seconds, c.loaded_at) for c in shipped] == [
        ("a", 10, 0, 0.5, 3.0),
        ("b", 11, 1, 0.5, 3.0),
    ]
    assert waiting.occupied == 3 and sorted(waiting.out) == ["a", "b", "c"]  # shipped: still out
    waiting.acknowledge(["a", "b"])
    assert waiting.occupied == 1 and [c.uid for c in waiting.ship()] == ["c"]


def test_deterministic_rows_never_wait_as_a_block() -> None:
    waiting = Waiting(deterministic=True)
    assert waiting.deterministic and not Waiting().deterministic
    with pytest.raises(RuntimeError, match="row by row"):
        waiting.arrived_block(task_block(["a"]))


def test_clear_forgets_blocks_too() -> None:
    waiting = out_with(Waiting(), "a", "b")
    waiting.arrived_block(task_block(["a", "b"]))
    waiting.clear()
    assert state(waiting) == (False, False, 0, 0) and waiting.take() == []

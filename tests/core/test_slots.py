"""Columnar slot table and the store's gathered batches (pure, hypothesis)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_reservoir._core.store.table as table_module
from dask_reservoir import collate_rows
from dask_reservoir._core.store import UNLIMITED_ROOM, Entry, NoRoomError, ReservoirStore
from dask_reservoir._core.store.slots import SlotPool
from dask_reservoir._core.store.table import Column, SlotTable, StoreError, describe_value
from dask_reservoir._runtime.batches import BatchIterator


def row(uid: int, value: float = 0.0) -> dict:
    return {
        "sample_uid": uid,
        "image": np.full((2, 3), value, np.float32),
        "label": uid % 3,
        "name": f"n{uid}",
    }


def test_columns_inferred() -> None:
    table = SlotTable.infer(row(1), size=2)
    assert table is not None
    assert table.columns["image"] == Column("array", np.dtype(np.float32), (2, 3))
    assert table.columns["label"] == Column("scalar", np.dtype(np.int64), python=True)
    assert table.columns["name"].kind == "object"
    assert SlotTable.infer({1: 2}, size=2) is None


@pytest.mark.parametrize(
    "value, fits",
    [
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float32), "label": 1, "name": "x"}, True),
        ({"sample_uid": 1, "image": np.zeros((2, 4), np.float32), "label": 1, "name": "x"}, False),
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float64), "label": 1, "name": "x"}, False),
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float32), "label": 1.5, "name": "x"}, False),
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float32), "label": np.int64(1), "name": "x"}, False),
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float32), "label": 2**70, "name": "x"}, False),
        ({"sample_uid": 1, "image": np.zeros((2, 3), np.float32), "label": 1}, False),
    ],
)
def test_fits(value: dict, fits: bool) -> None:
    table = SlotTable.infer(row(0), size=2)
    assert table is not None and table.fits(value) is fits


def test_store_slots_rows_and_gathers_like_collate() -> None:
    store = ReservoirStore(8)
    for uid in range(5):
        store.put(Entry(uid, uid, (row(uid, uid),)))
    assert store.table is not None and all(e.slot is not None and e.rows == () for e in store)
    snap = store.snapshot()
    assert snap.all_slotted
    batches = list(BatchIterator(snap, np.array([4, 0, 2]), batch_size=2, drop_last=False))
    expected = collate_rows([row(4, 4), row(0, 0)])
    assert batches[0].keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(batches[0][key], expected[key])
        assert batches[0][key].dtype == expected[key].dtype
    assert (
        store.rows_of(store.get(3))[0]["label"] == 0 and type(store.rows_of(store.get(3))[0]["label"]) is int
    )
    assert [e.times_served for e in snap.entries] == [1, 0, 1, 0, 1]


def test_mixed_store_falls_back_to_rows() -> None:
    store = ReservoirStore(4)
    store.put(Entry(0, 0, (row(0),)))
    store.put(Entry(1, 1, ({"sample_uid": 1, "other": 5},)))  # another schema: kept as rows
    store.put(Entry(2, 2, (row(2), row(2))))  # several rows: kept as rows
    snap = store.snapshot()
    assert not snap.all_slotted and snap.slots.tolist()[1:] == [-1, -1]
    it = BatchIterator(snap, np.array([0, 2]), batch_size=2, drop_last=False)
    assert next(it)["sample_uid"].tolist() == [0, 2, 2]


def test_live_snapshot_is_not_overwritten_and_throttles_puts() -> None:
    store = ReservoirStore(4)  # 4 + 2 slots
    for uid in range(4):
        store.put(Entry(uid, uid, (row(uid, uid),)))
    snap = store.snapshot()
    it = BatchIterator(snap, np.arange(4), batch_size=1, drop_last=False)
    assert store.room() == 2
    put = 0
    while store.room() > 0:  # evict pinned entries until every slot is held or retired
        store.put(Entry(4 + put, 4 + put, (row(4 + put, 4 + put),)))
        put += 1
    assert put == 2 and store.pinned_retired == 2 and store.slots_used == 6
    with pytest.raises(NoRoomError, match=r"all 6 slots .* 2 removed entries that 1 live snapshots"):
        store.put(Entry(99, 99, (row(99),)))
    assert [int(b["image"][0, 0, 0]) for b in it] == [0, 1, 2, 3]
    assert store.live_snapshots == 0 and store.pinned_retired == 0  # released once exhausted
    assert store.room() == UNLIMITED_ROOM
    for uid in range(100, 140):  # refreshing resumes, reusing the freed slots
        store.put(Entry(uid, uid, (row(uid, uid),)))
    assert store.slots_used == 6


def test_released_slots_are_reused_without_growth() -> None:
    store = ReservoirStore(4)
    for uid in range(4):
        store.put(Entry(uid, uid, (row(uid),)))
    for uid in range(4, 2000):
        list(BatchIterator(store.snapshot(), np.arange(4), batch_size=2, drop_last=False))
        store.put(Entry(uid, uid, (row(uid),)))
    assert store.slots_used <= 4 + 1


def test_without_live_snapshots_a_full_store_writes_capacity_plus_one_slots() -> None:
    """Freed slots are reused before never-used ones (the old table wrote capacity + 64)."""
    store = ReservoirStore(2)
    big = np.zeros(100_000, np.uint8)
    written = set()
    for uid in range(200):
        store.put(Entry(uid, uid, ({"x": big},)))
        written.add(store.get(uid).slot)  # type: ignore[union-attr]
    assert len(written) == 3
    assert store.columnar_bytes() == 3 * 100_000


def test_a_held_iterator_bounds_the_table_over_many_epochs() -> None:
    """One iterator kept alive: each epoch ingests what room() allows; slots stay within the pool."""
    store = ReservoirStore(16)  # 16 + 8 slots
    uid = 0
    for _ in range(16):
        store.put(Entry(uid, uid, (row(uid),)))
        uid += 1
    held = iter(BatchIterator(store.snapshot(), np.arange(16), batch_size=4, drop_last=False))
    next(held)
    for _epoch in range(50):
        for _ in range(min(6, store.room())):
            store.put(Entry(uid, uid, (row(uid, uid),)))
            uid += 1
        snap = store.snapshot()
        expected = [float(store.rows_of(e)[0]["image"][0, 0]) for e in snap.entries]
        it = BatchIterator(snap, np.arange(len(snap.entries)), batch_size=16, drop_last=False)
        assert [float(v) for b in it for v in b["image"][:, 0, 0]] == expected
    assert store.slots_used <= 24 and store.table is not None and store.table.written <= 24
    assert store.room() == 0 and store.pinned_retired == 8  # throttled by the held iterator
    del held
    assert store.room() == UNLIMITED_ROOM and store.pinned_retired == 0


def test_abandoned_iterator_releases_on_collection() -> None:
    store = ReservoirStore(2)
    store.put(Entry(0, 0, (row(0),)))
    it = BatchIterator(store.snapshot(), np.arange(1), batch_size=1, drop_last=False)
    assert store.live_snapshots == 1
    del it
    assert store.live_snapshots == 0


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.tuples(st.integers(0, 9), st.booleans()), min_size=1, max_size=80),
    capacity=st.integers(1, 6),
)
def test_snapshots_stay_frozen_under_churn(ops: list[tuple[int, bool]], capacity: int) -> None:
    """Random puts interleaved with snapshots: every live snapshot reads what it saw; puts stop at room 0."""
    store = ReservoirStore(capacity)
    live: list[tuple[BatchIterator, list[float]]] = []
    for step, (uid, take_snapshot) in enumerate(ops):
        if store.room() > 0:
            store.put(Entry(uid, uid, (row(uid, float(step)),)))
        else:
            with pytest.raises(NoRoomError):
                store.put(Entry(uid, uid, (row(uid, float(step)),)))
        if take_snapshot:
            snap = store.snapshot()
            expected = [float(store.rows_of(e)[0]["image"][0, 0]) for e in snap.entries]
            live.append(
                (BatchIterator(snap, np.arange(len(snap.entries)), batch_size=1, drop_last=False), expected)
            )
    for it, expected in live:
        assert [float(b["image"][0, 0, 0]) for b in it] == expected


def test_zero_d_and_non_contiguous_arrays_round_trip() -> None:
    first = {"a": np.array(2.5), "b": np.arange(12.0).reshape(3, 4)[:, ::2]}
    table = SlotTable.infer(first, size=2)
    assert table is not None and table.fits(first)
    table.write(1, first)
    back = table.read_row(1)
    assert isinstance(back["a"], np.ndarray) and back["a"].shape == () and float(back["a"]) == 2.5
    np.testing.assert_array_equal(back["b"], first["b"])


# ---------------------------------------------------------------- what the error messages and columns say


def test_describe_value_names_array_subclasses_and_the_int64_range() -> None:
    assert describe_value(np.ma.zeros(2, np.float32)) == "float32 MaskedArray of shape (2,)"
    assert describe_value(np.zeros((1, 2), np.int8)) == "int8 array of shape (1, 2)"
    for inside in (2**63 - 1, -(2**63), 127, -127, 0):
        assert describe_value(inside) == "Python int", inside
    for outside in (2**63, -(2**63) - 1, 2**64, -(2**64) - 1):
        assert describe_value(outside) == "Python int outside the int64 range", outside
    assert describe_value(float("inf")) == "Python float"
    assert describe_value(True) == "Python bool"


@pytest.mark.parametrize(
    "value, kind", [(2**63 - 1, "scalar"), (-(2**63), "scalar"), (2**63, "object"), (-(2**63) - 1, "object")]
)
def test_python_ints_are_slotted_as_int64_only_within_its_range(value: int, kind: str) -> None:
    column = Column.of(value)
    assert column is not None and column.kind == kind
    store = ReservoirStore(1)
    store.put(Entry(0, 0, ({"v": value},)))
    back = store.rows_of(store.get(0))[0]["v"]  # type: ignore[arg-type]
    assert back == value and type(back) is int


def test_object_arrays_and_array_subclasses_get_no_column() -> None:
    """Object arrays would share their items, subclasses lose their extras: kept as rows."""
    assert Column.of(np.array([1, "x"], dtype=object)) is None
    assert Column.of(np.ma.zeros(2)) is None
    assert SlotTable.infer({"a": np.ma.zeros(2)}, size=2) is None
    store = ReservoirStore(2)
    store.put(Entry(0, 0, ({"a": np.array([[1], "x"], dtype=object)},)))
    assert store.table is None and store.get(0).slot is None  # type: ignore[union-attr]


def test_columns_describe_numpy_and_python_scalars() -> None:
    assert Column.of(np.int8(1)) == Column("scalar", np.dtype(np.int8))
    assert Column.of(np.int8(1)).describe() == "int8 numpy scalar"  # type: ignore[union-attr]
    assert Column.of(np.int64(1)).describe() == "int64 numpy scalar"  # type: ignore[union-attr]
    assert Column.of(np.float64(1)).describe() == "float64 numpy scalar"  # type: ignore[union-attr]
    assert Column.of(1.5).describe() == "Python float"  # type: ignore[union-attr]
    assert Column.of(True).describe() == "Python bool"  # type: ignore[union-attr]
    table = SlotTable.infer({"y": np.int8(1)}, size=1)
    assert table is not None
    assert table.changes({"y": np.int16(1)}) == [("y", "int8 numpy scalar", "int16 numpy scalar")]


def test_changes_report_an_object_column_given_numbers_or_arrays() -> None:
    table = SlotTable.infer({"name": "a", "x": 1}, size=2)
    assert table is not None
    assert table.changes({"name": 3, "x": 1}) == [("name", "object", "Python int")]
    assert table.changes({"name": np.zeros(2), "x": 1}) == [("name", "object", "float64 array of shape (2,)")]
    assert table.changes({"name": ["b"], "x": 1}) == []  # still an object: no batch change


# ---------------------------------------------------------------- slot pool


def test_slot_pool_of_one_slot_and_its_exhaustion() -> None:
    with pytest.raises(ValueError, match=r"at least one slot, got size=0"):
        SlotPool(0)
    pool = SlotPool(1)
    assert pool.next_slot() == 0 and pool.claim() == 0 and pool.available() == 0
    with pytest.raises(RuntimeError, match=r"all 1 slots are held or retired"):
        pool.next_slot()
    assert pool.release(0) is True  # not pinned: free at once
    assert pool.available() == 1 and pool.claim() == 0 and pool.used == 1


def test_claiming_more_slots_than_are_free_names_the_count_and_takes_none() -> None:
    pool = SlotPool(3)
    held = pool.claim_many(2)
    snapshot = pool.open()
    assert pool.release_many(held[:1]).tolist() == [False]  # retired: pinned by the snapshot
    with pytest.raises(
        RuntimeError,
        match=r"^cannot claim 2 slots: 1 of 3 are free \(the others are held or retired, pinned by live snapshots\)$",
    ):
        pool.claim_many(2)
    assert pool.available() == 1 and pool.claim_many(1).tolist() == [2]
    pool.close(snapshot)
    assert pool.claim_many(1).tolist() == [int(held[0])]


def test_closing_a_snapshot_that_is_not_open_raises_and_closes_nothing() -> None:
    pool = SlotPool(2)
    first, second = pool.open(), pool.open()
    pool.close(first)
    with pytest.raises(ValueError, match=rf"^snapshot {first} is not open \(open: \[{second}\]\)$"):
        pool.close(first)  # closed already: the open one after it stays open
    assert pool.newest_open == second
    with pytest.raises(ValueError, match=r"^snapshot 7 is not open"):
        pool.close(7)  # never opened
    pool.close(second)
    assert pool.newest_open == -1
    with pytest.raises(ValueError, match=rf"^snapshot {second} is not open \(open: \[\]\)$"):
        pool.close(second)


def test_a_retired_slot_is_freed_when_its_readers_close_while_older_and_newer_snapshots_stay_open() -> None:
    pool = SlotPool(3)
    older = pool.open()  # opened before the slot was claimed: does not read it
    slot = pool.claim()
    reader = pool.open()  # reads the slot
    assert pool.release(slot) is False and pool.retired == 1
    newer = pool.open()  # opened after the slot's entry was removed: does not read it
    assert pool.close(reader).tolist() == [slot]  # its only reader closed
    assert pool.retired == 0 and pool.next_slot() == slot
    assert pool.close(older).tolist() == [] and pool.close(newer).tolist() == []


# ---------------------------------------------------------------- reading, copying, failed writes


class Thing:
    """A mutable object that can be weakly referenced."""

    def __init__(self, items: list[int]) -> None:
        self.items = items


def test_copied_rows_and_batches_share_no_mutable_object_with_the_table() -> None:
    stored = {"k": [1, 2]}
    table = SlotTable.infer({"o": stored, "a": np.zeros(2)}, size=2)
    assert table is not None
    table.write(0, {"o": stored, "a": np.zeros(2)})
    mine = table.read_row(0)  # a copy by default
    mine["o"]["k"].append(3)
    mine["a"][0] = 5.0
    gathered = table.gather(np.array([0, 0]))
    gathered["o"][0]["k"].append(4)
    assert stored == {"k": [1, 2]}
    again = table.read_row(0)
    assert again["o"] == {"k": [1, 2]} and again["a"].tolist() == [0.0, 0.0]
    view = table.read_row(0, copy=False)  # the stored data, to read only
    assert view["o"] is stored
    assert not view["a"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        view["a"][0] = 1.0


def test_a_failed_write_names_the_column_and_leaves_other_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    first = {"s": "keep", "t": np.zeros(2, "datetime64[s]")}
    table = SlotTable.infer(first, size=3)
    assert table is not None
    table.write(0, first)
    real_copy = table_module._copy_value

    def fail_on_datetimes(target: np.ndarray, slot: int, value: Any, buffer_copy: bool) -> None:
        if target.dtype.kind == "M":
            raise OSError("disk on fire")
        real_copy(target, slot, value, buffer_copy)

    monkeypatch.setattr(table_module, "_copy_value", fail_on_datetimes)
    with pytest.raises(
        StoreError,
        match=r"^cannot store column 't' \(datetime64\[s\] array of shape \(2,\)\): OSError: disk on fire$",
    ) as info:
        table.write(1, {"s": "lost", "t": np.ones(2, "datetime64[s]")})
    error = info.value
    assert (error.uid, error.column, error.dtype) == (None, "t", "datetime64[s] array of shape (2,)")
    monkeypatch.undo()
    assert table.read_row(0)["s"] == "keep" and table.written == 1


def test_evicted_objects_are_dropped_by_the_table() -> None:
    """A freed slot keeps no reference to the object of the entry it held."""
    store = ReservoirStore(1)  # 1 + 1 slots
    store.put(Entry(0, 0, ({"o": Thing([0]), "x": 0},)))
    snap = store.snapshot()
    gone = weakref.ref(snap.rows_at(0, copy=False)[0]["o"])
    snap.release()
    evicted = store.put(Entry(1, 1, ({"o": Thing([1]), "x": 1},)))
    assert [e.uid for e in evicted] == [0] and evicted[0].slot is None and evicted[0].handle is None
    gc.collect()
    assert gone() is None
    assert store.rows_of(store.get(1))[0]["o"].items == [1]  # type: ignore[arg-type]

"""Columnar slot table and the store's gathered batches (pure, hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir import collate_rows
from dask_reservoir.batches import BatchIterator
from dask_reservoir.slots import Column, SlotTable
from dask_reservoir.store import UNLIMITED_ROOM, Entry, NoRoomError, ReservoirStore


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

"""Columnar slot table and the store's gathered batches (pure, hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir import collate_rows
from dask_reservoir.batches import BatchIterator
from dask_reservoir.slots import Column, SlotTable
from dask_reservoir.store import Entry, ReservoirStore


def row(uid: int, value: float = 0.0) -> dict:
    return {
        "sample_uid": uid,
        "image": np.full((2, 3), value, np.float32),
        "label": uid % 3,
        "name": f"n{uid}",
    }


def test_columns_inferred() -> None:
    table = SlotTable.infer(row(1), capacity=2)
    assert table is not None
    assert table.columns["image"] == Column("array", np.dtype(np.float32), (2, 3))
    assert table.columns["label"] == Column("scalar", np.dtype(np.int64), python=True)
    assert table.columns["name"].kind == "object"
    assert SlotTable.infer({1: 2}, capacity=2) is None


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
    table = SlotTable.infer(row(0), capacity=2)
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


def test_live_snapshot_is_not_overwritten_by_later_puts() -> None:
    store = ReservoirStore(3)
    for uid in range(3):
        store.put(Entry(uid, uid, (row(uid, uid),)))
    snap = store.snapshot()
    it = BatchIterator(snap, np.arange(3), batch_size=1, drop_last=False)
    for uid in range(3, 40):  # evict and replace everything, many times
        store.put(Entry(uid, uid, (row(uid, uid),)))
    assert [int(b["image"][0, 0, 0]) for b in it] == [0, 1, 2]
    assert store.live_snapshots == 0  # released once exhausted


def test_released_slots_are_reused_without_growth() -> None:
    store = ReservoirStore(4)
    for uid in range(4):
        store.put(Entry(uid, uid, (row(uid),)))
    assert store.table is not None
    capacity = store.table.capacity
    for uid in range(4, 2000):
        list(BatchIterator(store.snapshot(), np.arange(4), batch_size=2, drop_last=False))
        store.put(Entry(uid, uid, (row(uid),)))
    assert store.table.capacity == capacity


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
    """Random puts interleaved with snapshots: every live snapshot reads what it saw."""
    store = ReservoirStore(capacity)
    live: list[tuple[BatchIterator, list[float]]] = []
    for step, (uid, take_snapshot) in enumerate(ops):
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
    table = SlotTable.infer(first, capacity=2)
    assert table is not None and table.fits(first)
    slot = table.write(first)
    back = table.read_row(slot)
    assert back["a"].shape == () and float(back["a"]) == 2.5
    np.testing.assert_array_equal(back["b"], first["b"])

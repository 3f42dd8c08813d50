"""The store's byte bound (``max_bytes``) with entries of mixed sizes, against a model (hypothesis).

Entries are single rows of a fixed shape (kept in the columnar table), or several rows
of arrays of varying lengths (kept as rows), put in random order with snapshots held and
released, so that evictions by bytes meet pinned slots and slot reuse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dask_reservoir._core.blocks import ColumnBlock
from dask_reservoir._core.store import Entry, ReservoirStore, Snapshot, StoreError
from dask_reservoir._core.store.nbytes import rows_nbytes

TABLE_WEIGHT = 8 + 4 * 8  # a table row: the UID (int64) and 4 float64


class ByteBoundMachine(RuleBasedStateMachine):
    """The model: the stored UIDs oldest first, with the weight and value of each."""

    @initialize(capacity=st.integers(1, 8), max_bytes=st.integers(40, 400), columnar=st.booleans())
    def start(self, capacity: int, max_bytes: int, columnar: bool) -> None:
        self.store = ReservoirStore(capacity, max_bytes=max_bytes, columnar=columnar)
        self.capacity, self.max_bytes = capacity, max_bytes
        self.model: dict[int, tuple[int, int]] = {}  # uid -> (weight, value), oldest first
        self.live: list[Snapshot] = []
        self.value = 0

    @rule(
        uid=st.integers(0, 9),
        table=st.booleans(),
        lengths=st.lists(st.integers(0, 30), min_size=2, max_size=3),
    )
    def put(self, uid: int, table: bool, lengths: list[int]) -> None:
        """A one-row entry of fixed shape (the table, when columnar), or rows of mixed lengths."""
        self.value += 1
        if table:
            rows: tuple[dict[str, Any], ...] = ({"sample_uid": uid, "x": np.full(4, self.value, np.float64)},)
        else:  # several rows: always kept as rows
            rows = tuple(
                {"sample_uid": uid, "x": np.full(n, self.value, np.int16), "r": r}
                for r, n in enumerate(lengths)
            )
        weight = rows_nbytes(rows)  # a table row weighs the same: 8 + 32
        assert not table or weight == TABLE_WEIGHT
        if self.store.room() <= 0:
            return
        if weight > self.max_bytes:
            with pytest.raises(StoreError, match=f"the entry of UID {uid} takes {weight} bytes, more than"):
                self.store.put(Entry(uid, uid, rows))
            return
        self.store.put(Entry(uid, uid, rows))
        self.model.pop(uid, None)
        self.model[uid] = (weight, self.value)
        while len(self.model) > self.capacity or sum(w for w, _ in self.model.values()) > self.max_bytes:
            self.model.pop(next(iter(self.model)))  # the oldest goes first

    @rule()
    def snapshot(self) -> None:
        if len(self.live) < 3:
            self.live.append(self.store.snapshot())

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if self.live:
            self.live.pop(data.draw(st.integers(0, len(self.live) - 1))).release()

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "store"):
            return
        stored, pinned = self.store.nbytes()
        assert stored <= self.max_bytes
        assert self.store.uids() == list(self.model)
        assert stored == sum(w for w, _ in self.model.values())
        assert pinned >= 0 and (pinned == 0 or self.live)
        for uid, (_, value) in self.model.items():
            entry = self.store.get(uid)
            assert entry is not None
            for row in self.store.rows_of(entry):
                x = np.asarray(row["x"])
                assert row["sample_uid"] == uid and (x == value).all()

    def teardown(self) -> None:
        if hasattr(self, "store"):
            for snap in self.live:
                snap.release()
            assert self.store.nbytes()[1] == 0  # nothing pinned once every snapshot is released


TestByteBound = ByteBoundMachine.TestCase
TestByteBound.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_an_entry_heavier_than_the_bound_is_refused_naming_its_uid() -> None:
    store = ReservoirStore(4, max_bytes=100)
    store.put(Entry("a", 0, ({"x": np.zeros(5)},)))  # 40 bytes + the UID column
    with pytest.raises(
        StoreError, match=r"the entry of UID 'big' takes \d+ bytes, more than max_reservoir_bytes=100"
    ):
        store.put(Entry("big", 1, ({"x": np.zeros(50)}, {"x": np.zeros(1)})))
    assert store.uids() == ["a"]


def test_eviction_by_bytes_frees_what_the_new_entry_needs_oldest_first() -> None:
    store = ReservoirStore(10, max_bytes=100, columnar=False)
    for uid, n in [("a", 4), ("b", 4), ("c", 2)]:  # 32 + 32 + 16 bytes of float64
        store.put(Entry(uid, len(store.uids()) + ord(uid), ({"x": np.zeros(n)},)))
    assert store.nbytes() == (80, 0)
    store.put(Entry("d", 200, ({"x": np.zeros(5)},)))  # 40 bytes: a must go (b stays: 32 + 16 + 40 <= 100)
    assert store.uids() == ["b", "c", "d"] and store.nbytes() == (88, 0) and store.evicted == 1
    snap = store.snapshot()
    store.put(Entry("e", 201, ({"x": np.zeros(12)},)))  # 96 bytes: everything else goes, pinned
    assert store.uids() == ["e"] and store.nbytes() == (96, 88)
    snap.release()
    assert store.nbytes() == (96, 0)


def put_block(store: ReservoirStore, uids: list[int], value: int) -> bool:
    block = ColumnBlock(
        {"sample_uid": np.array(uids, np.int64), "x": np.full((len(uids), 4), value, np.float64)},
        python=frozenset({"sample_uid"}),
    )
    n = len(uids)
    return store.put_block(
        np.array(uids, np.int64),
        list(uids),
        block,
        np.arange(n),
        loaded_at=np.zeros(n),
        load_seconds=np.zeros(n),
    )


def test_a_block_evicts_by_bytes_and_one_heavier_than_the_bound_goes_row_by_row() -> None:
    store = ReservoirStore(10, max_bytes=5 * TABLE_WEIGHT)
    assert put_block(store, [0, 1, 2], 1)
    assert put_block(store, [3, 4, 5], 2)  # 6 rows weigh more than 5: the oldest goes
    assert store.uids() == [1, 2, 3, 4, 5] and store.nbytes() == (5 * TABLE_WEIGHT, 0)
    assert not put_block(
        store, list(range(10, 16)), 3
    )  # 6 rows at once never fit: the caller puts them one by one
    assert store.uids() == [1, 2, 3, 4, 5]
    for uid in range(10, 16):
        store.put(Entry(uid, uid, ({"sample_uid": uid, "x": np.full(4, 3.0)},)))
    assert store.uids() == [11, 12, 13, 14, 15] and store.nbytes()[0] == 5 * TABLE_WEIGHT

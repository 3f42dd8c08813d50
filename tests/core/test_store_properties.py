"""ReservoirStore against a plain-Python model under random puts, snapshots and releases (hypothesis).

Small capacities and long runs, so slots are reused many times over while
snapshots are held, read and released in random order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dask_reservoir._core.blocks import ColumnBlock
from dask_reservoir._core.store import UNLIMITED_ROOM, Entry, NoRoomError, ReservoirStore, Snapshot
from dask_reservoir._runtime.batches import BatchIterator


def rows_of(uid: int, version: int, n_rows: int) -> tuple[dict[str, Any], ...]:
    """Rows whose every value is derived from ``version`` (one row: slotted, two: kept as rows)."""
    return tuple(
        {"sample_uid": uid, "x": np.full(3, version, np.int64), "tag": f"v{version}", "r": r}
        for r in range(n_rows)
    )


class StoreMachine(RuleBasedStateMachine):
    """The model: UIDs oldest first with their version, and the versions each live snapshot holds."""

    @initialize(capacity=st.integers(1, 5))
    def start(self, capacity: int) -> None:
        self.store = ReservoirStore(capacity)
        self.capacity = capacity
        self.pool = capacity + math.ceil(capacity / 2)
        self.model: dict[int, tuple[int, int]] = {}  # uid -> (version, n_rows), oldest first
        self.live: list[tuple[Snapshot, list[tuple[int, int, int]]]] = []  # (uid, version, n_rows)
        self.removed: set[int] = set()  # versions removed from the store
        self.version = 0

    # ------------------------------------------------------------------ the model's accounting
    def pinned_versions(self) -> set[int]:
        return {v for _, expected in self.live for _, v, _ in expected}

    def expected_room(self) -> int:
        pinned = self.pinned_versions()
        retired = len(self.removed & pinned)
        free = self.pool - len(self.model) - retired
        at_risk = sum(v in pinned for v, _ in self.model.values()) + self.capacity - len(self.model)
        return UNLIMITED_ROOM if free > at_risk else free

    def check_reads(self, snapshot: Snapshot, expected: list[tuple[int, int, int]]) -> None:
        assert [e.uid for e in snapshot.entries] == [uid for uid, _, _ in expected]
        for i, (uid, version, n_rows) in enumerate(expected):
            got = snapshot.rows_at(i, copy=bool(i % 2))
            assert len(got) == n_rows
            for r, row in enumerate(got):
                assert row["sample_uid"] == uid and row["tag"] == f"v{version}" and row["r"] == r
                assert row["x"].tolist() == [version] * 3
        if snapshot.all_slotted and snapshot.table is not None:
            batch = snapshot.table.gather(snapshot.slots)
            assert batch["x"][:, 0].tolist() == [v for _, v, _ in expected]
            assert batch["tag"].tolist() == [f"v{v}" for _, v, _ in expected]

    # ------------------------------------------------------------------ rules
    @rule(uid=st.integers(0, 9), two_rows=st.booleans())
    def put(self, uid: int, two_rows: bool) -> None:
        room = self.store.room()
        assert room == self.expected_room()
        self.version += 1
        n_rows = 2 if two_rows else 1
        entry = Entry(uid, uid, rows_of(uid, self.version, n_rows))
        if room == 0:
            before = (self.store.uids(), self.store.ingested, self.store.slots_used)
            with pytest.raises(NoRoomError):
                self.store.put(entry)
            assert (self.store.uids(), self.store.ingested, self.store.slots_used) == before
            return
        evicted = self.store.put(entry)
        if uid in self.model:
            self.removed.add(self.model.pop(uid)[0])
        expected_evicted = []
        while len(self.model) >= self.capacity:
            oldest = next(iter(self.model))
            self.removed.add(self.model.pop(oldest)[0])
            expected_evicted.append(oldest)
        self.model[uid] = (self.version, n_rows)
        assert [e.uid for e in evicted] == expected_evicted
        assert self.store.uids() == list(self.model)
        if room != UNLIMITED_ROOM:
            assert self.store.room() >= room - 1  # at most one slot lost per put

    @rule(uids=st.lists(st.integers(0, 9), min_size=1, max_size=5, unique=True))
    def put_block(self, uids: list[int]) -> None:
        """A finished task's rows as one block: stored at once (replacements, then the oldest evicted)."""
        uids = uids[: self.capacity]
        room = self.store.room()
        versions = list(range(self.version + 1, self.version + 1 + len(uids)))
        self.version += len(uids)
        block = ColumnBlock(
            {
                "sample_uid": np.array(uids, np.int64),
                "x": np.repeat(np.array(versions, np.int64)[:, None], 3, axis=1),
                "tag": np.array([f"v{v}" for v in versions], dtype=object),
                "r": np.zeros(len(uids), np.int64),
            },
            python=frozenset({"sample_uid", "r"}),
        )
        before = (self.store.uids(), self.store.ingested, self.store.slots_used)
        stored = self.store.put_block(
            np.array(uids, np.int64),
            list(uids),
            block,
            np.arange(len(uids)),
            loaded_at=np.zeros(len(uids)),
            load_seconds=np.zeros(len(uids)),
        )
        assert stored == (room >= len(uids))
        if not stored:
            assert (self.store.uids(), self.store.ingested, self.store.slots_used) == before
            return
        for uid in uids:
            if uid in self.model:
                self.removed.add(self.model.pop(uid)[0])
        while len(self.model) + len(uids) > self.capacity:
            self.removed.add(self.model.pop(next(iter(self.model)))[0])
        for uid, version in zip(uids, versions, strict=True):
            self.model[uid] = (version, 1)
        assert self.store.uids() == list(self.model)

    @rule()
    def snapshot(self) -> None:
        snapshot = self.store.snapshot()
        expected = [(uid, v, n) for uid, (v, n) in sorted(self.model.items())]
        self.live.append((snapshot, expected))
        self.check_reads(snapshot, expected)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1000))
    def read(self, pick: int) -> None:
        self.check_reads(*self.live[pick % len(self.live)])

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1000), twice=st.booleans())
    def release(self, pick: int, twice: bool) -> None:
        snapshot, expected = self.live.pop(pick % len(self.live))
        self.check_reads(snapshot, expected)
        snapshot.release()
        if twice:
            snapshot.release()

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1000), batch_size=st.integers(1, 4))
    def iterate(self, pick: int, batch_size: int) -> None:
        snapshot, expected = self.live.pop(pick % len(self.live))
        it = BatchIterator(snapshot, np.arange(len(expected)), batch_size=batch_size, drop_last=False)
        served = [(int(u), int(x)) for b in it for u, x in zip(b["sample_uid"], b["x"][:, 0], strict=True)]
        assert served == [(uid, v) for uid, v, n in expected for _ in range(n)]

    # ------------------------------------------------------------------ invariants
    @invariant()
    def bounded_and_accounted(self) -> None:
        if not hasattr(self, "store"):
            return
        assert self.store.slots_used <= self.pool
        if self.store.table is not None:
            assert self.store.table.size == self.pool and self.store.table.written <= self.pool
        assert self.store.live_snapshots == len(self.live)
        pinned = self.pinned_versions()
        assert self.store.pinned_retired == len(self.removed & pinned)
        if not self.live:
            assert self.store.pinned_retired == 0
        assert self.store.room() == self.expected_room()

    def teardown(self) -> None:
        if not hasattr(self, "store"):
            return
        for snapshot, expected in self.live:
            self.check_reads(snapshot, expected)
            snapshot.release()
        assert self.store.live_snapshots == 0 and self.store.pinned_retired == 0


StoreMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=80, deadline=None)
TestStoreMachine = StoreMachine.TestCase


def test_no_live_snapshot_writes_at_most_capacity_plus_one_slots() -> None:
    """With every snapshot released before the next put, churn stays within capacity + 1 slots."""
    rng = np.random.default_rng(0)
    for capacity in (1, 2, 5, 16):
        store = ReservoirStore(capacity)
        for step in range(40 * capacity):
            uid = int(rng.integers(0, 3 * capacity))
            store.put(Entry(uid, uid, rows_of(uid, step, 1)))
            if step % 7 == 0:
                store.snapshot().release()
        assert store.slots_used <= capacity + 1

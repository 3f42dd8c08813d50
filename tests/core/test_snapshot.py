"""Snapshot: an epoch's entries read through the pin API, released without the store's lock."""

from __future__ import annotations

import gc
import threading

import numpy as np

from dask_reservoir._core.store import UNLIMITED_ROOM, ReservoirStore
from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.pins import SlotHolders
from dask_reservoir._core.store.snapshot import Snapshot


def store_of(n: int, *, columnar: bool = True) -> ReservoirStore:
    store = ReservoirStore(n, columnar=columnar)
    for uid in range(n):
        store.put(Entry(uid, n - 1 - uid, ({"x": np.full(2, float(uid))},)))
    return store


def test_the_snapshot_reads_its_entries_in_source_order() -> None:
    store = store_of(3)
    snap = store.snapshot()
    assert snap.positions.tolist() == [0, 1, 2] and [e.uid for e in snap.entries] == [2, 1, 0]
    assert snap.all_slotted and snap.slots.tolist() == snap.handles.tolist()
    assert snap.arrays is store.table.arrays  # type: ignore[union-attr]
    assert "holders" not in repr(snap) and "pin" not in repr(snap)


def test_rows_at_copies_unless_asked_not_to() -> None:
    for columnar in (True, False):
        snap = store_of(2, columnar=columnar).snapshot()
        mine = snap.rows_at(0)[0]["x"]
        mine[:] = 7.0
        shared = snap.rows_at(0, copy=False)[0]["x"]
        assert shared.tolist() == [1.0, 1.0] and not shared.flags.writeable


def test_a_removed_entry_stays_readable_until_the_release() -> None:
    store = store_of(2)
    snap = store.snapshot()
    store.put(Entry(9, 9, ({"x": np.full(2, 9.0)},)))  # evicts uid 0 (position 1): retired
    assert store.pinned_retired == 1
    assert snap.entry(1).uid == 0 and snap.rows_at(1)[0]["x"].tolist() == [0.0, 0.0]
    snap.add_served(np.array([1, 2]))
    snap.release()
    snap.release()  # idempotent
    assert store.pinned_retired == 0 and store.live_snapshots == 0
    assert store.get(1).times_served == 1  # type: ignore[union-attr]


def test_a_dropped_snapshot_is_released_by_its_finalizer() -> None:
    store = store_of(2)
    snap = store.snapshot()
    store.put(Entry(9, 9, ({"x": np.full(2, 9.0)},)))
    assert store.room() == 0 and store.live_snapshots == 1
    del snap
    gc.collect()
    assert store.live_snapshots == 0 and store.room() == UNLIMITED_ROOM


def test_release_does_not_take_the_store_lock() -> None:
    store = store_of(2)
    snap = store.snapshot()
    released = threading.Event()
    with store._lock:  # another thread holds the store: the release must not wait for it

        def release() -> None:
            snap.release()
            released.set()

        thread = threading.Thread(target=release)
        thread.start()
        assert released.wait(timeout=10)
        thread.join()
    assert store.live_snapshots == 0


def test_a_snapshot_of_holders_alone() -> None:
    holders = SlotHolders(3)
    handles = holders.claim(2)
    holders.hold(
        handles, positions=np.arange(2), uids=[0, 1], loaded_at=np.zeros(2), rows=[({"x": 0},), ({"x": 1},)]
    )
    snap = Snapshot(handles, None, False, np.arange(2), holders=holders, pin=holders.pin())
    assert len(snap) == 2 and snap.arrays is None and snap.slots.tolist() == [-1, -1]
    rows = snap.rows_at(1)
    rows[0]["x"] = 100
    assert snap.rows_at(1, copy=False) is holders.rows_at(int(handles[1])) and holders.rows_at(1)[0]["x"] == 1
    snap.add_served(np.array([0, 3]))
    assert [e.times_served for e in snap.entries] == [0, 3] and holders.positions_served == 1
    snap.release()
    assert snap.pin.released and holders.live == 1  # applied at the store's next call
    holders.apply_releases()
    assert holders.live == 0

"""ReservoirStore: ordering, eviction, keyed replacement (pure, no cluster)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_reservoir.store import Entry, ReservoirStore


def entry(uid: object, value: int = 0, position: int | None = None) -> Entry:
    return Entry(uid, position if position is not None else int(uid), ({"sample_uid": uid, "x": value},))  # type: ignore[arg-type]


def test_evicts_oldest_beyond_capacity() -> None:
    store = ReservoirStore(3)
    evicted = [e.uid for i in range(5) for e in store.put(entry(i))]
    assert evicted == [0, 1]
    assert store.uids() == [2, 3, 4]
    assert (store.ingested, store.evicted, store.replaced) == (5, 2, 0)


def test_same_uid_replaces_and_becomes_newest() -> None:
    store = ReservoirStore(3)
    for i in range(3):
        store.put(entry(i, value=i))
    assert store.put(entry(0, value=100)) == []
    assert store.uids() == [1, 2, 0]
    assert store.rows_of(store.get(0))[0]["x"] == 100  # type: ignore[union-attr]
    assert len(store) == 3 and store.replaced == 1
    # the next insert evicts 1, now the oldest, not the refreshed 0
    assert [e.uid for e in store.put(entry(3))] == [1]


def test_empty_entry_keeps_older_entry() -> None:
    store = ReservoirStore(2)
    store.put(entry(0, value=7))
    assert store.put(Entry(0, 0, ())) == []
    assert store.rows_of(store.get(0))[0]["x"] == 7  # type: ignore[union-attr]
    assert store.ingested == 1


def test_snapshot_is_source_ordered_and_independent() -> None:
    store = ReservoirStore(4)
    for uid in [3, 1, 2]:
        store.put(entry(uid))
    snap = store.snapshot()
    store.put(entry(0))
    assert [e.uid for e in snap.entries] == [1, 2, 3]
    assert [e.uid for e in store.snapshot().entries] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "capacity, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_capacity(capacity: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="capacity"):
        ReservoirStore(capacity)  # type: ignore[arg-type]


@given(
    capacity=st.integers(1, 8),
    uids=st.lists(st.integers(0, 12), max_size=60),
)
def test_store_matches_model(capacity: int, uids: list[int]) -> None:
    """Against a list model: newest-last, unique UIDs, at most ``capacity``."""
    store = ReservoirStore(capacity)
    model: list[int] = []
    evicted_total = 0
    for step, uid in enumerate(uids):
        store.put(entry(uid, value=step))
        if uid in model:
            model.remove(uid)
        model.append(uid)
        while len(model) > capacity:
            model.pop(0)
            evicted_total += 1
        assert store.uids() == model
        assert store.rows_of(store.get(uid))[0]["x"] == step  # type: ignore[union-attr]
    assert len(store) == len(model) <= capacity
    assert store.evicted == evicted_total
    assert store.ingested == len(uids)
    assert [e.uid for e in store.snapshot().entries] == sorted(model)


@given(ops=st.lists(st.tuples(st.integers(0, 30), st.booleans()), max_size=200), capacity=st.integers(1, 12))
def test_incremental_source_order_matches_sorting(ops: list[tuple[int, bool]], capacity: int) -> None:
    """Snapshots taken at random moments list exactly the live entries, sorted by position."""
    store = ReservoirStore(capacity)
    for step, (uid, snap) in enumerate(ops):
        store.put(entry(uid, value=step))
        if snap:
            snapshot = store.snapshot()
            assert [e.uid for e in snapshot.entries] == sorted(store.uids())
            assert all(e is store.get(e.uid) for e in snapshot.entries)
            snapshot.release()


def test_positions_must_be_unique() -> None:
    store = ReservoirStore(3)
    store.put(entry("a", position=1))
    with pytest.raises(ValueError, match="position 1 holds UID 'a', got UID 'b'"):
        store.put(entry("b", position=1))

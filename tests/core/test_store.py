"""ReservoirStore: ordering, eviction, keyed replacement (pure, no cluster)."""

from __future__ import annotations

import datetime
import decimal
import os
import threading
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dask_reservoir._core.store.table as table_module
from dask_reservoir import collate_rows
from dask_reservoir._core.blocks import BlockRow, ColumnBlock
from dask_reservoir._core.store import UNLIMITED_ROOM, Entry, NoRoomError, ReservoirStore, StoreError
from dask_reservoir._runtime.batches import BatchIterator


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


class CountingArray(np.ndarray):
    """A per-slot array of the store, counting the elements read from it by Python-level indexing."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        got = super().__getitem__(index)
        CountingArray.reads += int(np.size(got)) if isinstance(got, np.ndarray) else 1
        return got


def test_epoch_start_and_end_cost_the_changed_entries_not_the_reservoir() -> None:
    n, changed = 10_000, 10
    store = ReservoirStore(n)
    for i in range(n):
        store.put(entry(i, value=i))
    holders = store._holders
    holders._uid = holders._uid.view(CountingArray)  # UIDs: what an object per entry would read
    CountingArray.reads = 0
    first, again = store.snapshot(), store.snapshot()
    assert again.handles is first.handles  # nothing changed: nothing copied
    assert not first.handles.flags.writeable  # shared, so nobody may write into it
    before = first.handles.copy()
    for i in range(n, n + changed):
        store.put(entry(i, value=i))  # evicts the 10 oldest, retired: both snapshots read them
    epoch = store.snapshot()
    assert epoch.handles is not first.handles and np.array_equal(first.handles, before)  # frozen
    batches = list(BatchIterator(epoch, np.arange(64), batch_size=32, drop_last=False))
    assert [b["x"].tolist()[:2] for b in batches] == [[10, 11], [42, 43]]
    first.release(), again.release(), epoch.release()
    assert store.room() == UNLIMITED_ROOM  # the releases are applied: the 10 retired slots freed
    # no step per entry of the reservoir: only the UIDs of the changed entries were read
    assert CountingArray.reads <= 4 * changed
    assert [store.get(i).times_served for i in (10, 73, 74)] == [1, 1, 0]  # type: ignore[union-attr]


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
            for e in snapshot.entries:  # copies of what the store holds
                stored = store.get(e.uid)
                assert stored is not None and (stored.position, stored.loaded_at, stored.handle) == (
                    e.position,
                    e.loaded_at,
                    e.handle,
                )
            snapshot.release()


def test_positions_must_be_unique() -> None:
    store = ReservoirStore(3)
    store.put(entry("a", position=1))
    with pytest.raises(ValueError, match="position 1 holds UID 'a', got UID 'b'"):
        store.put(entry("b", position=1))


# ---------------------------------------------------------------- dtypes, atomic put, warnings

VALUES: dict[str, list[Any]] = {
    "datetime64 array": [
        np.array(["2020-01-01", "NaT"], "datetime64[s]") + np.timedelta64(i, "D") for i in range(3)
    ],
    "timedelta64 array": [np.arange(3, dtype="timedelta64[ms]") * (i + 1) for i in range(3)],
    "bool array": [np.array([True, False]) ^ bool(i % 2) for i in range(3)],
    "complex array": [np.array([1 + 2j, -1j]) * i for i in range(3)],
    "str array": [np.array(["ab", "c"]) for _ in range(3)],
    "bytes array": [np.array([b"ab", b"c"]) for _ in range(3)],
    "datetime64 scalar": [np.datetime64("2021-02-03T04:05") + np.timedelta64(i, "m") for i in range(3)],
    "timedelta64 scalar": [np.timedelta64(i, "s") for i in range(3)],
    "bool scalar": [np.bool_(i % 2) for i in range(3)],
    "complex scalar": [np.complex64(i + 1j) for i in range(3)],
    "str scalar": [np.str_(f"s{i}") for i in range(3)],
    "bytes scalar": [np.bytes_(b"b%d" % i) for i in range(3)],
    "Python datetime": [datetime.datetime(2020, 1, 1 + i, tzinfo=datetime.UTC) for i in range(3)],
    "Python date": [datetime.date(2020, 1, 1 + i) for i in range(3)],
    "Python complex": [complex(i, 1) for i in range(3)],
    "Python bool": [bool(i % 2) for i in range(3)],
    "object values": [[1, "x"], {"k": 2}, None],
    "Decimal": [decimal.Decimal(i) / 3 for i in range(3)],
}


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, np.ndarray | np.generic):
        assert got.dtype == expected.dtype and np.shape(got) == np.shape(expected)
        np.testing.assert_array_equal(got, expected)
    else:
        assert got == expected


def check_round_trip(rows: list[dict[str, Any]], *, rows_per_entry: int = 1) -> None:
    """put -> snapshot -> rows_at / batch equals the rows and ``collate_rows`` of them."""
    store = ReservoirStore(len(rows))
    for i, r in enumerate(rows):
        store.put(Entry(i, i, tuple(dict(r, sample_uid=i) for _ in range(rows_per_entry))))
    snap = store.snapshot()
    for i, r in enumerate(rows):
        for got in snap.rows_at(i):
            for key, value in r.items():
                assert_same(got[key], value)
    batch = next(BatchIterator(snap, np.arange(len(rows)), batch_size=len(rows), drop_last=False))
    expected = collate_rows(
        [dict(r, sample_uid=i) for i, r in enumerate(rows) for _ in range(rows_per_entry)]
    )
    assert batch.keys() == expected.keys()
    for key in expected:
        assert batch[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(batch[key], expected[key])
    snap.release()


@pytest.mark.parametrize("rows_per_entry", [1, 2], ids=["slotted", "kept as rows"])
@pytest.mark.parametrize("kind", list(VALUES))
def test_values_of_every_kind_round_trip(kind: str, rows_per_entry: int) -> None:
    """datetime64/timedelta64 arrays once broke the slot copy (no buffer), naming no column."""
    check_round_trip([{"v": v, "n": i} for i, v in enumerate(VALUES[kind])], rows_per_entry=rows_per_entry)


def test_all_kinds_in_one_row_are_slotted() -> None:
    rows = [{kind: values[i] for kind, values in VALUES.items()} for i in range(3)]
    store = ReservoirStore(3)
    for i, r in enumerate(rows):
        store.put(Entry(i, i, (r,)))
    assert all(e.slot is not None for e in store)
    check_round_trip(rows)


array_dtypes = st.one_of(
    hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(),
    hnp.boolean_dtypes(),
    hnp.complex_number_dtypes(),
    hnp.unicode_string_dtypes(min_len=1, max_len=4),
    hnp.byte_string_dtypes(min_len=1, max_len=4),
    hnp.floating_dtypes(),
    hnp.integer_dtypes(),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=array_dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3))
def test_arrays_and_scalars_of_any_dtype_round_trip(
    data: st.DataObject, dtype: np.dtype, shape: tuple
) -> None:
    arrays = [data.draw(hnp.arrays(dtype, shape)) for _ in range(3)]
    rows = [{"a": a, "s": a.reshape(-1)[0] if a.size else dtype.type(0)} for a in arrays]
    check_round_trip(rows)
    check_round_trip(rows, rows_per_entry=2)


def test_put_is_atomic_when_a_column_cannot_be_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ReservoirStore(2)
    good = {"a": np.zeros(3), "b": np.zeros(2, "datetime64[s]")}
    store.put(Entry("x", 0, (dict(good),)))
    store.put(Entry("y", 1, (dict(good, a=np.ones(3)),)))
    snap = store.snapshot()
    before = (store.uids(), store.ingested, store.evicted, store.replaced, store.room(), store.slots_used)
    calls = {"n": 0}
    real_copy = table_module._copy_value

    def fail_on_b(target: np.ndarray, slot: int, value: Any, buffer_copy: bool) -> None:
        calls["n"] += 1
        if target.dtype.kind == "M":
            raise OSError("disk on fire")
        real_copy(target, slot, value, buffer_copy)

    monkeypatch.setattr(table_module, "_copy_value", fail_on_b)
    for uid, position in [("z", 2), ("x", 0)]:  # a new UID (evicts x) and a replacement of x
        with pytest.raises(
            StoreError,
            match=rf"column 'b' \(datetime64\[s\] array of shape \(2,\)\).*disk on fire for UID '{uid}'",
        ) as info:
            store.put(Entry(uid, position, (dict(good, a=np.full(3, 7.0)),)))
        assert (info.value.uid, info.value.column) == (uid, "b") and isinstance(info.value, ValueError)
        assert info.value.dtype == "datetime64[s] array of shape (2,)" and "OSError: disk on fire" in str(
            info.value
        )
        assert (
            store.uids(),
            store.ingested,
            store.evicted,
            store.replaced,
            store.room(),
            store.slots_used,
        ) == before
        np.testing.assert_array_equal(store.rows_of(store.get("x"))[0]["a"], np.zeros(3))  # type: ignore[arg-type]
    assert calls["n"] == 4
    monkeypatch.setattr(table_module, "_copy_value", real_copy)
    assert [float(snap.rows_at(i)[0]["a"][0]) for i in range(2)] == [0.0, 1.0]
    store.put(Entry("z", 2, (dict(good, a=np.full(3, 7.0)),)))
    assert store.uids() == ["y", "z"]


def test_rows_that_are_not_dicts_name_the_uid() -> None:
    store = ReservoirStore(2)
    with pytest.raises(StoreError, match=r"must be a dict, got list at index 0 for UID 'u'") as info:
        store.put(Entry("u", 0, ([1, 2],)))  # type: ignore[arg-type]
    assert info.value.uid == "u" and info.value.column is None
    assert len(store) == 0 and store.ingested == 0


def test_dtype_or_shape_change_warns_once_per_column() -> None:
    store = ReservoirStore(8)
    store.put(Entry(0, 0, ({"x": np.zeros(2, np.float32), "y": 1},)))
    with pytest.warns(UserWarning) as record:
        store.put(Entry(1, 1, ({"x": np.zeros(2, np.float64), "y": 1},)))
    assert len(record) == 1
    assert str(record[0].message) == (
        "column 'x' changed from float32 array of shape (2,) to float64 array of shape (2,) at UID 1: entries "
        "unlike the first stored row are kept as rows and collated per batch (slower), and batches mixing "
        "them change dtype or fail to stack; return one dtype and shape per column (warned once per column: "
        "later changes of this column are not reported)"
    )
    assert not record[0].filename.endswith(
        os.path.join("dask_reservoir", "store.py")
    )  # the caller, not the library
    if "MUTANT_UNDER_TEST" not in os.environ:  # mutmut's trampolines add stack frames
        assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.put(Entry(2, 2, ({"x": np.zeros(2, np.float64), "y": 1},)))  # the same change: silent
        store.put(Entry(3, 3, ({"x": np.zeros(2, np.float32), "y": np.int64(4)},)))  # int64 either way
        store.put(Entry(4, 4, ({"x": np.zeros(2, np.float32), "y": 1}, {"x": 0, "y": 0})))  # several rows
        store.put(Entry(5, 5, ({"x": np.zeros(3, np.float32), "y": 1},)))  # another change of x: silent
    with pytest.warns(UserWarning, match=r"column 'y' changed from Python int to Python float at UID 6"):
        store.put(Entry(6, 6, ({"x": np.zeros(2, np.float32), "y": 1.5},)))
    assert len(store) == 7
    assert [e.slot is not None for e in store] == [True] + [False] * 6  # only the first row fits the table


def test_warning_as_error_leaves_the_store_unchanged() -> None:
    store = ReservoirStore(1)
    store.put(Entry(0, 0, ({"x": np.zeros(2, np.float32)},)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning):
            store.put(Entry(1, 1, ({"x": np.zeros(2, np.float64)},)))
    assert store.uids() == [0] and store.ingested == 0 + 1


def test_room_is_exact_and_put_fails_cleanly_at_zero() -> None:
    store = ReservoirStore(3)  # 3 + 2 slots
    assert store.room() == UNLIMITED_ROOM
    for uid in range(3):
        store.put(entry(uid))
    snap = store.snapshot()
    assert store.room() == 2  # two evictions of pinned entries retire two slots
    store.put(entry(3))
    store.put(entry(2, value=9))  # replaces pinned 2: retired too
    assert store.room() == 0 and store.pinned_retired == 2
    with pytest.raises(NoRoomError, match="cannot put UID 4"):
        store.put(entry(4))
    assert store.uids() == [1, 3, 2] and store.ingested == 5
    snap.release()
    snap.release()  # idempotent
    assert store.room() == UNLIMITED_ROOM and store.pinned_retired == 0 and store.live_snapshots == 0


def test_release_from_another_thread() -> None:
    store = ReservoirStore(2)
    store.put(entry(0))
    snaps = [store.snapshot() for _ in range(50)]
    threads = [threading.Thread(target=s.release) for s in snaps for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.live_snapshots == 0


def test_clear_keeps_slots_a_live_snapshot_reads() -> None:
    store = ReservoirStore(2)
    store.put(Entry(0, 0, ({"x": np.full(2, 5.0)},)))
    snap = store.snapshot()
    store.clear()
    assert len(store) == 0 and store.pinned_retired == 1
    store.put(Entry(1, 1, ({"x": np.full(2, 6.0)},)))
    assert float(snap.rows_at(0)[0]["x"][0]) == 5.0
    snap.release()
    store.clear()
    assert store.table is None and store.pinned_retired == 0 and store.room() == UNLIMITED_ROOM


def test_stored_arrays_of_row_entries_are_read_only() -> None:
    store = ReservoirStore(2)
    produced = {"x": np.zeros(2)}
    store.put(Entry(0, 0, (produced, {"x": np.zeros(3)})))
    stored = store.rows_of(store.get(0))  # type: ignore[arg-type]
    assert not stored[0]["x"].flags.writeable and not stored[1]["x"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        stored[0]["x"][0] = 1


# ---------------------------------------------------------------- messages, counters, reading


def test_membership_and_counters() -> None:
    store = ReservoirStore(2)
    store.put(entry("a", position=0))
    assert "a" in store and "b" not in store
    for value in range(3):
        store.put(entry("a", value=value, position=0))
    assert store.replaced == 3 and store.ingested == 4 and store.uids() == ["a"]
    assert repr(store) == "<ReservoirStore: size=1/2 ingested=4 evicted=0 replaced=3>"


def test_bad_capacity_message_names_the_type() -> None:
    with pytest.raises(TypeError, match=r"^capacity must be an int, got float: 1\.5$"):
        ReservoirStore(1.5)  # type: ignore[arg-type]


def test_no_room_message_explains_the_bound() -> None:
    store = ReservoirStore(3)  # 3 + 2 slots
    for uid in range(3):
        store.put(entry(uid))
    snap = store.snapshot()
    store.put(entry(3))
    store.put(entry(4))
    with pytest.raises(NoRoomError) as info:
        store.put(entry(5))
    assert str(info.value) == (
        "cannot put UID 5: all 5 slots (capacity 3 + headroom 2) are held by 3 entries and 2 removed "
        "entries that 1 live snapshots (iterators) still read; exhaust or drop an iterator, or check "
        "room() before put()"
    )
    snap.release()


def test_rows_of_entries_kept_as_rows_in_a_store_with_a_table() -> None:
    store = ReservoirStore(3)
    store.put(Entry(0, 0, ({"x": np.zeros(2)},)))  # slotted: creates the table
    store.put(Entry(1, 1, ({"x": np.ones(2)}, {"x": np.ones(2)})))  # several rows
    store.put(Entry(2, 2, ({"y": 5},)))  # another schema
    assert store.table is not None and store.get(0).slot is not None  # type: ignore[union-attr]
    assert store.get(1).slot is None and store.get(2).slot is None  # type: ignore[union-attr]
    assert [r["x"].tolist() for r in store.rows_of(store.get(1))] == [[1.0, 1.0], [1.0, 1.0]]  # type: ignore[arg-type]
    assert store.rows_of(store.get(2)) == ({"y": 5},)  # type: ignore[arg-type]
    mine = store.rows_of(store.get(0))  # type: ignore[arg-type]
    mine[0]["x"][0] = 9.0  # a slotted row is read as a copy
    assert store.rows_of(store.get(0))[0]["x"].tolist() == [0.0, 0.0]  # type: ignore[arg-type]


def test_columnar_bytes_is_zero_without_a_table() -> None:
    store = ReservoirStore(2)
    assert store.columnar_bytes() == 0
    store.put(Entry(0, 0, ({"x": np.zeros(4)}, {"x": np.zeros(4)})))
    assert store.table is None and store.columnar_bytes() == 0
    store.put(Entry(1, 1, ({"x": np.zeros(4)},)))
    assert store.columnar_bytes() == 32


def test_snapshot_rows_at_copies_unless_asked_not_to() -> None:
    store = ReservoirStore(2)
    store.put(Entry(0, 0, ({"x": np.zeros(2)},)))  # slotted
    store.put(Entry(1, 1, ({"x": np.zeros(2)}, {"x": np.ones(2)})))  # kept as rows
    snap = store.snapshot()
    assert snap.slots.tolist() == [0, -1]
    for index in range(2):
        mine = snap.rows_at(index)
        mine[0]["x"][0] = 9.0
        assert snap.rows_at(index)[0]["x"][0] == 0.0
        shared = snap.rows_at(index, copy=False)
        assert not shared[0]["x"].flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            shared[0]["x"][0] = 1.0
    assert snap.rows_at(1, copy=False) is store.rows_of(store.get(1))  # type: ignore[arg-type]
    snap.release()


def test_all_slotted_needs_at_least_one_entry() -> None:
    store = ReservoirStore(2)
    assert not store.snapshot().all_slotted
    store.put(Entry(0, 0, ({"x": np.zeros(2)},)))
    snap = store.snapshot()
    assert snap.all_slotted and snap.table is store.table and snap.arrays is store.table.arrays  # type: ignore[union-attr]


def test_clear_then_snapshot() -> None:
    store = ReservoirStore(3)
    for uid in range(3):
        store.put(entry(uid))
    store.snapshot().release()
    store.clear()
    empty = store.snapshot()
    assert empty.entries == [] and empty.slots.tolist() == [] and store.live_snapshots == 1
    empty.release()
    store.put(entry(7, value=70))
    store.put(entry(5, value=50))
    snap = store.snapshot()
    assert [e.uid for e in snap.entries] == [5, 7] and snap.all_slotted
    assert [r[0]["x"] for r in map(snap.rows_at, range(2))] == [50, 70]
    snap.release()
    assert store.room() == UNLIMITED_ROOM and len(store) == 2


def test_putting_a_stored_entry_again_stores_it_as_the_newest() -> None:
    """An entry kept as rows, put again as is: a fresh entry, the pool stays consistent."""
    store = ReservoirStore(4)  # 4 + 2 slots
    kept = Entry("a", 0, ({"x": 1}, {"x": 2}))
    store.put(kept)
    store.put(entry(1))
    assert store.put(kept) == []
    again = store.get("a")
    assert again is not kept and again is not None and again.handle is not None
    assert store.uids() == [1, "a"] and store.replaced == 1
    assert store.rows_of(again) == ({"x": 1}, {"x": 2})
    for uid in range(2, 40):  # churn with snapshots: no slot leaks, none is shared
        snap = store.snapshot()
        assert [r["x"] for i in range(len(snap.entries)) for r in snap.rows_at(i)] == [
            r["x"] for e in snap.entries for r in store.rows_of(e)
        ]
        store.put(entry(uid, value=uid))
        snap.release()
    assert store.room() == UNLIMITED_ROOM and store.slots_used <= 6 and store.pinned_retired == 0


def test_values_no_batch_can_be_built_from_are_refused_at_put() -> None:
    """A numpy.matrix cannot be stacked, a lock cannot be deep-copied into batches: refused once, at put."""
    store = ReservoirStore(2)
    store.put(entry("a", position=0))
    before = (store.uids(), store.ingested, store.room(), store.slots_used)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        matrix = np.matrix([[1, 2]])
    with pytest.raises(StoreError) as info:
        store.put(Entry("m", 1, ({"sample_uid": "m", "x": matrix},)))
    assert str(info.value) == (
        "column 'x' holds a numpy.matrix for UID 'm', which cannot be stacked into a batch; return an "
        "ndarray (numpy.asarray)"
    )
    assert (info.value.uid, info.value.column, info.value.dtype) == ("m", "x", "numpy.matrix")
    rows = ({"sample_uid": "l", "x": 1}, {"sample_uid": "l", "x": 2, "guard": (1, threading.Lock())})
    with pytest.raises(StoreError) as info:
        store.put(Entry("l", 2, rows))
    message = str(info.value)
    assert message.startswith(
        "column 'guard' holds a tuple for UID 'l' that cannot be deep-copied (TypeError: "
    )
    assert message.endswith(
        "); batches copy mutable values so that users cannot change what is stored: return plain data "
        "instead (numbers, str, arrays, or objects that can be copied)"
    )
    assert (info.value.uid, info.value.column, info.value.dtype) == ("l", "guard", "tuple")
    assert isinstance(info.value.__cause__, TypeError)
    held = np.array([threading.Lock()], dtype=object)  # a new column: no dtype-change warning
    with pytest.raises(
        StoreError, match=r"^column 'held' holds a ndarray for UID 'o' that cannot be deep-copied"
    ):
        store.put(Entry("o", 4, ({"sample_uid": "o", "x": 4, "held": held},)))
    assert (store.uids(), store.ingested, store.room(), store.slots_used) == before
    store.put(Entry("t", 3, ({"sample_uid": "t", "x": 3, "tags": ["ok"], "when": (1, "a")},)))
    assert store.uids() == ["a", "t"]


# ---------------------------------------------------------------- what the store leaves to the caller


def test_put_never_changes_the_flags_of_the_callers_arrays() -> None:
    """On a threaded cluster the rows are the function's own: it may fill the same buffer again."""
    store = ReservoirStore(4)
    produced = np.zeros(2)
    frozen = np.ones(3)
    frozen.flags.writeable = False
    store.put(Entry(0, 0, ({"x": produced}, {"x": frozen})))  # two rows: kept as rows
    assert produced.flags.writeable  # the store made it read-only in place
    produced[:] = 1  # raised "assignment destination is read-only"
    stored = store.rows_of(store.get(0))  # type: ignore[arg-type]
    assert not stored[0]["x"].flags.writeable and np.shares_memory(stored[0]["x"], produced)  # a view
    assert stored[1]["x"] is frozen  # nothing can write it: kept as is


def stackable_store(capacity: int = 3) -> ReservoirStore:
    return ReservoirStore(capacity, uid_column="uid", stackable=True)


def test_rows_the_default_collate_cannot_stack_are_refused_at_put() -> None:
    """One UID of another shape was stored, then failed every epoch it was in at collate."""
    store = stackable_store()
    store.put(Entry(0, 0, ({"uid": 0, "x": np.zeros(2), "y": 1},)))
    before = (store.uids(), store.ingested, store.room(), store.slots_used)
    cases = [
        ({"uid": 1, "x": np.zeros(3), "y": 1}, "column 'x' holds an array of shape (3,) for UID 1"),
        ({"uid": 1, "x": 5.0, "y": 1}, "column 'x' holds a value that is not an array for UID 1"),
        # stacked with number arrays, a text array turns every number into text ("1.0")
        (
            {"uid": 1, "x": np.array(["a", "b"]), "y": 1},
            "column 'x' holds an array of shape (2,) and str values",
        ),
        ({"uid": 1, "x": np.zeros(2), "y": np.zeros(1)}, "column 'y' holds an array of shape (1,) for UID 1"),
        ({"uid": 1, "x": np.zeros(2)}, "UID 1 has columns ['uid', 'x'] but the stored rows"),
        ({"uid": 1, "x": np.zeros(2), "y": 1, "z": 2}, "UID 1 has columns ['uid', 'x', 'y', 'z'] but"),
    ]
    for row, start in cases:
        with pytest.raises(StoreError) as info:
            store.put(Entry(1, 1, ({"uid": 1, "x": np.zeros(2), "y": 1}, row)))  # its second row
        assert str(info.value).startswith(start), str(info.value)
        assert "(UID 0 among them)" in str(info.value) and info.value.uid == 1
    assert (store.uids(), store.ingested, store.room(), store.slots_used) == before
    with pytest.warns(UserWarning, match=r"column '[xy]' changed from"):  # dtypes may differ
        store.put(Entry(1, 1, ({"uid": 1, "x": np.ones(2, np.float32), "y": 2.5},)))
    assert store.uids() == [0, 1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_layout_follows_the_stored_rows() -> None:
    store = stackable_store(capacity=1)
    store.put(Entry(0, 0, ({"uid": 0, "x": np.zeros(2)},)))
    store.put(Entry(1, 1, ({"uid": 1, "x": np.zeros(3)},)))  # evicts the only entry: any layout
    store.put(Entry(1, 1, ({"uid": 1, "x": "text"},)))  # replaces the only entry
    assert store.uids() == [1]
    wide = stackable_store()
    wide.put(Entry(0, 0, ({"uid": 0, "x": np.zeros(2)},)))
    wide.put(Entry(0, 0, ({"uid": 0, "x": np.zeros(4)},)))  # the same UID, alone: replaced
    with pytest.raises(StoreError, match=r"shape \(2,\) for UID 1 but the stored rows \(UID 0 among them\)"):
        wide.put(Entry(1, 1, ({"uid": 1, "x": np.zeros(2)},)))
    wide.clear()
    wide.put(Entry(1, 1, ({"uid": 1, "x": np.zeros(2)},)))
    assert ReservoirStore(2).put(Entry(5, 5, ({"x": 1}, {"x": np.zeros(1)}))) == []  # not stackable


def test_unsigned_uids_keep_their_type_in_rows_tables_and_batches() -> None:
    """UIDs >= 2**63 mixed with small ones: an object column and an int64 one, batched as float64."""
    big = 2**63
    store = ReservoirStore(8, uid_column="uid", uid_type=np.uint64, stackable=True)
    for position, uid in enumerate([big, big + 1, 5, 6]):
        store.put(Entry(uid, position, ({"uid": uid, "x": np.float32(position)},)))  # no dtype warning
    store.put(Entry(7, 4, ({"uid": 7, "x": np.float32(4)}, {"uid": 7, "x": np.float32(4)})))  # rows
    snap = store.snapshot()
    assert snap.slots.tolist()[:4] == [e.slot for e in snap.entries][:4] and -1 not in snap.slots[:4]
    rows = [r for i in range(len(snap)) for r in snap.rows_at(i)]
    assert all(type(r["uid"]) is np.uint64 for r in rows)
    batch = collate_rows(rows, uid_column="uid")
    assert batch["uid"].dtype == np.uint64 and batch["uid"].tolist() == [big, big + 1, 5, 6, 7, 7]
    assert snap.table is not None
    gathered = snap.table.gather(snap.handles[:4])
    assert gathered["uid"].dtype == np.uint64 and gathered["uid"].tolist() == [big, big + 1, 5, 6]
    snap.release()


def test_blocks_of_rows_that_would_not_stack_reject_their_own_entries() -> None:
    """A vectorized job's block goes through the same check (one assignment, or one by one)."""
    store = ReservoirStore(8, uid_column="uid", uid_type=np.uint64, stackable=True)
    first = ColumnBlock({"uid": np.array([2**63, 1], np.uint64), "x": np.zeros((2, 2))})
    assert store.put_many([Entry(u, i, (BlockRow(first, i),)) for i, u in enumerate([2**63, 1])]) == []
    wide = ColumnBlock({"uid": np.array([2, 3]), "x": np.zeros((2, 3))})  # UIDs as int64: typed on put
    rejected = store.put_many([Entry(u, 2 + i, (BlockRow(wide, i),)) for i, u in enumerate([2, 3])])
    assert [(e.uid, x.column) for e, x in rejected] == [(2, "x"), (3, "x")]
    mixed = np.empty(3, dtype=object)
    mixed[:] = [np.zeros(2), np.zeros(5), np.zeros(2)]  # an object column of arrays: checked one by one
    odd = ColumnBlock({"uid": np.array([4, 5, 6], np.uint64), "x": mixed})
    rejected = store.put_many([Entry(u, 4 + i, (BlockRow(odd, i),)) for i, u in enumerate([4, 5, 6])])
    assert [(e.uid, x.column) for e, x in rejected] == [(5, "x")]
    same = ColumnBlock({"uid": np.array([7, 8]), "x": np.ones((2, 2))})
    assert store.put_many([Entry(u, 7 + i, (BlockRow(same, i),)) for i, u in enumerate([7, 8])]) == []
    assert store.uids() == [2**63, 1, 4, 6, 7, 8]
    snap = store.snapshot()
    uids = collate_rows([r for i in range(len(snap)) for r in snap.rows_at(i)], uid_column="uid")["uid"]
    assert uids.dtype == np.uint64 and uids.tolist() == [2**63, 1, 4, 6, 7, 8]
    snap.release()

"""Epoch iteration over a snapshot: batching, epoch caps, drop_last, checks (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_reservoir import SequentialSampler, collate_rows
from dask_reservoir._core.order import epoch_order
from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.epoch_plan import snapshot_of


def entries(n: int, rows_per_entry: int = 1) -> list[Entry]:
    return [Entry(i, i, tuple({"sample_uid": i, "r": r} for r in range(rows_per_entry))) for i in range(n)]


def uids(it: BatchIterator) -> list[list[int]]:
    return [b["sample_uid"].tolist() for b in it]


def test_batches_and_last_partial() -> None:
    it = BatchIterator(snapshot_of(entries(5)), [0, 1, 2, 3, 4], batch_size=2, drop_last=False)
    assert len(it) == 3
    assert uids(it) == [[0, 1], [2, 3], [4]]
    with pytest.raises(StopIteration):
        next(it)


def test_drop_last() -> None:
    it = BatchIterator(snapshot_of(entries(5)), range(5), batch_size=2, drop_last=True)
    assert len(it) == 2 and uids(it) == [[0, 1], [2, 3]]


def test_max_samples_counts_rows_and_truncates() -> None:
    it = BatchIterator(
        snapshot_of(entries(5, rows_per_entry=2)), range(5), batch_size=2, drop_last=False, max_samples=5
    )
    batches = [b["r"].tolist() for b in it]
    assert batches == [[0, 1, 0, 1], [0]]


def test_multi_row_entries_all_rows_in_batch_and_times_served() -> None:
    snap = snapshot_of(entries(3, rows_per_entry=3))
    it = BatchIterator(snap, [2, 0, 1], batch_size=2, drop_last=False)
    first = next(it)
    assert first["sample_uid"].tolist() == [2, 2, 2, 0, 0, 0]
    del it  # an abandoned epoch still counts what it served
    assert [e.times_served for e in snap.entries] == [1, 0, 1]


def test_collate_fn_gets_row_dicts() -> None:
    seen = []
    it = BatchIterator(
        snapshot_of(entries(3)),
        range(3),
        batch_size=3,
        drop_last=False,
        collate_fn=lambda rows: seen.append(rows) or len(rows),
    )
    assert list(it) == [3]
    assert seen[0][1] == {"sample_uid": 1, "r": 0}


def test_check_runs_before_each_batch_and_on_batch_counts() -> None:
    calls: list[int] = []
    seconds: list[float] = []
    state = {"closed": False}

    def check() -> None:
        if state["closed"]:
            raise RuntimeError("closed")

    it = BatchIterator(
        snapshot_of(entries(4)),
        range(4),
        batch_size=1,
        drop_last=False,
        check=check,
        on_batch=lambda rows, took, carried: (calls.append(rows), seconds.append(took)),
    )
    next(it)
    state["closed"] = True
    with pytest.raises(RuntimeError, match="closed"):
        next(it)
    assert calls == [1] and len(seconds) == 1 and seconds[0] >= 0


def test_carried_seconds_come_apart_from_the_next_call_and_once() -> None:
    # the epoch's start is reported with the first batch, apart from next()'s own time: the
    # reservoir counts it in the first batch's stall but has already counted it as time in iter()
    reports: list[tuple[int, float, float]] = []
    it = BatchIterator(
        snapshot_of(entries(2)),
        range(2),
        batch_size=1,
        drop_last=False,
        on_batch=lambda rows, took, carried: reports.append((rows, took, carried)),
    )
    it.carry_seconds(1000.0)
    assert len(list(it)) == 2 and [r[0] for r in reports] == [1, 1]
    assert [r[2] for r in reports] == [1000.0, 0.0]
    assert all(0 <= r[1] < 1000.0 for r in reports)


class _Bad(Sampler):
    def indices(self, n: int, *, epoch: int) -> list[int]:
        return [0, n, -1]


def test_epoch_order_rejects_out_of_range() -> None:
    assert epoch_order(SequentialSampler(), 2, 0).tolist() == [0, 1]
    with pytest.raises(
        ValueError, match=r"reservoir_sampler .* must yield indices in range\(3\).*got \[3, -1\]"
    ):
        epoch_order(_Bad(), 3, 0)


def _augmenting_collate(rows: list[dict]) -> dict:
    for r in rows:
        r["x"] *= 2  # in-place augmentation, as users write it
        r["tags"].append("seen")
    return collate_rows(rows)


@pytest.mark.parametrize("rows_per_entry", [1, 2], ids=["slotted", "kept as rows"])
def test_collate_fn_writing_into_rows_never_changes_the_store(rows_per_entry: int) -> None:
    """In-place augmentation used to compound across epochs for entries kept as rows (x8 after 3)."""
    store = ReservoirStore(3)
    for i in range(3):
        rows = tuple({"sample_uid": i, "x": np.ones(2), "tags": ["t"]} for _ in range(rows_per_entry))
        store.put(Entry(i, i, rows))
    for _epoch in range(3):
        batches = list(
            BatchIterator(
                store.snapshot(), range(3), batch_size=3, drop_last=False, collate_fn=_augmenting_collate
            )
        )
        np.testing.assert_array_equal(batches[0]["x"], np.full((3 * rows_per_entry, 2), 2.0))
        assert batches[0]["tags"].tolist() == [["t", "seen"]] * (3 * rows_per_entry)
    stored = store.rows_of(store.get(0))  # type: ignore[arg-type]
    np.testing.assert_array_equal(stored[0]["x"], np.ones(2))
    assert stored[0]["tags"] == ["t"]


@pytest.mark.parametrize("rows_per_entry", [1, 2], ids=["gathered", "collated"])
def test_writing_into_batches_never_changes_the_store(rows_per_entry: int) -> None:
    store = ReservoirStore(3)
    for i in range(3):
        rows = tuple({"sample_uid": i, "x": np.ones(2), "tags": ["t"]} for _ in range(rows_per_entry))
        store.put(Entry(i, i, rows))
    for _epoch in range(3):
        for batch in BatchIterator(store.snapshot(), range(3), batch_size=2, drop_last=False):
            np.testing.assert_array_equal(batch["x"], np.ones_like(batch["x"]))
            assert all(t == ["t"] for t in batch["tags"])
            batch["x"] *= 2
            for t in batch["tags"]:
                t.append("seen")


def test_collate_fn_rows_are_private_and_keep_types() -> None:
    seen: list[list[dict]] = []
    store = ReservoirStore(2)
    store.put(Entry(0, 0, ({"sample_uid": 0, "x": np.arange(3), "name": "a", "w": 0.5},)))
    list(BatchIterator(store.snapshot(), [0], batch_size=1, drop_last=False, collate_fn=seen.append))
    row = seen[0][0]
    assert row["x"].flags.writeable and row["x"].flags.owndata
    assert type(row["name"]) is str and type(row["w"]) is float


def columnar_store(n: int) -> ReservoirStore:
    store = ReservoirStore(n)
    for i in range(n):
        store.put(Entry(i, i, ({"sample_uid": i, "x": np.full(2, float(i))},)))
    return store


def test_snapshot_of_keeps_entries_as_rows() -> None:
    snap = snapshot_of(entries(3))
    assert not snap.all_slotted and snap.slots.tolist() == [-1, -1, -1]


@pytest.mark.parametrize("drop_last", [False, True])
def test_gathered_epoch_batches_and_drop_last(drop_last: bool) -> None:
    store = columnar_store(5)
    snap = store.snapshot()
    assert snap.all_slotted  # batches are gathered
    it = BatchIterator(snap, [4, 3, 2, 1, 0], batch_size=2, drop_last=drop_last)
    expected = [[4, 3], [2, 1]] if drop_last else [[4, 3], [2, 1], [0]]
    assert len(it) == len(expected) and uids(it) == expected


def test_gathered_epoch_of_exactly_full_batches_with_drop_last() -> None:
    it = BatchIterator(columnar_store(4).snapshot(), range(4), batch_size=2, drop_last=True)
    assert uids(it) == [[0, 1], [2, 3]]


@pytest.mark.parametrize("columnar", [True, False], ids=["gathered", "collated"])
def test_an_empty_epoch_yields_nothing(columnar: bool) -> None:
    snap = columnar_store(2).snapshot() if columnar else snapshot_of(entries(2))
    it = BatchIterator(snap, np.array([], dtype=np.int64), batch_size=2, drop_last=False)
    assert len(it) == 0 and list(it) == []


@pytest.mark.parametrize("columnar", [True, False], ids=["gathered", "collated"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_max_samples_caps_the_epoch(columnar: bool, drop_last: bool) -> None:
    snap = columnar_store(10).snapshot() if columnar else snapshot_of(entries(10))
    it = BatchIterator(snap, range(10), batch_size=3, drop_last=drop_last, max_samples=7)
    expected = [[0, 1, 2], [3, 4, 5]] if drop_last else [[0, 1, 2], [3, 4, 5], [6]]
    assert len(it) == len(expected) and uids(it) == expected
    assert [e.times_served for e in snap.entries] == [1] * sum(map(len, expected)) + [0] * (
        10 - sum(map(len, expected))
    )


def test_len_with_max_samples_beyond_the_epoch() -> None:
    it = BatchIterator(snapshot_of(entries(5)), range(5), batch_size=2, drop_last=False, max_samples=100)
    assert len(it) == 3


def test_max_samples_truncates_multi_row_entries_within_a_batch() -> None:
    snap = snapshot_of(entries(5, rows_per_entry=2))
    it = BatchIterator(snap, range(5), batch_size=4, drop_last=False, max_samples=5)
    assert uids(it) == [[0, 0, 1, 1, 2]]
    assert [e.times_served for e in snap.entries] == [1, 1, 1, 0, 0]  # entry 3 gave no row: not served


def test_max_samples_reached_mid_epoch_serves_no_further_entry() -> None:
    snap = snapshot_of(entries(5, rows_per_entry=2))
    it = BatchIterator(snap, range(5), batch_size=2, drop_last=False, max_samples=5)
    assert [b["r"].tolist() for b in it] == [[0, 1, 0, 1], [0]]
    assert [e.times_served for e in snap.entries] == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("max_samples", [None, 4, 3])
@pytest.mark.parametrize("columnar", [True, False], ids=["gathered", "collated"])
def test_the_snapshot_is_released_with_the_last_batch(columnar: bool, max_samples: int | None) -> None:
    """The epoch ends as its last batch is handed out, not at a further ``next()``."""
    store = columnar_store(6) if columnar else ReservoirStore(6, columnar=False)
    if not columnar:
        for e in entries(6):
            store.put(e)
    snap = store.snapshot()
    it = BatchIterator(snap, range(4), batch_size=2, drop_last=False, max_samples=max_samples)
    batches = [next(it) for _ in range(len(it))]
    assert len(batches) == 2
    assert store.live_snapshots == 0
    assert [e.times_served for e in snap.entries] == [1, 1, 1, 1 if max_samples != 3 else 0, 0, 0]
    with pytest.raises(StopIteration):
        next(it)


def test_times_served_adds_up_over_epochs() -> None:
    store = ReservoirStore(3, columnar=False)
    for e in entries(3):
        store.put(e)
    for _ in range(2):
        list(BatchIterator(store.snapshot(), [0, 0, 1], batch_size=2, drop_last=False))
    assert [store.get(uid).times_served for uid in range(3)] == [4, 2, 0]  # type: ignore[union-attr]


def test_stop_iteration_stays_after_the_epoch_ends() -> None:
    it = BatchIterator(snapshot_of(entries(2)), range(2), batch_size=2, drop_last=False)
    assert uids(it) == [[0, 1]]
    for _ in range(2):
        with pytest.raises(StopIteration):
            next(it)


def _mismatched(uid_key: str) -> list[Entry]:
    return [Entry(0, 0, ({uid_key: "u0", "x": 1},)), Entry(1, 1, ({uid_key: "u1"},))]


def test_collate_errors_name_the_uids_of_the_rows() -> None:
    it = BatchIterator(snapshot_of(_mismatched("sample_uid")), range(2), batch_size=2, drop_last=False)
    with pytest.raises(ValueError, match=r"UIDs \['u0'\] have it and UIDs \['u1'\] do not"):
        next(it)
    it = BatchIterator(
        snapshot_of(_mismatched("id")), range(2), batch_size=2, drop_last=False, uid_column="id"
    )
    with pytest.raises(ValueError, match=r"UIDs \['u0'\] have it and UIDs \['u1'\] do not"):
        next(it)


def test_epoch_order_messages() -> None:
    class Floats(Sampler):
        def indices(self, n: int, *, epoch: int) -> list[float]:
            return [0.0, 1.0]

    class ManyBad(Sampler):
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return [10, 11, 12, 13, 14, 15, 0]

    with pytest.raises(TypeError, match=r"reservoir_sampler .* must yield int indices, got float64 values"):
        epoch_order(Floats(), 2, 0)
    with pytest.raises(
        ValueError,
        match=r"must yield indices in range\(2\) \(2 entries in the reservoir\), got \[10, 11, 12, 13, 14\]$",
    ):
        epoch_order(ManyBad(), 2, 0)


def test_an_iterator_left_behind_by_more_than_max_stale_epochs_is_expired() -> None:
    from dask_reservoir.errors import IteratorExpiredError

    store = ReservoirStore(4, columnar=False)
    for e in entries(4):
        store.put(e)
    it = BatchIterator(store.snapshot(), range(4), batch_size=1, drop_last=False, epoch=5)
    assert next(it)["sample_uid"].tolist() == [0]
    assert [it.note_newer_epoch(max_stale=1) for _ in range(2)] == [False, True]
    assert store.live_snapshots == 0  # released at once: the store may reuse its slots
    for _ in range(2):  # every later next() says so
        with pytest.raises(
            IteratorExpiredError, match=r"iterator of epoch 5 was expired: not advanced while 2"
        ) as e:
            next(it)
        assert (e.value.epoch, e.value.behind) == (5, 2)
    assert it.ended and it.expired and it.note_newer_epoch(max_stale=1) is None
    assert [e.times_served for e in store] == [1, 0, 0, 0]


def test_an_iterator_advanced_between_newer_epochs_is_never_expired() -> None:
    it = BatchIterator(snapshot_of(entries(6)), range(6), batch_size=1, drop_last=False)
    served: list[int] = []
    for _ in range(6):  # max_stale=1: one newer epoch between two next() calls, again and again
        assert it.note_newer_epoch(max_stale=1) is False
        served.extend(next(it)["sample_uid"].tolist())
    assert served == list(range(6)) and not it.expired


def test_close_releases_the_snapshot_and_ends_the_epoch() -> None:
    store = ReservoirStore(3, columnar=False)
    for e in entries(3):
        store.put(e)
    it = BatchIterator(store.snapshot(), range(3), batch_size=1, drop_last=False)
    next(it)
    it.close()
    it.close()  # idempotent
    assert store.live_snapshots == 0 and it.ended and not it.expired
    with pytest.raises(StopIteration):
        next(it)

"""Epoch iteration over a snapshot: batching, epoch caps, drop_last, checks (pure)."""

from __future__ import annotations

import numpy as np
import pytest

from dask_reservoir import SequentialSampler, collate_rows
from dask_reservoir.batches import BatchIterator, epoch_order, snapshot_of
from dask_reservoir.samplers import Sampler
from dask_reservoir.store import Entry, ReservoirStore


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
    es = entries(3, rows_per_entry=3)
    it = BatchIterator(snapshot_of(es), [2, 0, 1], batch_size=2, drop_last=False)
    first = next(it)
    assert first["sample_uid"].tolist() == [2, 2, 2, 0, 0, 0]
    del it  # an abandoned epoch still counts what it served
    assert [e.times_served for e in es] == [1, 0, 1]


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
    state = {"closed": False}

    def check() -> None:
        if state["closed"]:
            raise RuntimeError("closed")

    it = BatchIterator(
        snapshot_of(entries(4)), range(4), batch_size=1, drop_last=False, check=check, on_batch=calls.append
    )
    next(it)
    state["closed"] = True
    with pytest.raises(RuntimeError, match="closed"):
        next(it)
    assert calls == [1]


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

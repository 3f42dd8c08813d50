"""The plan of one epoch alone: what each batch holds, the budget, drop_last, rewind, the epoch's end (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.store import ReservoirStore
from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.snapshot import Snapshot
from dask_reservoir._runtime.epoch_plan import EpochPlan, end_epoch, snapshot_of


def entries(n: int, rows_per_entry: int = 1) -> list[Entry]:
    return [Entry(i, i, tuple({"sample_uid": i, "r": r} for r in range(rows_per_entry))) for i in range(n)]


def columnar(n: int) -> Snapshot:
    store = ReservoirStore(n)
    for i in range(n):
        store.put(Entry(i, i, ({"sample_uid": i, "x": np.full(2, float(i))},)))
    return store.snapshot()


def plan(
    snapshot: Snapshot,
    order: list[int],
    *,
    batch_size: int = 2,
    drop_last: bool = False,
    collate_fn: Callable[[list[dict[str, Any]]], Any] | None = None,
    max_samples: int | None = None,
    convert: Callable[[dict[str, np.ndarray]], Any] | None = None,
) -> EpochPlan:
    return EpochPlan(
        snapshot,
        np.asarray(order, dtype=np.int64),
        batch_size=batch_size,
        drop_last=drop_last,
        collate_fn=collate_fn,
        uid_column="sample_uid",
        max_samples=max_samples,
        convert=convert,
    )


def built_uids(p: EpochPlan) -> list[tuple[list[int], int, list[int], bool]]:
    out = []
    while (built := p.build()) is not None:
        batch, rows, chunk, last, _ = built
        out.append((batch["sample_uid"].tolist(), rows, chunk.tolist(), last))
    return out


@pytest.mark.parametrize("make", [lambda n: snapshot_of(entries(n)), columnar], ids=["collated", "gathered"])
def test_batches_follow_the_order_and_the_last_says_so(make: Callable[[int], Snapshot]) -> None:
    snap = make(5)
    p = plan(snap, [4, 2, 0, 1, 3])
    assert (p.table is not None) == snap.all_slotted
    assert built_uids(p) == [([4, 2], 2, [4, 2], False), ([0, 1], 2, [0, 1], False), ([3], 1, [3], True)]
    assert p.ended and p.cursor == 5 and p.rows == 5
    assert p.build() is None and p.ended
    snap.release()


@pytest.mark.parametrize("make", [lambda n: snapshot_of(entries(n)), columnar], ids=["collated", "gathered"])
def test_drop_last_ends_before_a_short_batch(make: Callable[[int], Snapshot]) -> None:
    snap = make(5)
    p = plan(snap, [0, 1, 2, 3, 4], drop_last=True)
    out = built_uids(p)
    assert [u for u, *_ in out] == [[0, 1], [2, 3]]
    # the short batch that drop_last drops is no batch: [2, 3] is the last one (the next epoch is
    # prepared when it is handed out, not when a next() finds the end)
    assert out[-1][3] is True
    assert p.ended and p.rows == 4  # the short batch was not built
    snap.release()


@pytest.mark.parametrize("make", [lambda n: snapshot_of(entries(n)), columnar], ids=["collated", "gathered"])
def test_an_exact_fit_is_last_with_its_last_batch(make: Callable[[int], Snapshot]) -> None:
    snap = make(4)
    p = plan(snap, [0, 1, 2, 3], drop_last=True)
    assert [last for *_, last in built_uids(p)] == [False, True]
    snap.release()


def test_max_samples_counts_rows_of_multi_row_entries() -> None:
    snap = snapshot_of(entries(5, rows_per_entry=2))
    p = plan(snap, [0, 1, 2, 3, 4], max_samples=5)
    first = p.build()
    assert first is not None and first[1] == 4 and first[2].tolist() == [0, 1] and not first[3]
    second = p.build()
    assert second is not None
    assert second[0]["r"].tolist() == [0] and second[1] == 1  # one row of entry 2: the budget
    assert second[2].tolist() == [2] and second[3]  # the budget is spent: the last batch
    assert p.build() is None
    snap.release()


def test_max_samples_bounds_gathered_batches_too() -> None:
    snap = columnar(5)
    p = plan(snap, [0, 1, 2, 3, 4], batch_size=2, max_samples=3)
    assert built_uids(p) == [([0, 1], 2, [0, 1], False), ([2], 1, [2], True)]
    snap.release()


def test_a_zero_budget_builds_nothing() -> None:
    snap = snapshot_of(entries(3))
    p = plan(snap, [0, 1, 2], max_samples=0)
    assert p.build() is None and p.ended and p.cursor == 0
    snap.release()


def test_rewind_builds_a_dropped_batch_again() -> None:
    snap = columnar(5)
    p = plan(snap, [0, 1, 2, 3, 4])
    first = p.build()
    second = p.build()
    assert first is not None and second is not None and second[4] == (2, 2)
    last = p.build()
    assert last is not None and p.ended
    p.rewind(second[4])
    assert not p.ended and (p.cursor, p.rows) == (2, 2)
    assert built_uids(p) == [([2, 3], 2, [2, 3], False), ([4], 1, [4], True)]
    snap.release()


def test_a_collate_fn_receives_copies_and_makes_the_batch() -> None:
    es = [Entry(0, 0, ({"sample_uid": 0, "x": np.zeros(2)},))]
    snap = snapshot_of(es)
    seen: list[list[dict[str, Any]]] = []

    def collate(rows: list[dict[str, Any]]) -> str:
        seen.append(rows)
        rows[0]["x"][:] = 7.0  # an in-place augmentation
        return "mine"

    p = plan(snap, [0], collate_fn=collate)
    assert p.table is None
    built = p.build()
    assert built is not None and built[0] == "mine"
    assert es[0].rows[0]["x"].tolist() == [0.0, 0.0]
    snap.release()


def test_convert_applies_to_each_batch() -> None:
    snap = columnar(3)
    p = plan(snap, [0, 1, 2], convert=sorted)
    assert [b[0] for b in iter(p.build, None)] == [["sample_uid", "x"], ["sample_uid", "x"]]
    snap.release()


def test_repr_shows_the_cursor() -> None:
    snap = snapshot_of(entries(3))
    p = plan(snap, [0, 1, 2])
    assert repr(p) == "<EpochPlan: cursor=0/3 rows=0 ended=False>"
    p.build()
    assert repr(p) == "<EpochPlan: cursor=2/3 rows=2 ended=False>"
    snap.release()


class FakeSnapshot:
    """Records what ending the epoch does to it."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.served: list[int] = []
        self.fail = fail

    def add_served(self, counts: np.ndarray) -> None:
        self.calls.append("add_served")
        if self.fail:
            raise KeyboardInterrupt
        self.served = counts.tolist()

    def release(self) -> None:
        self.calls.append("release")


def test_end_epoch_counts_the_serves_then_releases_now_without_a_builder() -> None:
    snap = FakeSnapshot()
    end_epoch(snap, np.array([2, 0, 1], dtype=np.int64), None)  # type: ignore[arg-type]
    assert snap.calls == ["add_served", "release"] and snap.served == [2, 0, 1]


def test_end_epoch_counts_into_the_entries() -> None:
    snap = snapshot_of(entries(3))
    end_epoch(snap, np.array([2, 0, 1], dtype=np.int64), None)
    assert [e.times_served for e in snap.entries] == [2, 0, 1]


def test_end_epoch_with_a_builder_runs_after_its_builds() -> None:
    snap = FakeSnapshot()
    later: list[Callable[[], None]] = []

    class Builder:
        def after(self, fn: Callable[[], None]) -> None:
            later.append(fn)

    end_epoch(snap, np.array([1, 1], dtype=np.int64), Builder())  # type: ignore[arg-type]
    assert snap.calls == []  # not yet
    (fn,) = later
    fn()
    assert snap.calls == ["add_served", "release"] and snap.served == [1, 1]


def test_end_epoch_releases_even_when_counting_is_interrupted() -> None:
    snap = FakeSnapshot(fail=True)
    with pytest.raises(KeyboardInterrupt):
        end_epoch(snap, np.array([1], dtype=np.int64), None)  # type: ignore[arg-type]
    assert snap.calls == ["add_served", "release"]

"""The batch builder thread, and epochs whose batches it builds ahead (no cluster)."""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.epoch_plan import snapshot_of
from dask_reservoir._runtime.prefetch import BatchBuilder
from tests.utils import poll_for


@pytest.fixture
def builder() -> Any:
    b = BatchBuilder(name="dask_reservoir-batches-test")
    yield b
    b.close()


def image_store(n: int) -> ReservoirStore:
    store = ReservoirStore(n)
    for i in range(n):
        store.put(Entry(i, i, ({"sample_uid": i, "image": np.full((2, 3), i, np.float32)},)))
    return store


def test_jobs_run_in_submission_order_and_releases_after_them(builder: BatchBuilder) -> None:
    gate = threading.Event()
    seen: list[str] = []
    first = builder.submit(lambda: (gate.wait(10), seen.append("build 1"))[1])
    second = builder.submit(lambda: seen.append("build 2"))
    builder.after(lambda: seen.append("release"))
    assert seen == []  # all wait behind the gated first build
    gate.set()
    first.result(timeout=10), second.result(timeout=10)
    poll_for(lambda: len(seen) == 3, what="the release job")
    assert seen == ["build 1", "build 2", "release"]
    assert builder.built == 2


def test_an_error_is_handed_to_the_waiting_consumer(builder: BatchBuilder) -> None:
    future = builder.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        future.result(timeout=10)
    assert builder.submit(lambda: "still running").result(timeout=10) == "still running"


def test_close_joins_the_thread_cancels_what_did_not_start_and_runs_releases() -> None:
    builder = BatchBuilder(name="dask_reservoir-batches-close-test")
    gate = threading.Event()
    running = builder.submit(lambda: gate.wait(10))
    poll_for(running.running, what="the first job to start")
    waiting = builder.submit(lambda: "never")
    released: list[int] = []
    builder.after(lambda: released.append(1))
    threading.Timer(0.2, gate.set).start()
    builder.close(timeout=10)
    assert running.result(timeout=0) is True  # the build in progress finished
    assert waiting.cancelled() and released == [1]
    assert not [t for t in threading.enumerate() if t.name == "dask_reservoir-batches-close-test"]
    assert builder.submit(lambda: 1).cancelled()
    builder.after(lambda: released.append(2))  # no thread any more: runs now
    assert released == [1, 2]
    builder.close()  # idempotent


def test_a_builder_never_used_starts_no_thread() -> None:
    builder = BatchBuilder(name="dask_reservoir-batches-unused")
    ran: list[int] = []
    builder.after(lambda: ran.append(1))
    assert ran == [1] and "idle" in repr(builder)
    builder.close()
    assert not [t for t in threading.enumerate() if t.name == "dask_reservoir-batches-unused"]


@pytest.mark.parametrize("prefetch", [1, 2, 5])
@pytest.mark.parametrize(
    ("batch_size", "drop_last", "max_samples"),
    [(3, False, None), (3, True, None), (4, False, 10), (1, False, 3)],
)
def test_batches_built_ahead_equal_batches_built_in_next(
    builder: BatchBuilder, prefetch: int, batch_size: int, drop_last: bool, max_samples: int | None
) -> None:
    store = image_store(17)
    order = np.random.default_rng(prefetch).permutation(17)
    kwargs: dict[str, Any] = {"batch_size": batch_size, "drop_last": drop_last, "max_samples": max_samples}
    plain = list(BatchIterator(store.snapshot(), order, **kwargs))
    ahead_it = BatchIterator(store.snapshot(), order, builder=builder, prefetch=prefetch, **kwargs)
    ahead = list(ahead_it)
    assert len(ahead) == len(plain) == len(ahead_it) and plain
    for a, b in zip(ahead, plain, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    # served twice (two epochs), once per epoch for each entry a batch held
    served = [store.get(i).times_served for i in range(17)]
    held = {int(u) for batch in plain for u in batch["sample_uid"]}
    assert served == [2 if i in held else 0 for i in range(17)]


def test_batches_built_ahead_are_fresh_and_never_alias_the_store(builder: BatchBuilder) -> None:
    store = image_store(8)
    batches = list(
        BatchIterator(
            store.snapshot(), np.arange(8), batch_size=4, drop_last=False, builder=builder, prefetch=2
        )
    )
    table = store.table
    assert table is not None
    for batch in batches:
        assert batch["image"].flags.writeable and not np.shares_memory(batch["image"], table.arrays["image"])
        batch["image"][:] = -1  # the user's own array
    again = list(BatchIterator(store.snapshot(), np.arange(8), batch_size=8, drop_last=False))
    np.testing.assert_array_equal(again[0]["image"][:, 0, 0], np.arange(8))


def test_collated_batches_are_built_ahead_too(builder: BatchBuilder) -> None:
    snapshot = snapshot_of(
        [Entry(i, i, ({"sample_uid": i, "r": 0}, {"sample_uid": i, "r": 1})) for i in range(5)]
    )
    calls: list[str] = []

    def collate(rows: list[dict[str, Any]]) -> list[int]:
        calls.append(threading.current_thread().name)
        return [row["sample_uid"] for row in rows]

    it = BatchIterator(
        snapshot, np.arange(5), batch_size=2, drop_last=False, collate_fn=collate, builder=builder, prefetch=2
    )
    batches = [next(it)]
    poll_for(lambda: builder.built >= 2, what="the next two batches to be built ahead")  # a training step
    batches += list(it)
    assert batches == [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4]]
    assert calls.count(builder.name) == 2  # the two later batches were built in the builder's thread


def test_an_unstarted_build_is_done_in_next(builder: BatchBuilder) -> None:
    gate = threading.Event()
    blocker = builder.submit(lambda: gate.wait(10))  # the builder is busy elsewhere
    poll_for(blocker.running, what="the blocking job to start")
    it = BatchIterator(
        image_store(6).snapshot(), np.arange(6), batch_size=2, drop_last=False, builder=builder, prefetch=2
    )
    try:
        first = next(it)  # its build is queued behind the blocker: built here instead
        assert first["sample_uid"].tolist() == [0, 1] and it.inline_builds == 1
    finally:
        gate.set()
    assert [b["sample_uid"].tolist() for b in it] == [[2, 3], [4, 5]]


def test_a_batch_built_ahead_but_never_handed_out_is_not_served(builder: BatchBuilder) -> None:
    store = image_store(6)
    it = BatchIterator(
        store.snapshot(), np.arange(6), batch_size=2, drop_last=False, builder=builder, prefetch=2
    )
    next(it)
    poll_for(lambda: builder.built >= 2, what="the batches after it to be built")
    del it
    gc.collect()
    poll_for(lambda: store.live_snapshots == 0, what="the dropped epoch's release")
    assert [store.get(i).times_served for i in range(6)] == [1, 1, 0, 0, 0, 0]


def test_a_dropped_epoch_is_released_only_after_its_build_in_progress(builder: BatchBuilder) -> None:
    store = image_store(4)
    gate = threading.Event()
    done: list[bool] = []

    def slow_collate(rows: list[dict[str, Any]]) -> int:
        gate.wait(10)
        done.append(store.live_snapshots == 1)  # still pinned while this build reads
        return len(rows)

    it = BatchIterator(
        store.snapshot(),
        np.arange(4),
        batch_size=2,
        drop_last=False,
        collate_fn=slow_collate,
        builder=builder,
        prefetch=1,
    )
    pending = it._pending  # the futures only: dropping the iterator stays possible
    poll_for(lambda: bool(pending) and pending[0].running(), what="the build to start")
    del it
    gc.collect()
    assert store.live_snapshots == 1  # the build in progress still reads it
    gate.set()
    poll_for(lambda: store.live_snapshots == 0, what="the release after the build")
    assert done == [True]


def test_batches_built_ahead_are_one_budget_for_all_iterators() -> None:
    """Each live iterator kept ``prefetch`` built batches: memory grew with the iterators held."""
    builder = BatchBuilder(name="dask_reservoir-batches-budget", max_ahead=2)
    try:
        store = image_store(8)
        held = []
        for _ in range(10):
            it = BatchIterator(
                store.snapshot(), np.arange(8), batch_size=2, drop_last=False, builder=builder, prefetch=2
            )
            next(it)
            held.append(it)
            builder.submit(lambda: None).result(timeout=10)  # every build submitted before has run
            assert builder.ahead <= 2
        # an iterator beyond the budget builds in next(): every epoch still serves every entry once
        for it in held:
            assert sorted(u for b in it for u in b["sample_uid"].tolist()) == list(range(2, 8))
        assert builder.ahead == 0
    finally:
        builder.close()


def test_a_newer_epoch_takes_the_budget_and_the_older_one_builds_its_dropped_batches_again(
    builder: BatchBuilder,
) -> None:
    store = image_store(8)
    old = BatchIterator(
        store.snapshot(), np.arange(8), batch_size=2, drop_last=False, builder=builder, prefetch=2, epoch=0
    )
    assert next(old)["sample_uid"].tolist() == [0, 1]
    builder.submit(lambda: None).result(timeout=10)
    assert old.note_newer_epoch(max_stale=2) is False  # behind by one: its built batches are dropped
    assert builder.ahead == 0 and old.behind == 1
    assert [b["sample_uid"].tolist() for b in old] == [[2, 3], [4, 5], [6, 7]]  # none skipped
    assert old.note_newer_epoch(max_stale=2) is None  # exhausted: nothing to track
    poll_for(lambda: store.live_snapshots == 0, what="the epoch's release")

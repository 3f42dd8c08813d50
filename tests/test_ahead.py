"""Epochs prepared ahead: the next epoch's ingest, snapshot, order and first batches while the step runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from distributed import Client

import dask_reservoir._runtime.ahead as ahead_module
from dask_reservoir import AsyncReservoir, RandomSampler
from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._runtime.ahead import EpochAhead, Prepared
from dask_reservoir._runtime.batches import BatchIterator
from dask_reservoir._runtime.prefetch import BatchBuilder
from tests.utils import frame, load_value, poll_for


@pytest.fixture
def builder() -> Iterator[BatchBuilder]:
    b = BatchBuilder(name="dask_reservoir-batches-test", max_ahead=2)
    yield b
    b.close()


def _store(n: int) -> ReservoirStore:
    store = ReservoirStore(n)
    for i in range(n):
        store.put(Entry(i, i, ({"sample_uid": i, "x": np.full(2, i, np.int64)},)))
    return store


def _prepared(store: ReservoirStore, builder: BatchBuilder, epoch: int = 3) -> Prepared:
    it = BatchIterator(
        store.snapshot(), np.arange(len(store)), batch_size=2, drop_last=False, builder=builder, prefetch=2
    )
    return Prepared(it, epoch, time.monotonic())


# ---------------------------------------------------------------- EpochAhead, without a cluster
def test_a_prepared_epoch_is_handed_over_once_with_its_batches(builder: BatchBuilder) -> None:
    store = _store(4)
    ahead = EpochAhead(builder, lambda: _prepared(store, builder))
    assert ahead.start() and not ahead.start()  # one preparation at a time
    poll_for(lambda: ahead.prepared == 1, what="the preparation")
    it = ahead.take(epoch=3)
    assert it is not None and ahead.take(epoch=3) is None  # handed once
    assert [b["sample_uid"].tolist() for b in it] == [[0, 1], [2, 3]]
    assert (ahead.handed, ahead.dropped, store.live_snapshots) == (1, 0, 0)


def test_a_prepared_epoch_of_another_number_or_too_old_is_dropped_and_released(
    builder: BatchBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(4)
    ahead = EpochAhead(builder, lambda: _prepared(store, builder, epoch=3))
    ahead.start()
    poll_for(lambda: ahead.prepared == 1, what="the preparation")
    assert ahead.take(epoch=4) is None  # set_epoch() asked for another epoch
    poll_for(lambda: store.live_snapshots == 0, what="the dropped epoch's release")
    monkeypatch.setattr(ahead_module, "PREPARED_MAX_AGE", 0.0)
    ahead.start()
    poll_for(lambda: ahead.prepared == 2, what="the second preparation")
    assert ahead.take(epoch=3) is None  # older than PREPARED_MAX_AGE
    poll_for(lambda: store.live_snapshots == 0, what="the old epoch's release")
    assert (ahead.handed, ahead.dropped) == (0, 2)


def test_a_queued_preparation_is_cancelled_a_running_one_waited_for(builder: BatchBuilder) -> None:
    store = _store(4)
    gate, started = threading.Event(), threading.Event()

    def slow() -> Prepared:
        started.set()
        gate.wait(10)
        return _prepared(store, builder)

    blocker = builder.submit(lambda: gate.wait(10))  # the builder is busy: the preparation waits
    ahead = EpochAhead(builder, slow)
    ahead.start()
    assert ahead.take(epoch=3) is None and not started.is_set()  # cancelled before it started
    gate.set()
    blocker.result(timeout=10)
    gate.clear()
    ahead.start()
    assert started.wait(10)
    threading.Timer(0.05, gate.set).start()
    it = ahead.take(epoch=3)  # running: waited for
    assert it is not None and ahead.handed == 1
    it.close()
    assert store.live_snapshots == 0


def test_close_drops_the_prepared_epoch_and_prepares_nothing_more(builder: BatchBuilder) -> None:
    store = _store(4)
    ahead = EpochAhead(builder, lambda: _prepared(store, builder))
    ahead.start()
    poll_for(lambda: ahead.prepared == 1, what="the preparation")
    ahead.close()
    ahead.close()  # idempotent
    poll_for(lambda: store.live_snapshots == 0, what="the release of the dropped epoch")
    assert not ahead.start() and ahead.take(epoch=3) is None and ahead.dropped == 1


def test_a_failed_preparation_hands_nothing(builder: BatchBuilder) -> None:
    def fail() -> Prepared:
        raise RuntimeError("boom")

    ahead = EpochAhead(builder, fail)
    ahead.start()
    job = ahead._job
    assert job is not None
    poll_for(job.done, what="the failing preparation")
    assert ahead.take(epoch=0) is None and ahead.prepared == 0


# ---------------------------------------------------------------- through the reservoir
def _check(batch: dict[str, Any]) -> None:
    uids = batch["sample_uid"]
    assert (batch["label"] == uids).all() and (batch["image"][:, 0, 0] == uids).all()


def _run_epochs(r: AsyncReservoir, epochs: int) -> list[list[int]]:
    """Exhaust ``epochs`` epochs, each batch checked, letting the next one be prepared between."""
    served = []
    for _ in range(epochs):
        uids: list[int] = []
        for batch in r:
            _check(batch)
            uids += batch["sample_uid"].tolist()
        served.append(uids)
        ahead = r._p.epochs.ahead
        poll_for(lambda a=ahead: a._job is None or a._job.done(), what="the next epoch's preparation")
    return served


def test_exhausted_epochs_hand_over_prepared_ones_serving_the_right_rows(client: Client) -> None:
    with AsyncReservoir(
        frame(300),
        load_value,
        16,
        min_reservoir_samples=16,
        client=client,
        batch_size=5,
        reservoir_sampler=RandomSampler(seed=1),
    ) as r:
        served = _run_epochs(r, 30)
        stats = r.stats()
        assert stats.epochs == 30 and stats.epochs_prepared == 29  # all but the first
        assert all(len(set(uids)) == len(uids) == 16 for uids in served)  # each entry once per epoch
        assert stats.entries_ingested > 16  # loading went on: prepared epochs ingest too
        assert r._p.epochs.ahead.dropped == 0


def test_set_epoch_drops_the_prepared_epoch(client: Client) -> None:
    with AsyncReservoir(
        frame(12),
        load_value,
        12,
        min_reservoir_samples=12,
        client=client,
        batch_size=4,
        reservoir_sampler=RandomSampler(seed=0),
    ) as r:
        (first,) = _run_epochs(r, 1)
        r.set_epoch(0)
        (again,) = _run_epochs(r, 1)
        assert again == first and r._p.epochs.ahead.dropped == 1
        assert r.stats().epochs_prepared == 0


def test_deterministic_runs_and_prefetch_0_never_prepare(client: Client) -> None:
    for options in ({"deterministic": True, "max_reservoir_replacement_size": 4}, {"prefetch_batches": 0}):
        with AsyncReservoir(
            frame(40),
            load_value,
            8,
            min_reservoir_samples=8,
            client=client,
            batch_size=4,
            reservoir_sampler=RandomSampler(seed=0),
            **options,
        ) as r:
            _run_epochs(r, 4)
            assert r.stats().epochs_prepared == 0 and r._p.epochs.ahead.prepared == 0, options


def test_an_old_prepared_epoch_is_dropped_for_a_fresh_one(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ahead_module, "PREPARED_MAX_AGE", 0.0)
    with AsyncReservoir(frame(100), load_value, 8, min_reservoir_samples=8, client=client, batch_size=4) as r:
        _run_epochs(r, 5)
        ahead = r._p.epochs.ahead
        assert r.stats().epochs_prepared == 0 and (ahead.prepared, ahead.dropped) == (5, 4)  # the 6th waits


def test_close_releases_a_prepared_epoch(client: Client) -> None:
    r = AsyncReservoir(frame(30), load_value, 8, min_reservoir_samples=8, client=client, batch_size=4)
    _run_epochs(r, 2)
    ahead = r._p.epochs.ahead
    assert ahead.prepared == 2 and ahead.handed == 1  # the third epoch waits, prepared
    store = r._p.store
    assert store.live_snapshots == 1
    r.close()
    r.close()
    assert store.live_snapshots == 0 and ahead.dropped == 1


def test_a_prepared_epoch_ingests_at_most_the_replacement_cap(client: Client) -> None:
    with AsyncReservoir(
        frame(60),
        load_value,
        60,
        min_reservoir_samples=5,
        client=client,
        batch_size=1,
        max_reservoir_replacement_size=3,
    ) as r:
        ahead = r._p.epochs.ahead
        for _ in range(4):
            it = iter(r)
            for _ in range(len(it) - 1):
                _check(next(it))
            poll_for(lambda: r.stats().entries_waiting >= 4, what="more entries waiting than the cap")
            before = r.stats().entries_ingested
            _check(next(it))  # the last batch: the next epoch is prepared now
            poll_for(lambda a=ahead: a.holding == 1, what="the next epoch's preparation")
            assert r.stats().entries_ingested - before == 3
            assert list(it) == []
        assert r.stats().epochs_prepared == 3


def test_a_dropped_prepared_epoch_leaves_the_served_epoch_within_the_replacement_cap(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dropped preparation had ingested a cap's worth, and iter() then ingested another."""
    monkeypatch.setattr(ahead_module, "PREPARED_MAX_AGE", 0.0)  # every prepared epoch is dropped
    with AsyncReservoir(
        frame(200),
        load_value,
        60,
        min_reservoir_samples=5,
        client=client,
        batch_size=1,
        max_reservoir_replacement_size=3,
    ) as r:
        ahead = r._p.epochs.ahead
        mark = None
        for epoch in range(4):
            it = iter(r)
            if mark is not None:  # new entries of this epoch: its preparation's (dropped) and iter()'s
                assert r.stats().entries_ingested - mark == 3
            for _ in range(len(it) - 1):
                _check(next(it))
            poll_for(lambda: r.stats().entries_waiting >= 6, what="twice the cap waiting")
            mark = r.stats().entries_ingested
            _check(next(it))  # the last batch: a preparation ingests 3, then is dropped at iter()
            poll_for(lambda a=ahead, e=epoch: a.prepared == e + 1, what="the next epoch's preparation")
            assert list(it) == []
        assert ahead.dropped == 3 and r.stats().epochs_prepared == 0

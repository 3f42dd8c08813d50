"""Epoch bookkeeping users expect: len() of an epoch, set_epoch(), coverage in stats()."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, RandomSampler
from tests.utils import frame, iterate_until, load_value, poll_for


def order_of(r: AsyncReservoir) -> list[int]:
    return [int(u) for b in r for u in b["sample_uid"]]


def empty_epoch_warnings(r: AsyncReservoir) -> list[str]:
    """Serve an epoch that must yield no batch; the warnings it raised, as ``file: message``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert list(r) == []
    return [f"{w.filename}: {w.message}" for w in caught]


def no_batch(entries: int, batch_size: int = 8) -> str:
    """The warning of an epoch of ``entries`` that drop_last empties, raised at this file's line."""
    return (
        f"{__file__}: batch_size={batch_size} is larger than the {entries} entries this epoch serves "
        "and drop_last=True: the epoch yields no batch"
    )


def test_set_epoch_numbers_the_samplers_epochs(client: Client) -> None:
    with AsyncReservoir(
        frame(12),
        load_value,
        12,
        min_reservoir_samples=12,
        client=client,
        batch_size=4,
        reservoir_sampler=RandomSampler(seed=0),
    ) as r:
        first, second = order_of(r), order_of(r)
        assert first != second and sorted(first) == list(range(12))
        r.set_epoch(0)
        assert order_of(r) == first  # epoch 0 again: the same order
        assert order_of(r) == second  # and the numbering goes on from there
        r.set_epoch(7)
        seventh = order_of(r)
        r.set_epoch(7)
        assert order_of(r) == seventh
        assert r.stats().epochs == 6  # epochs started, whatever their numbers
        with pytest.raises(ValueError, match="epoch must be >= 0, got -1"):
            r.set_epoch(-1)
        with pytest.raises(TypeError, match=r"epoch must be an int, got float: 1\.0"):
            r.set_epoch(1.0)  # type: ignore[arg-type]


def test_len_of_an_epoch_is_its_batch_count(client: Client) -> None:
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=4
    ) as r:
        it = iter(r)
        assert len(it) == 3 == len(list(it))
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=4, drop_last=True
    ) as r:
        it = iter(r)
        assert len(it) == 2 == len(list(it))


def test_coverage_counts_loaded_served_passes_and_the_oldest_unserved(client: Client) -> None:
    with AsyncReservoir(
        frame(20),
        load_value,
        5,
        min_reservoir_samples=5,
        client=client,
        batch_size=1,
        maximum_number_of_samples_per_epoch=1,  # one UID served per epoch: most are never served
        rows_per_job=1,
        prefetch_batches=0,  # no epoch prepared ahead: nothing is ingested between stats() and state_dict()
    ) as r:
        served: set[int] = set()
        iterate_until(
            r, lambda: r.stats().source_passes >= 1, check=lambda b: served.update(b["sample_uid"].tolist())
        )
        poll_for(lambda: r.stats().uids_loaded == 20, what="every UID loaded once")
        s = r.stats()
        assert s.uids_served == len(served) and 0 < s.uids_served < 20
        entries = {int(u) for b in r for u in b["sample_uid"]}  # one more epoch, counted too
        s = r.stats()
        assert s.uids_served == len(served | entries)
        # the oldest entry no batch has held yet (its UID may have been served before, by an
        # entry of an earlier pass since replaced)
        unserved = [m["uid"] for m in r.state_dict()["members"] if m["times_served"] == 0]
        assert unserved and s.oldest_unserved_uid == unserved[0]
        assert s.oldest_unserved_uid not in entries
        assert s.source_passes >= 1 and s.uids_loaded == 20


def test_every_uid_served_is_counted_once_over_many_epochs(client: Client) -> None:
    with AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=client, batch_size=3) as r:
        for _ in range(5):
            list(r)
        s = r.stats()
        assert s.uids_served == 8 and s.oldest_unserved_uid is None
        assert np.isfinite(s.times_served_mean) and s.times_served_mean >= 1


# --------------------------------------------------------------------------- held and stale iterators
# issue 16, points 5b and 7: nothing a consumer holds, drops or abandons stops the refresh


def test_a_held_iterator_is_expired_and_the_refresh_goes_on(client: Client) -> None:
    """``it = iter(r); next(it)`` kept forever paused ingestion for as long as it lived."""
    from dask_reservoir.errors import IteratorExpiredError

    capacity = 6
    with AsyncReservoir(
        frame(400), load_value, capacity, min_reservoir_samples=capacity, client=client, batch_size=2
    ) as r:
        held = iter(r)
        first = next(held)
        # the held epoch's entries are pinned until max_stale_epochs (2) newer epochs started;
        # the third one expires it, and ingestion goes on however long it is kept
        ingested = r.stats().entries_ingested
        iterate_until(r, lambda: r.stats().entries_ingested >= ingested + 10 * capacity, timeout=60)
        assert r.stats().entries_pinned == 0 and r.stats().live_iterators == 0
        with pytest.raises(IteratorExpiredError, match=r"not advanced while \d+ newer epochs started") as err:
            next(held)
        assert err.value.behind > 2 and "max_stale_epochs=2" in str(err.value)
        assert first["label"].tolist() == first["sample_uid"].tolist()


def test_an_iterator_read_within_max_stale_epochs_serves_its_whole_epoch(client: Client) -> None:
    """A validation loop's reference read after two newer epochs still gets the entries it started with."""
    with AsyncReservoir(frame(60), load_value, 6, min_reservoir_samples=6, client=client, batch_size=2) as r:
        held = iter(r)
        started = [int(u) for u in next(held)["sample_uid"]]
        for _ in range(2):
            for _batch in r:
                pass
        rest = [int(u) for b in held for u in b["sample_uid"]]
        assert len(started + rest) == 6 and len(set(started + rest)) == 6
        assert r.stats().live_iterators == 0


def test_two_threads_advancing_their_own_epochs_are_not_expired(client: Client) -> None:
    """Between two ``next()`` of one thread's epoch, the other thread runs a whole epoch."""
    import threading

    turn = [threading.Event(), threading.Event()]
    errors: list[BaseException] = []
    served = [0, 0]

    def consumer(me: int, r: AsyncReservoir) -> None:
        try:
            for _ in range(4):
                for batch in r:
                    assert (batch["label"] == batch["sample_uid"]).all()
                    served[me] += 1
                    turn[me].clear()
                    turn[1 - me].set()  # the other thread goes on: starts epochs, advances its own
                    if not turn[me].wait(30):
                        raise AssertionError("the other thread never handed back")
        except BaseException as exc:
            errors.append(exc)
        finally:
            turn[1 - me].set()  # never leave the other thread waiting
            done[me] = True

    done = [False, False]
    with AsyncReservoir(frame(40), load_value, 6, min_reservoir_samples=6, client=client, batch_size=2) as r:
        threads = [threading.Thread(target=consumer, args=(k, r)) for k in (0, 1)]
        turn[0].set()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert all(done) and served == [12, 12]


def test_an_error_raised_inside_iter_leaks_no_snapshot(client: Client) -> None:
    """A warning turned into an error between the snapshot and the iterator leaked the snapshot."""
    import gc

    capacity = 4
    with AsyncReservoir(
        frame(200),
        load_value,
        capacity,
        min_reservoir_samples=capacity,
        client=client,
        batch_size=capacity + 1,  # larger than the epoch: iter() warns that it yields no batch
        drop_last=True,
    ) as r:
        for _ in range(5):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with pytest.raises(UserWarning, match="the epoch yields no batch"):
                    iter(r)
        gc.collect()
        assert r.stats().live_iterators == 0 and r.stats().entries_pinned == 0
        ingested = r.stats().entries_ingested
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iterate_until(r, lambda: r.stats().entries_ingested >= ingested + 10 * capacity, timeout=60)


def test_deterministic_iter_never_waits_on_the_iterators_of_earlier_epochs(client: Client) -> None:
    """deterministic=True: with earlier epochs' iterators alive, iter() blocked after one throttle warning."""
    from dask_reservoir.errors import IteratorExpiredError

    capacity = 8
    with AsyncReservoir(
        frame(200),
        load_value,
        capacity,
        min_reservoir_samples=capacity,
        client=client,
        batch_size=2,
        deterministic=True,
        max_reservoir_replacement_size=4,
        timeout=60,  # a guard: the stall raised TimeoutError here instead of hanging the test
    ) as r:
        held = []
        for _ in range(8):
            it = iter(r)  # each epoch ingests 4 new entries, while all the earlier iterators live
            batch = next(it)
            assert (batch["label"] == batch["sample_uid"]).all()
            held.append(it)
        assert r.stats().entries_ingested == capacity + 7 * 4
        expired = 0
        for it in held:
            try:
                for batch in it:
                    assert (batch["label"] == batch["sample_uid"]).all()
            except IteratorExpiredError:
                expired += 1
        assert 0 < expired < len(held)  # the newest epochs read on; older ones were expired


def test_every_epoch_drop_last_empties_warns_at_the_users_line(client: Client) -> None:
    """An epoch prepared ahead (built with warnings silenced in the builder's thread) warned nowhere."""
    with AsyncReservoir(
        frame(20),
        load_value,
        6,
        min_reservoir_samples=4,
        client=client,
        batch_size=8,  # more than the reservoir ever holds
        drop_last=True,
    ) as r:
        for epoch in range(6):
            caught = empty_epoch_warnings(r)
            mine = [m for m in caught if m.endswith("the epoch yields no batch")]
            assert len(mine) == 1 and mine[0] in {no_batch(n) for n in range(4, 7)}, (
                f"epoch {epoch}: {caught}"
            )
            ahead = r._p.epochs.ahead
            poll_for(lambda a=ahead: a.holding == 1, what="the next epoch's preparation")
        assert r.stats().epochs_prepared == 5  # all but the first were handed over from ahead, and warned


def test_an_epoch_cut_below_batch_size_by_its_maximum_warns(client: Client) -> None:
    """maximum_number_of_samples_per_epoch < batch_size with drop_last: no batch, and it said nothing."""
    with AsyncReservoir(
        frame(20),
        load_value,
        12,
        min_reservoir_samples=12,
        client=client,
        batch_size=8,
        drop_last=True,
        maximum_number_of_samples_per_epoch=5,
    ) as r:
        for epoch in range(3):
            caught = empty_epoch_warnings(r)
            assert caught.count(no_batch(5)) == 1, f"epoch {epoch}: {caught}"


class SlowOrder(RandomSampler):
    """A reservoir sampler that says when the batch builder calls it, then takes 0.3 s."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.consumer = threading.get_ident()
        self.called = threading.Event()

    def indices(self, n: int, *, epoch: int) -> np.ndarray:
        if threading.get_ident() != self.consumer:  # the next epoch, prepared ahead
            self.called.set()
        time.sleep(0.3)  # the order of a large reservoir
        return np.arange(n)


def test_preparing_an_epoch_ahead_leaves_the_callers_warning_filters_alone(client: Client) -> None:
    """The builder thread's catch_warnings() (filters are the process's) recorded, lost and silenced warnings.

    Each ``iter()`` is called while the builder orders the next epoch, and waits for it.
    """
    before = list(warnings.filters)
    order = SlowOrder()
    with AsyncReservoir(
        frame(20),
        load_value,
        6,
        min_reservoir_samples=4,
        client=client,
        batch_size=8,
        drop_last=True,
        reservoir_sampler=order,
    ) as r:
        for epoch in range(4):
            order.called.clear()
            caught = empty_epoch_warnings(r)
            mine = [m for m in caught if m.endswith("the epoch yields no batch")]
            assert len(mine) == 1 and mine[0] in {no_batch(n) for n in range(4, 7)}, (
                f"epoch {epoch}: {caught}"
            )
            assert warnings.filters == before, f"epoch {epoch}: the filters changed"
            assert order.called.wait(timeout=30), "the next epoch was not prepared"
        assert r.stats().epochs_prepared == 3


def test_a_warning_raised_at_the_hand_over_of_a_prepared_epoch_keeps_its_accounts(client: Client) -> None:
    """Raised before the hand-over was counted, the next epoch's refresh was charged what the prepared one took."""
    with AsyncReservoir(
        frame(40),
        load_value,
        30,
        min_reservoir_samples=4,
        client=client,
        batch_size=100,
        drop_last=True,
        max_reservoir_replacement_size=2,
    ) as r:
        poll_for(lambda: r.stats().entries_waiting >= 20, what="entries waiting")
        ahead = r._p.epochs.ahead
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert list(r) == []  # epoch 0 ends: epoch 1 is prepared ahead
        poll_for(lambda: ahead.holding == 1, what="the next epoch's preparation")
        size = r.reservoir_size()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(UserWarning, match="the epoch yields no batch"):
                iter(r)  # hands over epoch 1, then warns
        stats = r.stats()
        assert stats.epochs_prepared == 1
        assert stats.live_iterators == 0 and stats.entries_pinned == 0  # closed at once, not at gc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iter(r).close()  # epoch 2 ingests its own refresh, up to the cap
        assert r.reservoir_size() == size + 2

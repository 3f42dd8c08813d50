"""AsyncReservoir end to end on a real threaded LocalCluster (2 workers x 1 thread)."""

from __future__ import annotations

import threading
import time
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import (
    AsyncReservoir,
    JobError,
    RandomSampler,
    ReservoirClosedError,
    SequenceAsyncReservoir,
    SequentialSampler,
)
from tests import utils
from tests.utils import frame, iterate_until, load_value, poll_for

LOADS: dict[Any, int] = {}
LOADS_LOCK = threading.Lock()


def counting_load(row: dict[str, Any]) -> dict[str, Any]:
    """Counts loads per UID (tasks run in this process on a threaded cluster)."""
    with LOADS_LOCK:
        LOADS[row["sample_uid"]] = LOADS.get(row["sample_uid"], 0) + 1
        count = LOADS[row["sample_uid"]]
    return {"label": int(row["value"]), "load": count}


def fail_on_odd(row: dict[str, Any]) -> dict[str, Any]:
    if row["value"] % 2:
        raise ValueError(f"corrupt file {row['value']}")
    return load_value(row)


def test_batches_flow_with_uids_and_shapes(client: Client) -> None:
    with AsyncReservoir(
        frame(20), load_value, 20, min_reservoir_samples=20, client=client, batch_size=8, rows_per_job=1
    ) as r:
        batches = list(r)
        assert [len(b["label"]) for b in batches] == [8, 8, 4]
        first = batches[0]
        assert set(first) == {"image", "label", "sample_uid"}
        assert first["image"].shape == (8, 2, 3) and first["image"].dtype == np.float32
        # sequential sampler: source order, and each row's label matches its UID
        assert np.concatenate([b["sample_uid"] for b in batches]).tolist() == list(range(20))
        assert np.concatenate([b["label"] for b in batches]).tolist() == list(range(20))
        s = r.stats()
        assert s.reservoir_size == 20 and s.epochs == 1 and s.samples_served == 20 and s.batches_served == 3
        assert s.jobs_completed >= 20
        # one job per row (rows_per_job=1): each of the 20 was sent and received
        assert r.perf_sending.count >= 20 and r.perf_receiving.count >= 20


def test_alias_and_repr(client: Client) -> None:
    assert SequenceAsyncReservoir is AsyncReservoir
    with AsyncReservoir(frame(4), load_value, 4, client=client) as r:
        text = repr(r)
        assert text.startswith("<AsyncReservoir: size=") and "status=running" in text and "in_flight=" in text
    assert "status=closed" in repr(r)


def test_iter_waits_for_minimum(client: Client) -> None:
    utils.GATE.clear()
    r = AsyncReservoir(
        frame(30), utils.gated_load, 30, min_reservoir_samples=12, client=client, max_jobs_at_once=30
    )
    try:
        assert r.reservoir_size() == 0
        threading.Timer(0.2, utils.GATE.set).start()
        it = iter(r)
        assert r.reservoir_size() >= 12
        assert len(list(it)) == r.reservoir_size()
        # the gate opened 0.2 s after iter() started: it blocked at least that long
        assert r.stats().consumer_wait_seconds >= 0.15
    finally:
        utils.GATE.set()
        r.close()


def test_min_capped_by_source_rows(client: Client) -> None:
    with AsyncReservoir(frame(3), load_value, 10, min_reservoir_samples=10, client=client) as r:
        assert len(list(r)) == 3


def test_back_pressure_bound_in_tasks(client: Client) -> None:
    jobs, rows = 3, 6  # 3 tasks of 2 rows
    with AsyncReservoir(
        frame(100), load_value, 50, client=client, max_jobs_at_once=jobs, rows_per_job=2
    ) as r:
        assert (r.max_jobs_at_once, r.max_rows_at_once) == (jobs, rows)

        def within_bound_and_full() -> bool:
            s = r.stats()
            assert s.rows_in_flight + s.entries_waiting <= rows and s.jobs_in_flight <= jobs, s
            return s.entries_waiting == rows

        poll_for(within_bound_and_full, what="waiting entries to reach the bound")
        submitted = r.stats().jobs_submitted
        assert submitted == jobs  # nothing more while nobody ingests
        poll_for(lambda: r.stats().loading_held_seconds > 0, what="the bound to be seen holding loading back")
        it = iter(r)  # ingests the waiting entries, which frees room
        assert r.reservoir_size() == rows and len(list(it)) == rows
        poll_for(lambda: r.stats().jobs_submitted > submitted, what="jobs to resume after ingestion")
        poll_for(within_bound_and_full, what="the bound again")


def test_a_bound_of_fewer_tasks_than_rows_per_job_is_fine(client: Client) -> None:
    with AsyncReservoir(
        frame(20), load_value, 20, min_reservoir_samples=20, client=client, max_jobs_at_once=1, rows_per_job=4
    ) as r:
        assert (r.max_jobs_at_once, r.max_rows_at_once) == (1, 4)
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == list(range(20))
        assert r.stats().jobs_submitted >= 5


def test_default_bound_is_in_tasks(client: Client) -> None:
    # 2 worker threads (the fixture): max(2 x 2, 8) = 8 tasks of 3 rows in flight or waiting
    with AsyncReservoir(frame(100), load_value, 50, client=client, rows_per_job=3) as r:
        assert (r.max_jobs_at_once, r.max_rows_at_once) == (8, 24)

        def within_bound_and_full() -> bool:
            s = r.stats()
            assert s.rows_in_flight + s.entries_waiting <= 24, s
            return s.entries_waiting == 24

        poll_for(within_bound_and_full, what="waiting entries to reach the default bound")
        s = r.stats()
        assert (s.jobs_submitted, s.rows_submitted, s.rows_in_flight) == (8, 24, 0)  # nobody ingests
    # never more rows out than the reservoir holds
    with AsyncReservoir(frame(100), load_value, 10, client=client, rows_per_job=3) as r:
        assert (r.max_jobs_at_once, r.max_rows_at_once) == (8, 10)


def test_keyed_replacement_no_duplicates(client: Client) -> None:
    # iter() ingests what waits when it is called: no epoch prepared ahead (prefetch_batches=0)
    with AsyncReservoir(
        frame(3), load_value, 10, min_reservoir_samples=3, client=client, prefetch_batches=0
    ) as r:
        list(r)
        poll_for(lambda: r.stats().entries_waiting >= 3, what="a second pass to finish")
        list(r)
        s = r.stats()
        assert s.reservoir_size == 3 and s.entries_replaced >= 3 and s.entries_evicted == 0
        batch_uids = [b["sample_uid"][0] for b in r]
        assert sorted(batch_uids) == [0, 1, 2]


def test_eviction_of_oldest(client: Client) -> None:
    with AsyncReservoir(
        frame(40), load_value, 5, min_reservoir_samples=5, client=client, max_jobs_at_once=2, rows_per_job=15
    ) as r:
        poll_for(lambda: r.stats().entries_waiting >= 30, what="30 finished entries (2 tasks of 15 rows)")
        it = iter(r)
        s = r.stats()
        assert s.reservoir_size == 5 and s.entries_evicted >= 25
        assert len({int(b["sample_uid"][0]) for b in it}) == 5


RELOADS = threading.Event()


def first_load_free_then_gated(row: dict[str, Any]) -> dict[str, Any]:
    """Counts loads per UID; every load after a UID's first waits for RELOADS."""
    out = counting_load(row)
    if out["load"] > 1:
        RELOADS.wait(30)
    return out


def test_epoch_snapshot_is_frozen(client: Client) -> None:
    LOADS.clear()
    RELOADS.clear()
    with AsyncReservoir(frame(4), first_load_free_then_gated, 4, min_reservoir_samples=4, client=client) as r:
        try:
            it = iter(r)  # the first loads only: reloads are held back
        finally:
            RELOADS.set()
        poll_for(lambda: r.stats().entries_waiting >= 4, what="fresh loads of every UID")
        # the held iterator pins its 4 entries: only the headroom (ceil(4 / 2) = 2 slots)
        # may take fresh ones, the other fresh loads wait
        fresh = iter(r)
        assert r.stats().entries_pinned == 2 and r.stats().live_iterators == 2
        old = [(int(b["sample_uid"][0]), int(b["load"][0])) for b in it]
        new = [(int(b["sample_uid"][0]), int(b["load"][0])) for b in fresh]
        assert old == [(0, 1), (1, 1), (2, 1), (3, 1)]  # frozen: the first loads, in source order
        assert sorted(n for _, n in new) == [1, 1, 2, 2]
        # once both epochs ended, nothing is pinned and the waiting loads come in
        assert r.stats().entries_pinned == 0 and r.stats().live_iterators == 0
        assert min(int(b["load"][0]) for b in r) >= 2


def test_replacement_cap_per_iter(client: Client) -> None:
    """Each ``iter()`` ingests at most the cap (no epoch prepared ahead: ``prefetch_batches=0``;
    an epoch prepared ahead ingests at most the cap too, see tests/test_ahead.py)."""
    with AsyncReservoir(
        frame(50),
        load_value,
        50,
        min_reservoir_samples=5,
        client=client,
        max_reservoir_replacement_size=3,
        max_jobs_at_once=40,
        prefetch_batches=0,
    ) as r:
        list(r)
        assert r.reservoir_size() >= 5
        for _ in range(4):
            poll_for(lambda: r.stats().entries_waiting >= 3, what="entries to ingest")
            before = r.stats().entries_ingested
            list(r)
            assert r.stats().entries_ingested - before == 3


def test_seeded_sampler_reproducible_across_reservoirs(client: Client) -> None:
    def run() -> list[list[int]]:
        with AsyncReservoir(
            frame(16),
            load_value,
            16,
            min_reservoir_samples=16,
            client=client,
            reservoir_sampler=RandomSampler(seed=5),
            batch_size=4,
            max_reservoir_replacement_size=1,
        ) as r:
            return [[int(u) for b in r for u in b["sample_uid"]] for _ in range(3)]

    a, b = run(), run()
    assert a == b
    assert a[0] != a[1] and sorted(a[0]) == list(range(16))


def test_random_with_replacement_num_samples(client: Client) -> None:
    sampler = RandomSampler(replacement=True, num_samples=40, seed=1)
    with AsyncReservoir(
        frame(5),
        load_value,
        5,
        min_reservoir_samples=5,
        client=client,
        reservoir_sampler=sampler,
        batch_size=10,
    ) as r:
        uids = np.concatenate([b["sample_uid"] for b in r])
        assert len(uids) == 40 and set(uids.tolist()) <= set(range(5))
        # with replacement, 40 seeded draws of 5 UIDs are not 8 permutations (8 of each)
        assert np.bincount(uids, minlength=5).tolist() != [8] * 5


def test_max_samples_per_epoch_and_drop_last(client: Client) -> None:
    with AsyncReservoir(
        frame(10),
        load_value,
        10,
        min_reservoir_samples=10,
        client=client,
        batch_size=4,
        maximum_number_of_samples_per_epoch=7,
    ) as r:
        assert [len(b["label"]) for b in r] == [4, 3]
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=4, drop_last=True
    ) as r:
        assert [len(b["label"]) for b in r] == [4, 4]


def multi_rows(row: dict[str, Any]) -> Any:
    v = int(row["value"])
    if v == 0:
        return []  # nothing for this UID
    if v == 1:
        return pd.DataFrame({"k": [10, 11]})
    return [{"k": v}, {"k": v + 100}]


def test_multi_row_results_and_empty(client: Client) -> None:
    with AsyncReservoir(frame(4), multi_rows, 4, min_reservoir_samples=3, client=client, batch_size=10) as r:
        (batch,) = list(r)
        assert batch["sample_uid"].tolist() == [1, 1, 2, 2, 3, 3]
        assert batch["k"].tolist() == [10, 11, 2, 102, 3, 103]
        assert r.reservoir_size() == 3


def test_collate_fn(client: Client) -> None:
    with AsyncReservoir(
        frame(6),
        load_value,
        6,
        min_reservoir_samples=6,
        client=client,
        batch_size=3,
        collate_fn=lambda rows: [r["label"] for r in rows],
    ) as r:
        assert list(r) == [[0, 1, 2], [3, 4, 5]]


def test_on_error_skip_records_failures(client: Client) -> None:
    with AsyncReservoir(
        frame(10), fail_on_odd, 10, min_reservoir_samples=5, client=client, max_failures_per_uid=None
    ) as r:
        labels = [int(b["label"][0]) for b in r]
        assert labels and all(v % 2 == 0 for v in labels)
        poll_for(lambda: len(r.stats().failures) == 5, what="5 failed UIDs")
        failures = {f.uid: f for f in r.stats().failures}
        assert sorted(failures) == [1, 3, 5, 7, 9]
        assert failures[3].exc_type == "ValueError" and failures[3].message == "corrupt file 3"
        assert "fail_on_odd" in failures[3].traceback
        s = r.stats()
        assert s.jobs_failed + s.rows_failed >= 5  # a failing row of a packed task counts as a row


def test_on_error_raise(client: Client) -> None:
    with AsyncReservoir(
        frame(10), fail_on_odd, 10, min_reservoir_samples=10, client=client, on_error="raise"
    ) as r:
        with pytest.raises(
            JobError, match=r"function_to_run failed for UID \d: ValueError: corrupt file"
        ) as info:
            while True:
                list(r)
        assert info.value.uid in {1, 3, 5, 7, 9}
        assert isinstance(info.value.__cause__, ValueError)


def test_packed_rows_failures_are_per_row(client: Client) -> None:
    with AsyncReservoir(
        frame(12),
        fail_on_odd,
        12,
        min_reservoir_samples=6,
        client=client,
        rows_per_job=4,
        max_failures_per_uid=None,
    ) as r:
        list(r)
        assert r.reservoir_size() >= 6
        poll_for(lambda: r.stats().rows_failed >= 6, what="the 6 odd rows to fail")
        assert r.stats().jobs_failed == 0
        assert sorted({f.uid for f in r.stats().failures}) == [1, 3, 5, 7, 9, 11]


FLAKY: dict[Any, int] = {}


def flaky_once(row: dict[str, Any]) -> dict[str, Any]:
    with LOADS_LOCK:
        FLAKY[row["sample_uid"]] = FLAKY.get(row["sample_uid"], 0) + 1
        first = FLAKY[row["sample_uid"]] == 1
    if first:
        raise OSError("transient network error")
    return load_value(row)


@pytest.mark.parametrize("rows_per_job", [1, 3])
def test_retries_recover_transient_errors(client: Client, rows_per_job: int) -> None:
    FLAKY.clear()
    with AsyncReservoir(
        frame(6), flaky_once, 6, min_reservoir_samples=6, client=client, retries=1, rows_per_job=rows_per_job
    ) as r:
        assert len(list(r)) == 6
        s = r.stats()
        assert s.failures == () and s.rows_failed == 0 and s.jobs_failed == 0
        assert all(FLAKY[u] >= 2 for u in range(6))


def always_fails(row: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError(f"cannot read {row['value']}")


def test_all_rows_fail_raises_job_error_not_hang(client: Client) -> None:
    with AsyncReservoir(frame(4), always_fails, 4, min_reservoir_samples=2, client=client) as r:
        with pytest.raises(
            JobError,
            # raised as soon as fewer than 2 rows can still load: after 3 or 4 quarantines
            match=r"only [01] of the 4 source rows can still give an entry \([34] quarantined.*cannot read",
        ):
            iter(r)


def fails_first_time(row: dict[str, Any]) -> dict[str, Any]:
    """UID 3 fails on its first load only (a network filesystem hiccup)."""
    with LOADS_LOCK:
        FLAKY[row["sample_uid"]] = FLAKY.get(row["sample_uid"], 0) + 1
        first = FLAKY[row["sample_uid"]] == 1
    if first and row["sample_uid"] == 3:
        raise OSError("stale NFS handle")
    return load_value(row)


@pytest.mark.parametrize("max_failures", [None, 2])
def test_a_transient_failure_at_start_up_is_retried_before_giving_up(
    client: Client, max_failures: int | None
) -> None:
    """The minimum needs every row: UID 3's one failure must not end iter() with JobError."""
    FLAKY.clear()
    with AsyncReservoir(
        frame(10),
        fails_first_time,
        10,
        min_reservoir_samples=10,
        client=client,
        max_failures_per_uid=max_failures,
    ) as r:
        uids = sorted(int(u) for b in r for u in b["sample_uid"])
        assert uids == list(range(10))
        s = r.stats()
        assert [f.uid for f in s.failures] == [3] and FLAKY[3] >= 2 and not s.quarantined


def test_on_error_raise_reports_every_failure_one_at_a_time(client: Client) -> None:
    with AsyncReservoir(
        frame(6),
        fail_on_odd,
        6,
        min_reservoir_samples=3,
        client=client,
        on_error="raise",
        max_failures_per_uid=1,
    ) as r:
        poll_for(lambda: len(r.stats().quarantined) == 3, what="the 3 odd UIDs to fail")
        raised = []
        for _ in range(3):
            with pytest.raises(JobError) as info:
                iter(r)
            raised.append(info.value.uid)
        assert sorted(raised) == [1, 3, 5]
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == [0, 2, 4]  # nothing left to raise


def test_quarantine_maps_uids_to_failures_and_can_be_released(client: Client) -> None:
    BROKEN.update({1, 4})
    with AsyncReservoir(
        frame(6), broken_while_listed, 6, min_reservoir_samples=4, client=client, max_failures_per_uid=1
    ) as r:
        poll_for(lambda: set(r.stats().quarantined) == {1, 4}, what="UIDs 1 and 4 quarantined")
        record = r.stats().quarantined[4]
        assert record.uid == 4 and record.exc_type == "OSError" and "missing 4" in record.message
        BROKEN.clear()  # the files are back
        assert r.release_quarantine([4, 5]) == [4]  # 5 is not quarantined: ignored
        assert set(r.stats().quarantined) == {1}
        iterate_until(r, lambda: 4 in set(r._store.uids()))
        assert r.release_quarantine() == [1]
        iterate_until(r, lambda: r.reservoir_size() == 6)
        assert not r.stats().quarantined


BROKEN: set[int] = set()


def broken_while_listed(row: dict[str, Any]) -> dict[str, Any]:
    if row["sample_uid"] in BROKEN:
        raise OSError(f"missing {row['sample_uid']}")
    return load_value(row)


def test_row_accounting_holds_after_close(client: Client) -> None:
    utils.GATE.clear()
    r = AsyncReservoir(frame(8), utils.gated_load, 8, client=client, max_jobs_at_once=4)
    try:
        poll_for(lambda: r.stats().rows_in_flight == 4, what="4 rows in flight")
    finally:
        r.close()
        utils.GATE.set()
    s = r.stats()
    assert s.rows_in_flight == 0 and s.rows_cancelled == 4
    assert s.rows_submitted == s.rows_loaded + s.rows_failed + s.rows_requeued + s.rows_cancelled


def test_quarantine_after_consecutive_failures(client: Client) -> None:
    with AsyncReservoir(
        frame(6), fail_on_odd, 6, min_reservoir_samples=3, client=client, max_failures_per_uid=2
    ) as r:
        list(r)
        poll_for(lambda: len(r.stats().quarantined) == 3, what="3 quarantined UIDs")
        s = r.stats()
        assert sorted(s.quarantined) == [1, 3, 5]
        counts = {f.uid: f.count for f in s.failures}
        # quarantined UIDs are no longer submitted: their count stays at 2
        poll_for(lambda: r.stats().entries_waiting >= 3, what="more passes over the good rows")
        assert {f.uid: f.count for f in r.stats().failures} == counts == {1: 2, 3: 2, 5: 2}
        assert "quarantined=3" in repr(r)


def invalid_result(row: dict[str, Any]) -> Any:
    return None if row["value"] == 1 else load_value(row)


def test_invalid_result_recorded_as_job_error(client: Client) -> None:
    with AsyncReservoir(frame(3), invalid_result, 3, min_reservoir_samples=2, client=client) as r:
        list(r)
        poll_for(lambda: bool(r.stats().failures), what="the failure of UID 1")
        (failure,) = r.stats().failures
        assert (
            failure.uid == 1
            and failure.exc_type == "JobError"
            and "got NoneType for UID 1" in failure.message
        )


def test_timeout_raises_with_stats(client: Client) -> None:
    utils.GATE.clear()
    r = AsyncReservoir(frame(4), utils.gated_load, 4, min_reservoir_samples=4, client=client, timeout="200ms")
    try:
        with pytest.raises(
            TimeoutError, match=r"waited 0.2 s \(timeout\) for 4 entries.*holds 0; reservoir 0/4.*in flight"
        ):
            iter(r)
    finally:
        utils.GATE.set()
        r.close()


def test_close_idempotent_and_iterating_after_close(client: Client) -> None:
    r = AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=client, batch_size=2)
    it = iter(r)
    next(it)
    r.close()
    r.close()
    with pytest.raises(ReservoirClosedError, match="closed"):
        next(it)
    with pytest.raises(RuntimeError, match="closed"):
        iter(r)
    with pytest.raises(RuntimeError):
        r.fill_queue()
    assert r.stats().status == "closed" and r.reservoir_size() == 0


def test_close_from_another_thread_unblocks_waiting_consumer(client: Client) -> None:
    utils.GATE.clear()
    r = AsyncReservoir(frame(4), utils.gated_load, 4, min_reservoir_samples=4, client=client)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            iter(r)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    poll_for(lambda: r.stats().rows_in_flight > 0, what="jobs in flight")
    r.close()
    t.join(10)
    utils.GATE.set()
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError) and "closed" in str(errors[0])


def test_two_threads_iterate_the_same_reservoir(client: Client) -> None:
    with AsyncReservoir(
        frame(20), load_value, 20, min_reservoir_samples=20, client=client, batch_size=5
    ) as r:
        results: dict[int, list[int]] = {}
        errors: list[BaseException] = []

        def consume(k: int) -> None:
            try:
                results[k] = [int(u) for _ in range(5) for b in r for u in b["sample_uid"]]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and set(results) == {0, 1}
        assert all(sorted(v) == sorted(list(range(20)) * 5) for v in results.values())
        assert r.stats().epochs == 10


def test_shared_iterator_across_threads_yields_each_batch_once(client: Client) -> None:
    with AsyncReservoir(
        frame(40), load_value, 40, min_reservoir_samples=40, client=client, batch_size=2
    ) as r:
        it = iter(r)
        got: list[int] = []
        lock = threading.Lock()

        def drain() -> None:
            for b in it:
                with lock:
                    got.extend(int(u) for u in b["sample_uid"])

        threads = [threading.Thread(target=drain) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(got) == list(range(40))


def test_subsample_reuses_loaded_entries(client: Client) -> None:
    LOADS.clear()
    with AsyncReservoir(
        frame(20), counting_load, 20, min_reservoir_samples=20, client=client, max_jobs_at_once=2
    ) as r:
        list(r)
        loaded = {int(b["sample_uid"][0]): int(b["load"][0]) for b in r}
        sub = r.subsample(8, seed=3)
        assert sub.reservoir_size() == 8  # preloaded, before any job of its own
        sub_batches = {int(b["sample_uid"][0]): int(b["load"][0]) for b in sub}
        assert len(sub_batches) == 8 and set(sub_batches) <= set(range(20))
        assert all(sub_batches[u] == loaded[u] for u in sub_batches)
        assert sorted(sub_batches) == list(sub_batches)  # source order
        assert sub.stats().address == r.stats().address
        sub.close()
        with pytest.raises(ValueError, match=r"nb_samples must be between 1 and the 20 source rows, got 21"):
            r.subsample(21)
        with pytest.raises(TypeError, match="nb_samples must be an int"):
            r.subsample(2.5)  # type: ignore[arg-type]


def test_subsample_uids_order_and_errors(client: Client) -> None:
    src = frame(10, case=[f"c{i}" for i in range(10)], group=["a", "b"] * 5)
    with AsyncReservoir(src, load_value, 10, min_reservoir_samples=10, client=client, uid_column="case") as r:
        list(r)
        with r.subsample_uids(["c7", "c2", "c5"], new_sampler=SequentialSampler()) as sub:
            assert [b["case"][0] for b in sub] == ["c7", "c2", "c5"]
            assert sub.reservoir_size() == 3
        with r.subsample_uids(["b"], uids_name="group") as sub:
            assert sorted(b["case"][0] for b in sub) == ["c1", "c3", "c5", "c7", "c9"]
        with pytest.raises(KeyError, match=r"UIDs not in the source column 'case': \['nope'\]"):
            r.subsample_uids(["c1", "nope"])
        with pytest.raises(ValueError, match="uids_name must be a column of the source, got 'missing'"):
            r.subsample_uids(["c1"], uids_name="missing")
        with pytest.raises(KeyError, match=r"values not in the source column 'group': \['z'\]"):
            r.subsample_uids(["z"], uids_name="group")
        with pytest.raises(ValueError, match="at least one UID"):
            r.subsample_uids([])


def test_dask_dataframe_source_rows_read_on_workers(client: Client) -> None:
    pdf = pd.DataFrame({"value": np.arange(30), "name": [f"n{i}" if i % 7 else None for i in range(30)]})
    ddf = dd.from_pandas(pdf, npartitions=4)

    def load(row: dict[str, Any]) -> dict[str, Any]:
        return {"value": row["value"], "has_name": row["name"] is not None}

    with AsyncReservoir(
        ddf, load, 30, min_reservoir_samples=30, client=client, batch_size=30, rows_per_job=4
    ) as r:
        (batch,) = list(r)
        assert batch["sample_uid"].tolist() == list(range(30))
        assert batch["value"].tolist() == list(range(30))
        assert batch["has_name"].tolist() == [bool(i % 7) for i in range(30)]
        with r.subsample_uids([29, 3], new_sampler=SequentialSampler()) as sub:
            assert [int(v) for b in sub for v in b["value"]] == [29, 3]


def test_random_source_sampler_submits_in_shuffled_order(client: Client) -> None:
    with AsyncReservoir(
        frame(30),
        load_value,
        30,
        min_reservoir_samples=5,
        client=client,
        max_jobs_at_once=1,
        source_sampler=RandomSampler(seed=2),
    ) as r:
        it = iter(r)
        first = sorted(int(b["sample_uid"][0]) for b in it)
        assert first != list(range(len(first)))  # not the first rows of the source


def test_bad_constructor_arguments_start_nothing(client: Client) -> None:
    with pytest.raises(TypeError, match="function_to_run must be callable, got int"):
        AsyncReservoir(frame(3), 3, 3, client=client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_reservoir_samples=5 > max_reservoir_samples=3"):
        AsyncReservoir(frame(3), load_value, 3, min_reservoir_samples=5, client=client)
    with pytest.raises(TypeError, match="reservoir_sampler must be None or a Sampler"):
        AsyncReservoir(frame(3), load_value, 3, reservoir_sampler="random", client=client)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"nb_workers applies only when dask_reservoir starts its own LocalCluster"
    ):
        AsyncReservoir(frame(3), load_value, 3, nb_workers=2, client=client)
    with pytest.raises(
        TypeError, match=r"client must be None, a scheduler address str or a distributed\.Client, got int"
    ):
        AsyncReservoir(frame(3), load_value, 3, client=5)
    with pytest.raises(TypeError, match=r"source must be a pandas\.DataFrame"):
        AsyncReservoir({"a": [1]}, load_value, 3, client=client)


def test_fill_queue_and_initializer_are_safe(client: Client) -> None:
    with AsyncReservoir(frame(5), load_value, 5, min_reservoir_samples=5, client=client) as r:
        r.initializer()
        r.fill_queue()
        assert len(list(r)) == 5


def test_abandoned_iterator_does_not_disturb(client: Client) -> None:
    with AsyncReservoir(
        frame(10), load_value, 10, min_reservoir_samples=10, client=client, batch_size=2
    ) as r:
        it = iter(r)
        next(it)
        del it
        assert len(list(r)) == 5
        assert r.stats().epochs == 2


def test_wait_seconds_accumulate_only_while_blocked(client: Client) -> None:
    utils.GATE.clear()
    try:
        with AsyncReservoir(frame(5), utils.gated_load, 5, min_reservoir_samples=5, client=client) as r:
            threading.Timer(0.2, utils.GATE.set).start()
            list(r)  # blocked until the gate opened, 0.2 s after it started
            s = r.stats()
            waited = s.minimum_wait_seconds
            assert waited >= 0.15
            assert s.consumer_wait_seconds >= waited  # every moment in iter()/next() counts
            assert s.stall_seconds_p99 >= 0.15  # the first batch waited for the minimum
            for _ in range(20):
                list(r)  # the minimum is there: no wait
            after = r.stats()
            assert after.minimum_wait_seconds == pytest.approx(waited, abs=0.05)
            assert after.consumer_wait_seconds > s.consumer_wait_seconds  # iter()/next() take some time
            assert after.stall_seconds_p50 < waited  # most batches did not wait for loading
    finally:
        utils.GATE.set()


@pytest.mark.parametrize("rows_per_job", [1, 2])
def test_summary_and_repr_say_every_row_failed(client: Client, rows_per_job: int) -> None:
    """One-row tasks fail as a whole, two-row tasks complete with failed rows: both read "4 failed"."""
    with AsyncReservoir(
        frame(4), always_fails, 4, client=client, rows_per_job=rows_per_job, max_failures_per_uid=1
    ) as r:
        poll_for(lambda: len(r.stats().quarantined) == 4, what="every UID quarantined")
        s = r.stats()
        assert s.rows_failed == 4 and s.jobs_failed == (4 if rows_per_job == 1 else 0)
        assert "rows 0 loaded / 4 failed (4 UIDs quarantined)" in s.summary()
        assert "rows_loaded=0 rows_failed=4 quarantined=4" in repr(r)


def test_an_iter_still_waiting_counts_in_the_wait(client: Client) -> None:
    """stats() said 'waited 0.00 s' while a consumer had been blocked in iter() for 20 s."""
    utils.GATE.clear()
    try:
        with AsyncReservoir(frame(3), utils.gated_load, 3, min_reservoir_samples=3, client=client) as r:
            consumer = threading.Thread(target=lambda: list(r))
            consumer.start()
            poll_for(lambda: r.stats().consumer_wait_seconds > 0, what="the wait of a blocked iter()")
            first = r.stats().consumer_wait_seconds
            poll_for(lambda: r.stats().consumer_wait_seconds > first, what="the wait to grow")
            assert r.stats().epochs == 0  # iter() has not returned: the gate is closed
            utils.GATE.set()
            consumer.join(30)
            assert not consumer.is_alive()
    finally:
        utils.GATE.set()


def test_each_second_in_iter_and_next_counts_once(client: Client) -> None:
    """consumer_wait_seconds is the time inside iter()/next(), each second once (issue 16, point 9).

    The library measures inside the calls this test brackets, so its figure can never exceed
    the test's sum; it used to add iter()'s time twice (directly and with the first batch).
    """
    utils.GATE.clear()
    try:
        with AsyncReservoir(
            frame(5), utils.gated_load, 5, min_reservoir_samples=5, batch_size=5, client=client
        ) as r:
            opener = threading.Thread(
                target=lambda: (
                    poll_for(lambda: r.stats().rows_in_flight == 5, what="every row in flight"),
                    utils.GATE.set(),
                )
            )
            opener.start()
            inside = 0.0  # seconds the test saw inside iter() and next()
            t0 = time.perf_counter()
            it = iter(r)  # waits for the minimum, until the gate opens
            inside += time.perf_counter() - t0
            while True:
                t0 = time.perf_counter()
                try:
                    next(it)
                except StopIteration:
                    break
                finally:
                    inside += time.perf_counter() - t0
            opener.join()
            s = r.stats()
            assert s.batches_served == 1 and s.minimum_wait_seconds > 0
            assert s.minimum_wait_seconds <= s.consumer_wait_seconds <= inside
            # the one batch's stall: the epoch's start (iter()) plus its next()
            assert s.minimum_wait_seconds <= s.stall_seconds_p50 <= s.consumer_wait_seconds
    finally:
        utils.GATE.set()


def slow_on_zero(row: dict[str, Any]) -> dict[str, Any]:
    if int(row["value"]) == 0:
        utils.GATE.wait(30)  # a straggler, released at the end of the test
    return load_value(row)


def test_job_timeout_abandons_stragglers(client: Client) -> None:
    utils.GATE.clear()
    try:
        with AsyncReservoir(
            frame(6),
            slow_on_zero,
            6,
            min_reservoir_samples=5,
            client=client,
            job_timeout="200ms",
            max_failures_per_uid=1,
        ) as r:
            assert sorted(int(b["label"][0]) for b in r) == [1, 2, 3, 4, 5]
            poll_for(lambda: set(r.stats().quarantined) == {0}, what="UID 0 to time out")
            (failure,) = r.stats().failures
            assert failure.exc_type == "JobTimeoutError" and "job_timeout=0.2 s for UID 0" in failure.message
            # the slot was freed: both workers keep loading
            done = r.stats().rows_loaded
            iterate_until(r, lambda: r.stats().rows_loaded > done + 10)
    finally:
        utils.GATE.set()


def load_in_5ms(row: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.005)
    return load_value(row)


def test_rows_per_job_auto_grows_tasks_for_fast_loaders(client: Client) -> None:
    with AsyncReservoir(
        frame(400), load_in_5ms, 400, min_reservoir_samples=20, client=client, rows_per_job="auto"
    ) as r:
        assert r.rows_per_job == 1 and r.max_jobs_at_once == 8  # 8 tasks of one row to start
        iterate_until(r, lambda: r.rows_per_job > 4)
        # README: tasks of about 75 ms; rows take at least 5 ms, so at most 15 rows a task
        assert r.rows_per_job <= 15
        # nobody ingests now: in flight + waiting stop at 8 tasks of rows_per_job rows
        sizes = {r.rows_per_job}

        def bounded_and_at_rest() -> bool:
            s = r.stats()
            sizes.add(r.rows_per_job)
            assert s.rows_in_flight + s.entries_waiting <= 8 * max(sizes), (s, sizes)
            return s.rows_in_flight == 0 and s.entries_waiting > 3 * min(sizes)

        poll_for(bounded_and_at_rest, what="the bound of 8 tasks to fill")
        iterate_until(r, lambda: r.reservoir_size() == 400)
        labels = sorted(int(v) for b in r for v in b["label"])
        assert labels == list(range(400))
        s = r.stats()
        assert s.rows_submitted >= 4 * s.jobs_submitted  # rows were packed: 4 rows a task or more


def test_max_jobs_at_once_never_shrinks_auto_sized_tasks(client: Client) -> None:
    """trw users pass max_jobs_at_once=32 and the like: it counts tasks, whose size stays the auto one."""
    with AsyncReservoir(
        frame(2000), load_value, 2000, client=client, rows_per_job="auto", max_jobs_at_once=2
    ) as r:
        iterate_until(r, lambda: r.rows_per_job > 16)  # far more rows per task than tasks allowed
        assert r.max_jobs_at_once == 2 and r.max_rows_at_once == 2 * r.rows_per_job
        assert r.stats().jobs_in_flight <= 2


def load_slow_on_six_and_seven(row: dict[str, Any]) -> dict[str, Any]:
    """UIDs 0-5 take 0.05 s, UIDs 6 and 7 take 0.3 s."""
    time.sleep(0.3 if int(row["value"]) >= 6 else 0.05)
    return load_value(row)


def test_stats_percentiles_age_and_reuse(client: Client) -> None:
    built = time.monotonic()
    with AsyncReservoir(
        frame(8),
        load_slow_on_six_and_seven,
        8,
        min_reservoir_samples=8,
        client=client,
        batch_size=4,
        max_reservoir_replacement_size=1,
    ) as r:
        empty = r.stats()  # nothing is ingested before the first iter()
        assert empty.reservoir_size == 0 and np.isnan(empty.age_seconds_median)
        for _ in range(3):
            list(r)
        time.sleep(0.3)  # no iter(): the entries in the reservoir age by at least this
        s = r.stats()
        elapsed = time.monotonic() - built
        # every load takes 0.05 s or more; the two slowest (UIDs 6 and 7, loaded for the
        # minimum) 0.3 s or more, and most loads are of the 6 fast UIDs
        assert s.load_seconds_p50 >= 0.05 and s.load_seconds_p99 >= 0.3
        assert s.load_seconds_p50 < s.load_seconds_p99
        assert s.mean_job_seconds >= 0.05
        assert s.age_seconds_median >= 0.3 and s.age_seconds_max <= elapsed
        # 3 epochs of 8 entries; at most 1 entry replaced per iter(), so 6 or more were in all 3
        assert s.samples_served == 24 and s.times_served_max == 3
        assert 2.5 <= s.times_served_mean <= 3
        assert s.columnar_bytes >= 8 * 2 * 3 * 4  # at least the 8 float32[2,3] images
        assert s.rows_loaded >= 8

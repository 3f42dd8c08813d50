"""Stats records and the builders of their fields (pure)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from dask_reservoir import FailureRecord, ReservoirStats
from dask_reservoir._core.records import RunnerCounters
from dask_reservoir._core.served import Served
from dask_reservoir._core.stats import entry_summary, percentiles, runner_fields, served_fields, store_fields
from dask_reservoir._core.store import Entry, ReservoirStore


def test_stats_is_frozen_and_summarises() -> None:
    # a distinct value per field, so a field shown in the wrong place or left out is seen
    s = ReservoirStats(
        reservoir_size=4,
        max_reservoir_samples=8,
        entries_waiting=5,
        rows_in_flight=6,
        jobs_completed=3,
        jobs_failed=2,
        rows_loaded=10,
        rows_failed=11,
        epochs=7,
        samples_served=9,
        consumer_wait_seconds=1.234,
        status="connecting",
        workers=12,
        workers_lost=13,
        rows_rerun=14,
        quarantined={"a": FailureRecord("a", "ValueError", "bad")},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.reservoir_size = 5  # type: ignore[misc]
    assert s.summary() == (
        "reservoir 4/8, waiting 5, in flight 6 rows, rows 10 loaded / 11 failed (1 UIDs quarantined), "
        "epochs 7, samples served 9, waited 1.23 s, workers 12 (13 lost, 14 rows re-run), status connecting"
    )


def test_summary_counts_failed_rows_once_in_rows() -> None:
    """Every row failing shows as such, whether its task failed as a whole or not (issue 16, point 10)."""
    # one-row tasks failing as a whole: each failed row counts in jobs_failed and rows_failed
    whole = ReservoirStats(jobs_completed=4, jobs_failed=4, rows_failed=4, workers=2)
    # rows failing inside tasks that complete: jobs_failed stays 0
    inside = ReservoirStats(jobs_completed=2, jobs_failed=0, rows_failed=4, workers=2)
    for s in (whole, inside):
        assert "rows 0 loaded / 4 failed," in s.summary()


def test_failure_record_describe() -> None:
    assert FailureRecord("a", "KilledWorker", "boom", count=2).describe() == "UID 'a': KilledWorker: boom"


# --- field builders (store_fields, served_fields, runner_fields, entry_summary, percentiles)


def test_percentiles_of_known_values() -> None:
    values = [float(v) for v in range(1, 102)]  # 1..101: p50 = 51, p90 = 91, p99 = 100
    assert percentiles(values) == (51.0, 91.0, 100.0)
    assert all(math.isnan(p) for p in percentiles([]))
    assert percentiles((4.0,)) == (4.0, 4.0, 4.0)


def test_entry_summary_values_and_empty() -> None:
    out = entry_summary(np.array([1.0, 5.0, 2.0]), np.array([0.0, 3.0, 6.0]))
    assert out == {
        "age_seconds_median": 2.0,
        "age_seconds_max": 5.0,
        "times_served_mean": 3.0,
        "times_served_max": 6.0,
    }
    empty = entry_summary(np.array([]), np.array([]))
    assert set(empty) == set(out)
    assert all(math.isnan(float(v)) for v in empty.values())  # type: ignore[arg-type]
    # ages known, serve counts not (and back): each side is NaN on its own
    half = entry_summary(np.array([3.0]), np.array([]))
    assert half["age_seconds_max"] == 3.0 and math.isnan(half["times_served_max"])
    half = entry_summary(np.array([]), np.array([2.0]))
    assert math.isnan(half["age_seconds_median"]) and half["times_served_mean"] == 2.0


def test_runner_fields_copy_every_counter_to_its_stats_field() -> None:
    record = FailureRecord("u", "ValueError", "bad")
    counters = RunnerCounters(
        jobs_submitted=1,
        rows_submitted=2,
        rows_loaded=3,
        rows_requeued=4,
        jobs_completed=5,
        jobs_failed=6,
        rows_failed=7,
        jobs_in_flight=8,
        rows_in_flight=9,
        entries_waiting=10,
        uids_tried=11,
        uids_loaded=12,
        source_passes=13,
        rows_cancelled=14,
        failures=(record,),
        quarantined={"u": record},
        workers=15,
        workers_lost=16,
        rows_rerun=17,
        loading_held_seconds=18.5,
        loading_done=True,
        cache_hits=19,
        cache_misses=20,
        cache_bytes_read=21,
        cache_bytes_written=22,
    )
    fields = runner_fields(counters)
    assert fields == {
        "jobs_submitted": 1,
        "rows_submitted": 2,
        "rows_loaded": 3,
        "rows_requeued": 4,
        "jobs_completed": 5,
        "jobs_failed": 6,
        "rows_failed": 7,
        "jobs_in_flight": 8,
        "rows_in_flight": 9,
        "entries_waiting": 10,
        "uids_loaded": 12,
        "source_passes": 13,
        "rows_cancelled": 14,
        "failures": (record,),
        "quarantined": {"u": record},
        "workers": 15,
        "workers_lost": 16,
        "rows_rerun": 17,
        "loading_held_seconds": 18.5,
        "loading_done": True,
        "cache_hits": 19,
        "cache_misses": 20,
        "cache_bytes_read": 21,
        "cache_bytes_written": 22,
    }
    # the quarantine is a copy: the runner's dict may change after the snapshot
    assert fields["quarantined"] is not counters.quarantined
    stats = ReservoirStats(**fields)  # every key is a field of ReservoirStats
    assert stats.rows_cancelled == 14 and stats.quarantined == {"u": record}


def test_served_fields_from_counters_and_load_times() -> None:
    served = Served(batches=3, samples=12, wait_seconds=1.5, minimum_wait_seconds=0.5, stalls=[1.0, 2.0, 3.0])
    loads = [float(v) for v in range(1, 102)]
    assert served_fields(served, loads) == {
        "batches_served": 3,
        "samples_served": 12,
        "consumer_wait_seconds": 1.5,
        "minimum_wait_seconds": 0.5,
        "stall_seconds_p50": 2.0,
        "stall_seconds_p99": 2.98,
        "load_seconds_p50": 51.0,
        "load_seconds_p90": 91.0,
        "load_seconds_p99": 100.0,
    }
    none = served_fields(Served(0, 0, 0.0, 0.0, []), [])
    assert all(math.isnan(none[k]) for k in ("stall_seconds_p50", "stall_seconds_p99", "load_seconds_p90"))
    ReservoirStats(**none)


def _put(store: ReservoirStore, uid: int, loaded_at: float) -> None:
    store.put(Entry(uid, uid, ({"sample_uid": uid, "x": uid},), loaded_at=loaded_at))


def test_store_fields_of_an_empty_store() -> None:
    fields = store_fields(ReservoirStore(4))
    assert fields["reservoir_size"] == 0 and fields["oldest_unserved_uid"] is None
    assert (fields["entries_ingested"], fields["entries_evicted"], fields["entries_replaced"]) == (0, 0, 0)
    assert (fields["uids_served"], fields["entries_pinned"], fields["live_iterators"]) == (0, 0, 0)
    assert math.isnan(fields["age_seconds_median"]) and math.isnan(fields["times_served_max"])
    ReservoirStats(**fields)


def test_store_fields_ages_serves_and_counters() -> None:
    store = ReservoirStore(3)
    now = time.monotonic()
    # loaded 40, 30, 20 and 10 s ago; uid 0 is evicted by uid 3; uid 1 is then replaced
    for uid, ago in ((0, 40.0), (1, 30.0), (2, 20.0), (3, 10.0)):
        _put(store, uid, now - ago)
    _put(store, 1, now - 5.0)
    # serve uid 2 twice and uid 1 once: the oldest never served is then uid 3
    snap = store.snapshot()
    order = [e.uid for e in snap.entries]
    served = {1: 1, 2: 2, 3: 0}
    snap.add_served(np.array([served[int(uid)] for uid in order]))  # type: ignore[call-overload]
    fields = store_fields(store)
    assert fields["reservoir_size"] == 3
    assert (fields["entries_ingested"], fields["entries_evicted"], fields["entries_replaced"]) == (5, 1, 1)
    assert fields["live_iterators"] == 1  # the snapshot not yet released
    # ages 20, 10 and 5 s (plus the time this test took)
    assert 10.0 <= fields["age_seconds_median"] < 11.0
    assert 20.0 <= fields["age_seconds_max"] < 21.0
    assert fields["times_served_mean"] == 1.0 and fields["times_served_max"] == 2.0
    assert fields["oldest_unserved_uid"] == 3
    snap.release()
    fields = store_fields(store)
    assert fields["live_iterators"] == 0 and fields["uids_served"] == 2
    assert fields["columnar_bytes"] == store.columnar_bytes() > 0


def test_store_fields_oldest_unserved_is_the_first_loaded() -> None:
    store = ReservoirStore(4)
    now = time.monotonic()
    # source order (uid) differs from load order: uid 2 was loaded first
    for uid, ago in ((0, 1.0), (1, 3.0), (2, 9.0), (3, 2.0)):
        _put(store, uid, now - ago)
    assert store_fields(store)["oldest_unserved_uid"] == 2


def test_summary_shows_stalls_only_once_a_batch_was_served() -> None:
    plain = ReservoirStats(consumer_wait_seconds=2.0).summary()
    assert "per batch" not in plain and "waited 2.00 s, workers 0" in plain
    shown = ReservoirStats(stall_seconds_p50=0.001, stall_seconds_p99=0.25).summary()
    assert "(per batch: p50 1.00 ms, p99 250.00 ms)" in shown
    assert "quarantined" not in plain and "lost" not in plain

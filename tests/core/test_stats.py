"""Stats records and Performance (pure)."""

from __future__ import annotations

import dataclasses
import sys
import threading

import pytest

from dask_reservoir import FailureRecord, Performance, ReservoirStats


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


def test_performance_thread_safe_mean() -> None:
    perf = Performance()
    assert perf.get_average_time() == 0.0
    # each thread adds its own value (exact in binary): a mean that ignores some adds, or
    # keeps only the last value, is off; a tiny switch interval makes lost updates likely
    # when add() is not atomic (without the lock this fails in nearly every run)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    values = (0.25, 0.5, 1.0, 2.0)
    adds = 20_000

    def add(value: float) -> None:
        for _ in range(adds):
            perf.add(value)

    threads = [threading.Thread(target=add, args=(v,)) for v in values]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(previous)
    assert perf.count == len(values) * adds
    assert perf.get_average_time() == sum(values) / len(values)

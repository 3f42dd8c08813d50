"""Stats records and Performance (pure)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from dask_reservoir import FailureRecord, Performance, ReservoirStats


def test_stats_is_frozen_and_summarises() -> None:
    s = ReservoirStats(reservoir_size=4, max_reservoir_samples=8, jobs_completed=3, rows_failed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.reservoir_size = 5  # type: ignore[misc]
    assert "reservoir 4/8" in s.summary() and "3 done / 1 failed" in s.summary()


def test_failure_record_describe() -> None:
    assert FailureRecord("a", "KilledWorker", "boom", count=2).describe() == "UID 'a': KilledWorker: boom"


def test_performance_thread_safe_mean() -> None:
    perf = Performance()
    assert perf.get_average_time() == 0.0

    def add() -> None:
        for _ in range(1000):
            perf.add(0.5)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert perf.count == 4000 and perf.get_average_time() == 0.5

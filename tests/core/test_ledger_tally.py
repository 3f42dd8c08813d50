"""The runner's counters and load times, without a cluster."""

from __future__ import annotations

import pytest

from dask_reservoir._core.ledger.tally import RECENT_LOADS, Tally


def test_a_new_tally_counts_nothing() -> None:
    tally = Tally()
    assert set(tally.counts().values()) == {0}
    assert tally.mean_load_seconds == 0.0 and tally.recent_load_seconds() == []


def test_jobs_and_rows_are_counted_by_what_happened() -> None:
    tally = Tally()
    tally.submitted(3)
    tally.submitted(2)
    tally.completed(failed=False)
    tally.completed(failed=True)
    tally.row_failed()
    tally.row_failed()
    tally.requeued(4)
    tally.cancelled(5)
    tally.rerun(6)
    tally.rerun(1)
    tally.cached((1, 2, 30, 40))
    tally.cached((3, 0, 5, 0))
    assert tally.counts() == {
        "jobs_submitted": 2,
        "rows_submitted": 5,
        "rows_loaded": 0,
        "rows_requeued": 4,
        "jobs_completed": 2,
        "jobs_failed": 1,
        "rows_failed": 2,
        "rows_cancelled": 5,
        "workers": 0,
        "workers_lost": 0,
        "rows_rerun": 7,
        "cache_hits": 4,
        "cache_misses": 2,
        "cache_bytes_read": 35,
        "cache_bytes_written": 40,
    }


def test_workers_are_set_and_losses_add_up() -> None:
    tally = Tally()
    tally.set_workers(3)
    tally.set_workers(2, lost=1)
    tally.set_workers(4.0, lost=2.0)  # type: ignore[arg-type]
    counts = tally.counts()
    assert (counts["workers"], counts["workers_lost"]) == (4, 3)
    assert isinstance(counts["workers"], int) and isinstance(counts["workers_lost"], int)


def test_loaded_rows_feed_the_mean_and_the_recent_times() -> None:
    tally = Tally()
    tally.loaded([0.5, 1.5])
    tally.loaded([4.0])
    assert tally.counts()["rows_loaded"] == 3
    assert tally.mean_load_seconds == pytest.approx(2.0)
    assert tally.recent_load_seconds() == [0.5, 1.5, 4.0]
    tally.loaded([])
    assert tally.counts()["rows_loaded"] == 3 and tally.mean_load_seconds == pytest.approx(2.0)


def test_recent_times_keep_the_last_thousand() -> None:
    assert RECENT_LOADS == 1000
    tally = Tally()
    tally.loaded([float(i) for i in range(RECENT_LOADS + 5)])
    assert tally.recent_load_seconds() == [float(i) for i in range(5, RECENT_LOADS + 5)]
    assert tally.mean_load_seconds == pytest.approx((RECENT_LOADS + 4) / 2)


def test_a_chunk_counts_an_equal_share_per_row() -> None:
    tally = Tally()
    tally.loaded_chunk(4, 2.0)
    tally.loaded([1.0])
    assert tally.counts()["rows_loaded"] == 5
    assert tally.mean_load_seconds == pytest.approx(3.0 / 5)
    assert tally.recent_load_seconds() == [0.5, 0.5, 0.5, 0.5, 1.0]


def test_a_big_chunk_fills_the_recent_times_once() -> None:
    tally = Tally()
    tally.loaded_chunk(RECENT_LOADS + 10, float(RECENT_LOADS + 10))
    assert tally.recent_load_seconds() == [1.0] * RECENT_LOADS
    assert tally.counts()["rows_loaded"] == RECENT_LOADS + 10


def test_a_chunk_of_no_rows_adds_its_time_but_no_row() -> None:
    tally = Tally()
    tally.loaded_chunk(0, 2.0)
    assert tally.counts()["rows_loaded"] == 0 and tally.recent_load_seconds() == []
    assert tally.mean_load_seconds == 0.0
    tally.loaded_chunk(1, 1.0)
    assert tally.mean_load_seconds == pytest.approx(3.0)  # the empty chunk's time counts

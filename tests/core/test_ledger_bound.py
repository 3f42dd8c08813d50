"""The in-flight bound, without a cluster: tasks in flight, the default bound, task sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.blocks import ColumnBlock
from dask_reservoir._core.ledger.bound import (
    MIN_TASKS_IN_FLIGHT,
    InFlightBound,
    default_bound,
    jobs_bound,
    tasks_in_flight,
)
from dask_reservoir._core.sizing import AUTO_TASK_SECONDS

# ---------------------------------------------------------------------- the functions


@pytest.mark.parametrize(("threads", "tasks"), [(0, 8), (1, 8), (3, 8), (4, 8), (5, 10), (16, 32)])
def test_tasks_in_flight_is_two_per_thread_and_at_least_the_minimum(threads: int, tasks: int) -> None:
    assert MIN_TASKS_IN_FLIGHT == 8
    assert tasks_in_flight(threads) == tasks


@pytest.mark.parametrize(
    ("rows_per_job", "threads", "capacity", "bound"),
    [
        (1, 2, None, 8),  # 8 tasks of one row
        (3, 6, None, 36),  # 12 tasks of 3 rows
        (10, 1, 80, 80),  # the reservoir holds the 8 tasks exactly
        (10, 1, 79, 79),  # one row less: the reservoir caps it
        (10, 1, 81, 80),
        (10, 1, 20, 20),  # two tasks fit
        (10, 1, 19, 20),  # at least two tasks
        (10, 1, 0, 20),
    ],
)
def test_default_bound(rows_per_job: int, threads: int, capacity: int | None, bound: int) -> None:
    assert default_bound(rows_per_job, threads, capacity) == bound


# ---------------------------------------------------------------------- what is out


def test_tasks_and_rows_in_flight_follow_sent_and_done() -> None:
    bound = InFlightBound(100, max_rows=10, rows_per_job=2)
    assert (bound.jobs_in_flight, bound.rows_in_flight) == (0, 0)
    bound.sent(2)
    bound.sent(3)
    assert (bound.jobs_in_flight, bound.rows_in_flight) == (2, 5)
    bound.done(3)
    assert (bound.jobs_in_flight, bound.rows_in_flight) == (1, 2)
    bound.done(2)
    assert (bound.jobs_in_flight, bound.rows_in_flight) == (0, 0)


def test_room_is_the_bound_less_rows_in_flight_and_waiting() -> None:
    bound = InFlightBound(100, max_rows=10, rows_per_job=2)
    assert bound.room(waiting=0) == 10
    bound.sent(4)
    assert bound.room(waiting=3) == 3
    assert bound.room(waiting=7) == -1


@pytest.mark.parametrize(
    ("source_rows", "rows_per_job", "barred", "rows"),
    [(10, 4, 0, 4), (10, 4, 6, 4), (10, 4, 7, 3), (10, 4, 9, 1), (10, 4, 10, 1), (3, 4, 0, 3)],
)
def test_a_full_job_is_rows_per_job_within_the_rows_not_barred(
    source_rows: int, rows_per_job: int, barred: int, rows: int
) -> None:
    assert InFlightBound(source_rows, max_rows=20, rows_per_job=rows_per_job).job_rows(barred=barred) == rows


# ---------------------------------------------------------------------- the bound


def test_an_explicit_bound_never_moves() -> None:
    bound = InFlightBound(100, max_rows=3, rows_per_job=1, threads=2)
    assert bound.max_rows == 3 and not bound.auto
    assert bound.set_threads(50) is True
    assert bound.max_rows == 3 and bound.rows_per_job == 1


def test_the_default_bound_follows_threads_and_the_task_size() -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=2, threads=1)
    assert bound.max_rows == 16
    assert bound.set_threads(6) is True and bound.max_rows == 24
    assert bound.set_threads(6) is False and bound.max_rows == 24


@pytest.mark.parametrize("threads", [None, 0, 1])
def test_no_threads_count_as_one(threads: int | None) -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=5, threads=threads)
    assert bound.max_rows == 40
    assert bound.set_threads(0) is False  # still one thread: nothing changed
    assert bound.set_threads(1) is False


def test_set_threads_takes_an_int_of_what_it_is_given() -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=1, threads=1)
    assert bound.set_threads(5.0) is True  # type: ignore[arg-type]
    assert bound.max_rows == 10
    assert bound.set_threads(-3) is True and bound.max_rows == 8  # below one: one


def test_the_default_bound_holds_at_most_the_reservoir() -> None:
    assert InFlightBound(100, max_rows=None, rows_per_job=8, capacity=20).max_rows == 20
    assert InFlightBound(100, max_rows=None, rows_per_job=16, capacity=20).max_rows == 32  # two tasks


# ---------------------------------------------------------------------- automatic task sizes


def test_auto_starts_with_one_row_tasks() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    assert bound.auto and bound.rows_per_job == 1 and bound.max_rows == 8


def test_auto_sizes_tasks_from_row_time() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    bound.observe(AUTO_TASK_SECONDS / 50, 100.0, 1)
    assert bound.rows_per_job == 50 and bound.max_rows == 400


def test_a_fixed_task_size_ignores_what_rows_cost() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=3, threads=2)
    bound.observe(1e-6, 10.0, 100)
    bound.observe_rows([1e-6], [[{"x": 1}]])
    bound.observe_block(1e-6, ColumnBlock({"x": np.zeros(4)}), 4)
    assert bound.rows_per_job == 3


@pytest.mark.parametrize(
    ("source_rows", "max_rows", "capacity", "threads", "limit"),
    [
        (10_000, 40, None, 2, 10),  # two tasks per thread within the explicit bound
        (10_000, None, 1000, 2, 250),  # within the reservoir
        (10_000, None, 1000, 8, 62),
        (40, None, 100, 2, 10),  # within the source
        (3, None, 10, 2, 1),  # a tiny source: one row a task
        (10_000, 3, None, 1, 1),  # a tiny bound: at least one row
        (10_000, 41, None, 2, 10),
        (10_000, 44, None, 2, 11),
    ],
)
def test_auto_task_size_stays_within_the_limit(
    source_rows: int, max_rows: int | None, capacity: int | None, threads: int, limit: int
) -> None:
    bound = InFlightBound(
        source_rows, max_rows=max_rows, rows_per_job=None, threads=threads, capacity=capacity
    )
    bound.observe(1e-6, 10.0, 1)  # fast, small rows: the sizer wants the largest tasks
    assert bound.rows_per_job == limit


def test_auto_without_bound_or_capacity_is_limited_by_the_source() -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=None, threads=1)
    bound.observe(1e-6, 10.0, 1)
    assert bound.rows_per_job == 50  # 100 rows / (2 x 1 thread)


def test_auto_task_size_follows_threads_within_the_limit() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2, capacity=1000)
    bound.observe(1e-6, 10.0, 1)
    assert bound.rows_per_job == 250 and bound.max_rows == 1000
    bound.set_threads(8)
    assert bound.rows_per_job == 62 and bound.max_rows == 992
    bound.set_threads(2)
    assert bound.rows_per_job == 250


def test_a_slow_row_keeps_tasks_small_below_the_limit() -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=None, threads=1, capacity=1000)
    bound.observe(AUTO_TASK_SECONDS / 5, 10.0, 1)
    assert bound.rows_per_job == 5 and bound.max_rows == 40


def test_observe_rows_measures_time_and_bytes() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    bound.observe_rows([], [])  # nothing loaded: nothing changes
    assert bound.rows_per_job == 1
    bound.observe_rows([AUTO_TASK_SECONDS / 75, AUTO_TASK_SECONDS / 37.5], [[{"x": 1}], [{"x": 2}]])
    assert bound.rows_per_job == 50  # the mean row time
    big = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    big.observe_rows([1e-6], [[{"x": np.zeros(2**18, np.float32)}]])  # 1 MiB rows
    assert big.rows_per_job in (7, 8)


def test_observe_rows_reads_no_rows_when_task_sizes_are_fixed() -> None:
    class Untouchable(Sequence[Any]):
        def __getitem__(self, index: Any) -> Any:
            raise AssertionError("read")

        def __len__(self) -> int:
            raise AssertionError("read")

    InFlightBound(100, max_rows=None, rows_per_job=2).observe_rows([0.1], Untouchable())


def test_observe_block_shares_time_and_bytes_among_the_source_rows() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    bound.observe_block(AUTO_TASK_SECONDS / 50 * 4, ColumnBlock({"x": np.zeros(4)}), 4)
    assert bound.rows_per_job == 50
    big = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    # two source rows of 4 block rows of 256 KiB each: 1 MiB per source row
    big.observe_block(1e-6, ColumnBlock({"x": np.zeros((8, 2**16), np.float32)}), 2)
    assert big.rows_per_job in (7, 8)


def test_observe_block_of_no_rows_changes_nothing() -> None:
    bound = InFlightBound(10_000, max_rows=None, rows_per_job=None, threads=2)
    bound.observe_block(1.0, ColumnBlock({"x": np.zeros(0)}), 0)
    assert bound.rows_per_job == 1


# ---------------------------------------------------------------------- max_jobs: a bound in tasks
@pytest.mark.parametrize(
    ("jobs", "rows_per_job", "capacity", "rows"),
    [
        (32, 1750, 100_000, 56_000),  # tasks of the auto size, not tasks shrunk to fit 32 rows
        (32, 1750, 1000, 3500),  # at most the reservoir, but two tasks at least
        (1, 64, 1000, 64),  # one task: one task's rows
        (2, 10, 5, 20),
        (8, 1, None, 8),
    ],
)
def test_jobs_bound_is_tasks_of_their_size_within_the_reservoir(
    jobs: int, rows_per_job: int, capacity: int | None, rows: int
) -> None:
    assert jobs_bound(jobs, rows_per_job, capacity) == rows


def test_max_jobs_counts_tasks_and_never_shrinks_auto_sized_ones() -> None:
    bound = InFlightBound(
        1_000_000, max_rows=None, max_jobs=32, rows_per_job=None, threads=2, capacity=100_000
    )
    bound.observe(AUTO_TASK_SECONDS / 1000, 100.0, 1)  # rows of 75 us: tasks of 1000 rows
    assert bound.rows_per_job == 1000 and bound.max_jobs == 32 and bound.max_rows == 32_000
    bound.set_threads(16)  # an explicit number of tasks does not follow the cluster
    assert bound.max_jobs == 32 and bound.max_rows == 32_000


def test_max_jobs_stops_tasks_in_flight_at_the_number_given() -> None:
    bound = InFlightBound(100, max_rows=None, max_jobs=3, rows_per_job=1, threads=8, capacity=100)
    for _ in range(3):
        assert bound.room(waiting=0) >= 1
        bound.sent(1)
    assert bound.room(waiting=0) == 0  # three tasks out, whatever the rows
    bound.done(1)
    assert bound.room(waiting=0) == 1  # two in flight: room for a third task
    assert bound.room(waiting=1) == 0  # and its result not taken yet: that one is still out


def test_the_default_max_jobs_follows_the_threads_and_a_fixed_row_bound_has_none() -> None:
    bound = InFlightBound(100, max_rows=None, rows_per_job=1, threads=2)
    assert bound.max_jobs == 8
    bound.set_threads(10)
    assert bound.max_jobs == 20
    assert InFlightBound(100, max_rows=5, max_jobs=3, rows_per_job=1).max_jobs is None


def test_held_seconds_count_refusals_while_threads_are_idle() -> None:
    bound = InFlightBound(100, max_rows=None, max_jobs=1, rows_per_job=1, threads=2)
    bound.note_room(granted=True, now=0.0)
    assert bound.held_seconds(now=5.0) == 0.0
    bound.note_room(granted=False, now=1.0)  # refused, no task in flight: held
    bound.note_room(granted=False, now=2.0)  # still held: counted from the first refusal
    assert bound.held_seconds(now=3.0) == 2.0
    bound.note_room(granted=True, now=4.0)
    assert bound.held_seconds(now=10.0) == 3.0
    bound.sent(1)
    bound.sent(1)  # two tasks in flight on two threads: a refusal now holds no thread back
    bound.note_room(granted=False, now=11.0)
    assert bound.held_seconds(now=20.0) == 3.0


def test_many_jobs_wait_for_the_first_measure_before_flying_as_one_row_tasks() -> None:
    """max_jobs_at_once=2048 with auto sizing sent 2048 one-row tasks at once (336 tiny rows/s)."""
    bound = InFlightBound(
        1_000_000, max_rows=None, max_jobs=2048, rows_per_job=None, threads=2, capacity=100_000
    )
    for _ in range(8):  # tasks_in_flight(2)
        assert bound.room(waiting=0) >= 1
        bound.sent(1)
    assert bound.room(waiting=0) == 0  # the ninth waits for a measure
    bound.observe(AUTO_TASK_SECONDS / 1000, 100.0, 1)
    assert bound.rows_per_job == 1000 and bound.room(waiting=0) > 0  # sized: up to 2048 tasks

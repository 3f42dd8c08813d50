"""rows_per_job="auto" sizing, without a cluster."""

from __future__ import annotations

import numpy as np

from dask_reservoir._core.ledger.bound import InFlightBound
from dask_reservoir._core.sizing import (
    AUTO_MAX_CHUNK_ROWS,
    AUTO_MAX_ROWS,
    BYTES_SAMPLE,
    TaskSizer,
    mean_row_bytes,
    row_bytes,
)


def test_time_rule_sizes_tasks_to_about_75_ms() -> None:
    sizer = TaskSizer()
    assert sizer.observe(0.0015, [{"label": 1}]) == 50  # 75 ms / 1.5 ms
    assert sizer.rows_per_job == 50
    assert sizer.observe(0.0015, [{"label": 1}]) is None  # unchanged


def test_slow_rows_give_one_row_tasks_and_fast_rows_are_capped() -> None:
    assert TaskSizer(8).observe(1.0, [{"label": 1}]) == 1
    assert TaskSizer().observe(1e-9, [{"label": 1}]) == 4096


def test_bytes_rule_caps_big_rows() -> None:
    one_mib = [{"x": np.zeros(2**18, np.float32)}]  # 1 MiB rows, loaded in a microsecond
    sizer = TaskSizer()
    size = sizer.observe(1e-6, one_mib)
    assert size is not None and 7 * 2**20 <= size * 2**20 <= 8 * 2**20  # 8 MiB per task at most


def test_hysteresis() -> None:
    sizer = TaskSizer(40)
    assert sizer.observe(0.0015, [{}]) is None  # 50 is within 1.25x of 40: keep 40
    assert sizer.rows_per_job == 40
    assert sizer.observe_task(0.0015, 64.0, 0) is None and sizer.rows_seen == 1  # an empty task


def test_smoothing_follows_a_change_gradually() -> None:
    sizer = TaskSizer()
    for _ in range(20):
        sizer.observe(0.0015, [{}])
    sizes = [sizer.observe(0.015, [{}]) for _ in range(40)]  # one-row tasks become 10x slower
    changed = [s for s in sizes if s is not None]
    assert len(changed) >= 3  # several steps, not one jump
    assert changed[0] < 50 and changed[-1] == sizer.rows_per_job
    assert 5 <= sizer.rows_per_job <= 6  # 75 ms / 15 ms, after the average has moved


def _ramp(first_row: float, row: float, *, in_flight: int = 8) -> list[int]:
    """Sizes of the tasks submitted one after another: ``in_flight`` one-row tasks at the
    start (the first row cold), then each next task sized by what came back."""
    sizer = TaskSizer()
    sizes = [1] * in_flight
    sizer.observe_task(first_row, 64.0, 1)
    for _ in range(in_flight - 1):
        sizer.observe_task(row, 64.0, 1)
    for _ in range(6):
        sizes.append(sizer.rows_per_job)
        sizer.observe_task(row, 64.0, sizer.rows_per_job)
    return sizes


def test_ramp_of_a_1_ms_loader_reaches_the_packed_size_after_the_first_tasks() -> None:
    # warm from the start: the first task back sets the size (75 ms / 1 ms)
    assert _ramp(0.001, 0.001) == [1] * 8 + [75] * 6
    # the first row 20x slower (imports, caches): the one-row tasks already in flight
    # dilute it as a plain mean (27 ms / 8 rows), then each packed task weighs by its rows
    assert _ramp(0.020, 0.001) == [1] * 8 + [18, 55, 75, 75, 75, 75]


def test_ramp_of_tiny_rows_reaches_the_largest_task_at_once() -> None:
    assert _ramp(2e-6, 1e-6)[8:] == [AUTO_MAX_ROWS] * 6
    assert _ramp(0.005, 1e-6)[8:10] == [120, AUTO_MAX_ROWS]  # one cold row: one step more


def test_a_slow_loader_stays_at_one_row_per_task() -> None:
    assert _ramp(2.0, 2.0) == [1] * 14  # a 2 s volume never waits behind another in its task
    assert _ramp(0.001, 0.1)[8:] == [1] * 6  # fast first row, then 100 ms rows: back to 1 at once


def test_row_bytes() -> None:
    assert row_bytes([{"x": np.zeros(4, np.float64), "s": "text"}]) == 64 + 32
    assert row_bytes([]) == 64


def test_mean_row_bytes_samples_big_tasks() -> None:
    small = [[{"x": np.zeros(1, np.uint8)}]] * 100
    big = [[{"x": np.zeros(1001, np.uint8)}]] * 100
    assert mean_row_bytes(small + big) == 64 + (1 + 1001) / 2  # evenly spaced: half of each
    assert mean_row_bytes([]) == 64
    counted = []

    class Counting(dict):  # type: ignore[type-arg]
        def values(self):  # type: ignore[no-untyped-def]
            counted.append(1)
            return super().values()

    mean_row_bytes([[Counting(x=1)] for _ in range(1000)])
    assert len(counted) == BYTES_SAMPLE  # not every row of a 1000-row task


def test_chunks_of_a_vectorized_function_grow_past_the_row_task_limit() -> None:
    rows = TaskSizer(1)
    chunks = TaskSizer(1, max_rows=AUTO_MAX_CHUNK_ROWS)
    for sizer in (rows, chunks):
        sizer.observe_task(1e-6, 16.0, 1000)  # 1 us and 16 bytes a row: 75,000 rows by time
    assert rows.rows_per_job == AUTO_MAX_ROWS == 4096
    assert chunks.rows_per_job == AUTO_MAX_CHUNK_ROWS == 65536
    bound = InFlightBound(10**6, max_rows=None, rows_per_job=None, threads=2, capacity=10**6, chunks=True)
    bound.observe(1e-6, 16.0, 1000)
    assert bound.rows_per_job == AUTO_MAX_CHUNK_ROWS

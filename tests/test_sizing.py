"""rows_per_job="auto" sizing, without a cluster."""

from __future__ import annotations

import numpy as np

from dask_reservoir.sizing import TaskSizer, row_bytes


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


def test_limit_and_hysteresis() -> None:
    assert TaskSizer(limit=10).observe(0.0015, [{}]) == 10
    sizer = TaskSizer(40)
    assert sizer.observe(0.0015, [{}]) is None  # 50 is within 1.25x of 40: keep 40
    assert sizer.rows_per_job == 40


def test_smoothing_follows_a_change_gradually() -> None:
    sizer = TaskSizer()
    sizer.observe(0.0015, [{}])
    sizes = [sizer.observe(0.015, [{}]) for _ in range(40)]  # rows become 10x slower
    changed = [s for s in sizes if s is not None]
    assert changed[0] < 50 and changed[-1] == sizer.rows_per_job
    assert 5 <= sizer.rows_per_job <= 6  # 75 ms / 15 ms, after the average has moved


def test_row_bytes() -> None:
    assert row_bytes([{"x": np.zeros(4, np.float64), "s": "text"}]) == 64 + 32
    assert row_bytes([]) == 64

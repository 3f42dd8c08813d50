"""ServedCounters: what the consumer saw and how long it waited (pure)."""

from __future__ import annotations

import time

import pytest

from dask_reservoir._core.served import RECENT_STALLS, ServedCounters


def test_fresh_counters_are_zero() -> None:
    s = ServedCounters().copy()
    assert (s.batches, s.samples, s.wait_seconds, s.minimum_wait_seconds, s.stalls) == (0, 0, 0.0, 0.0, [])


def test_batches_add_up() -> None:
    c = ServedCounters()
    c.batch(rows=4, seconds=0.5, carried=0.25)
    c.batch(rows=3, seconds=1.0, carried=0.0)
    c.batch(rows=0, seconds=2.0, carried=0.0)  # the epoch's end: waited, no batch
    s = c.copy()
    assert (s.batches, s.samples) == (2, 7)
    assert s.wait_seconds == 3.5
    assert s.stalls == [0.75, 1.0]


def test_minimum_wait_adds_up() -> None:
    c = ServedCounters()
    c.add_minimum_wait(0.5)
    c.add_minimum_wait(0.25)
    assert c.copy().minimum_wait_seconds == 0.75


def test_only_recent_stalls_are_kept() -> None:
    c = ServedCounters()
    for i in range(RECENT_STALLS + 5):
        c.batch(rows=1, seconds=float(i), carried=0.0)
    stalls = c.copy().stalls
    assert len(stalls) == 1000
    assert stalls[0] == 5.0 and stalls[-1] == float(RECENT_STALLS + 4)


def test_a_waiting_iter_counts_until_now() -> None:
    c = ServedCounters()
    c.batch(rows=1, seconds=1.0, carried=0.0)
    with c.in_iter() as took:
        time.sleep(0.02)
        during = c.copy().wait_seconds
        assert 1.02 <= during < 2.0
        assert took == []
    after = c.copy().wait_seconds
    assert len(took) == 1 and took[0] >= 0.02
    assert after == pytest.approx(1.0 + took[0])
    assert after >= during


def test_repr_shows_live_counters() -> None:
    c = ServedCounters()
    c.batch(rows=2, seconds=0.5, carried=0.0)
    assert repr(c) == "<ServedCounters: batches=1 samples=2 wait_seconds=0.500>"

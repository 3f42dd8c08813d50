"""Performance: a running mean, exact under concurrent adds, copied across processes (pure)."""

from __future__ import annotations

import sys
import threading

from dask_reservoir import Performance


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


def test_performance_totals_and_load() -> None:
    perf = Performance()
    perf.add(1)
    perf.add(2.5)
    assert perf.totals() == (3.5, 2)
    other = Performance()
    other.load(7, 4)
    assert other.totals() == (7.0, 4) and isinstance(other.totals()[0], float)
    assert isinstance(other.count, int) and other.count == 4
    assert other.get_average_time() == 1.75
    assert repr(other) == "<Performance: count=4 average=1.750000s>"
    other.load(*perf.totals())
    assert other.get_average_time() == 1.75 and other.count == 2

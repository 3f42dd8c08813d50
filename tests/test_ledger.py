"""The runner's bookkeeping, without a cluster: bound, order, full jobs, failures, quarantine."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_reservoir import JobError, RandomSampler, SequentialSampler
from dask_reservoir.ledger import Ledger
from dask_reservoir.outcomes import RowFailed, RowLoaded


def ok(uid: Any, seconds: float = 0.01) -> tuple[Any, ...]:
    return RowLoaded(uid, [{"x": 1}], seconds)


def err(uid: Any, message: str = "bad") -> tuple[Any, ...]:
    return RowFailed(uid, "ValueError", message, "traceback text", ValueError(message), 0.0)


def submit(ledger: Ledger) -> list[int]:
    job = ledger.next_job()
    if job:
        ledger.submitted(job)
    return job


def test_bound_counts_in_flight_and_waiting_rows() -> None:
    ledger = Ledger(list("abcdef"), SequentialSampler(), max_rows=4, rows_per_job=2)
    assert submit(ledger) == [0, 1] and submit(ledger) == [2, 3] and submit(ledger) == []
    ledger.finished([0, 1], [ok("a"), ok("b")], now=0.0)
    assert submit(ledger) == []  # finished but not taken: still counted
    assert [c.uid for c in ledger.take(1)] == ["a"]
    assert submit(ledger) == []  # one row of room, jobs are of two
    ledger.take()
    assert submit(ledger) == [4, 5]
    c = ledger.counters()
    assert (c.rows_in_flight, c.entries_waiting, c.jobs_submitted, c.rows_loaded) == (4, 0, 3, 2)


def test_source_cycles_and_outstanding_rows_are_not_doubled() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=10, rows_per_job=1)
    assert [submit(ledger) for _ in range(3)] == [[0], [1], []]
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.take()
    assert submit(ledger) == [0]  # second pass


def test_short_job_only_when_the_pipeline_is_empty() -> None:
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=12, rows_per_job=4)
    assert submit(ledger) == [0, 1, 2]  # the source has 3 rows: a short job, nothing else out
    ledger.finished([0, 1, 2], [ok("a"), ok("b"), ok("c")], now=0.0)
    ledger.take(1)
    assert submit(ledger) == []  # "a" alone would make a 1-row job while b, c wait
    ledger.take()
    assert submit(ledger) == [0, 1, 2]


def test_failures_consecutive_count_resets_and_quarantine() -> None:
    ledger = Ledger(["u"], SequentialSampler(), max_rows=1, rows_per_job=1, max_failures_per_uid=2)
    submit(ledger)
    ledger.finished([0], [err("u", "first")], now=0.0)
    submit(ledger)
    ledger.finished([0], [ok("u")], now=0.0)
    ledger.take()
    (record,) = ledger.counters().failures
    assert (record.count, record.consecutive) == (1, 0)
    for message in ("second", "third"):
        assert submit(ledger) == [0]
        ledger.finished([0], [err("u", message)], now=0.0)
    c = ledger.counters()
    assert list(c.quarantined) == ["u"] and c.quarantined["u"].message == "third"
    assert c.failures[0].message == "third" and c.failures[0].count == 3
    assert c.unloadable == frozenset({"u"})
    assert submit(ledger) == []  # quarantined: never submitted again


def test_release_quarantine_submits_again_with_a_fresh_count() -> None:
    ledger = Ledger(list("uv"), SequentialSampler(), max_rows=2, rows_per_job=1, max_failures_per_uid=1)
    for uid, position in (("u", 0), ("v", 1)):
        assert submit(ledger) == [position]
        ledger.finished([position], [err(uid)], now=0.0)
    assert set(ledger.counters().quarantined) == {"u", "v"} and submit(ledger) == []
    assert ledger.release_quarantine(["v", "not-there"]) == ["v"]
    assert list(ledger.counters().quarantined) == ["u"]
    assert submit(ledger) == [1]  # released: submitted at once
    ledger.finished([1], [err("v", "again")], now=0.0)  # one failure quarantines it again
    assert set(ledger.counters().quarantined) == {"u", "v"}
    assert sorted(ledger.release_quarantine()) == ["u", "v"] and not ledger.counters().quarantined


def test_empty_results_make_a_uid_unloadable_until_it_loads() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [RowLoaded("a", [], 0.0)], now=0.0)
    assert ledger.counters().unloadable == frozenset({"a"})
    ledger.take()
    submit(ledger)
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    assert ledger.counters().unloadable == frozenset()


def test_a_result_reported_under_another_uid_is_a_failure() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=2)
    submit(ledger)
    ledger.finished([0, 1], [ok("b"), ok("b")], now=0.0)
    c = ledger.counters()
    assert [w.uid for w in ledger.take()] == ["b"] and c.rows_loaded == 1
    (record,) = c.failures
    assert record.uid == "a" and "reported UID 'b'" in record.message


def test_cancelled_rows_keep_the_row_accounting() -> None:
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=3, rows_per_job=1)
    for _ in range(3):
        submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.failed([1], RuntimeError("x"), "")
    ledger.cancelled([2])
    c = ledger.counters()
    assert c.rows_in_flight == 0 and c.jobs_in_flight == 0
    assert (
        c.rows_submitted
        == c.rows_loaded + c.rows_failed + c.rows_requeued + c.rows_cancelled + c.rows_in_flight
    )
    assert (c.rows_loaded, c.rows_failed, c.rows_cancelled) == (1, 1, 1)


def test_bound_follows_worker_threads() -> None:
    ledger = Ledger(list(range(100)), SequentialSampler(), max_rows=2, rows_per_job=1, auto_bound_threads=1)
    assert [submit(ledger) for _ in range(3)] == [[0], [1], []]
    ledger.set_worker_threads(4)  # workers joined: 2 x 4 threads x 1 row
    assert ledger.max_rows == 8
    assert len([j for j in (submit(ledger) for _ in range(10)) if j]) == 6
    ledger.set_worker_threads(0)  # every worker left: keep a bound of 2 x 1
    assert ledger.max_rows == 2
    fixed = Ledger(list("ab"), SequentialSampler(), max_rows=1, rows_per_job=1)
    fixed.set_worker_threads(8)  # an explicit max_jobs_at_once never moves
    assert fixed.max_rows == 1


def test_whole_job_failure_and_collected_errors() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=2, collect_errors=True)
    submit(ledger)
    cause = RuntimeError("worker died")
    ledger.failed([0, 1], cause, "tb")
    errors = [ledger.pop_error(), ledger.pop_error()]
    assert [e.uid for e in errors if e] == ["a", "b"] and all(isinstance(e, JobError) for e in errors)
    assert errors[0] is not None and errors[0].__cause__ is cause
    assert "RuntimeError: worker died" in str(errors[0])
    assert ledger.pop_error() is None
    c = ledger.counters()
    assert (c.jobs_failed, c.rows_failed, c.rows_in_flight, c.uids_tried) == (1, 2, 0, 2)


def test_requeued_rows_go_first() -> None:
    ledger = Ledger(list("abcd"), SequentialSampler(), max_rows=2, rows_per_job=1)
    submit(ledger)
    submit(ledger)
    ledger.requeued([1])
    assert submit(ledger) == [1]
    assert ledger.counters().rows_requeued == 1


def test_skip_first_pass_counts_as_loaded() -> None:
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=3, rows_per_job=1, skip_first_pass=["b"])
    assert [submit(ledger) for _ in range(2)] == [[0], [2]]
    c = ledger.counters()
    assert c.uids_loaded == 1 and c.uids_tried == 1  # "b" counts as loaded already
    assert submit(ledger) == [1]  # the second pass refreshes it


def test_auto_sizes_tasks_from_row_time() -> None:
    ledger = Ledger(
        list(range(10_000)), SequentialSampler(), max_rows=4, rows_per_job=None, auto_bound_threads=2
    )
    assert ledger.rows_per_job == 1 and ledger.max_rows == 4
    job = submit(ledger)
    ledger.finished(job, [ok(0, seconds=0.0015)], now=0.0)
    # README: tasks of about 75 ms, so 1.5 ms rows make 50-row tasks; bound 2 threads x 2 x 50
    assert ledger.rows_per_job == 50 and ledger.max_rows == 200
    assert submit(ledger) == list(range(1, 51))  # the next job holds 50 rows


def test_source_sampler_is_checked() -> None:
    class Bad(SequentialSampler):
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return [n]

    with pytest.raises(
        ValueError, match=r"source_sampler .* must yield indices in range\(2\) \(2 source rows\)"
    ):
        Ledger(list("ab"), Bad(), max_rows=2, rows_per_job=1).next_job()


@given(
    steps=st.lists(st.sampled_from(["submit", "ok", "fail", "take", "requeue"]), max_size=80),
    bound=st.integers(1, 6),
    k=st.integers(1, 3),
)
def test_accounting_invariants(steps: list[str], bound: int, k: int) -> None:
    """Whatever happens: within the bound, and every submitted row accounted for."""
    k = min(k, bound)
    ledger = Ledger(
        list(range(7)), RandomSampler(seed=1), max_rows=bound, rows_per_job=k, max_failures_per_uid=None
    )
    jobs: list[list[int]] = []
    for step in steps:
        if step == "submit":
            job = submit(ledger)
            if job:
                jobs.append(job)
        elif step in ("ok", "fail", "requeue") and jobs:
            job = jobs.pop(0)
            if step == "ok":
                ledger.finished(job, [ok(p) for p in job], now=0.0)
            elif step == "fail":
                ledger.failed(job, ValueError("x"), "")
            else:
                ledger.requeued(job)
        elif step == "take":
            ledger.take()
        c = ledger.counters()
        assert c.rows_in_flight + c.entries_waiting <= bound
        assert c.rows_submitted == c.rows_loaded + c.rows_failed + c.rows_requeued + c.rows_in_flight
        assert c.rows_in_flight == sum(len(j) for j in jobs)


def test_auto_caps_task_bytes() -> None:
    import numpy as np

    ledger = Ledger(
        list(range(10_000)), SequentialSampler(), max_rows=4, rows_per_job=None, auto_bound_threads=2
    )
    job = submit(ledger)
    big = RowLoaded(0, [{"x": np.zeros(2**18, np.float32)}], 1e-6)  # 1 MiB rows, fast to make
    ledger.finished(job, [big], now=0.0)
    # README: tasks return at most 8 MiB of arrays, so 1 MiB rows make tasks of about 8 rows
    # (the 1 us row time alone would allow thousands)
    assert ledger.rows_per_job in (7, 8)
    assert ledger.max_rows == 4 * ledger.rows_per_job  # 2 threads x 2
    assert len(submit(ledger)) == ledger.rows_per_job

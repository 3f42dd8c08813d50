"""The runner's bookkeeping, without a cluster: bound, order, full jobs, failures, quarantine."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_reservoir import JobError, RandomSampler, SequentialSampler
from dask_reservoir._core.ledger import MIN_TASKS_IN_FLIGHT, Ledger
from dask_reservoir._core.records import RowFailed, RowLoaded
from dask_reservoir._core.uid_index import UidIndex


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


def test_shipped_entries_stay_in_the_bound_until_acknowledged() -> None:
    ledger = Ledger(list("abcd"), SequentialSampler(), max_rows=2, rows_per_job=1)
    assert submit(ledger) == [0] and submit(ledger) == [1] and submit(ledger) == []
    ledger.finished([0, 1], [ok("a"), ok("b")], now=0.0)
    shipped = ledger.ship()
    assert [c.uid for c in shipped] == ["a", "b"]
    assert ledger.counters().entries_waiting == 0 and not ledger.has_waiting()
    assert submit(ledger) == []  # shipped, not acknowledged: still within the bound
    ledger.acknowledge(["a"])
    assert submit(ledger) == [2]
    ledger.acknowledge(["b"])
    assert submit(ledger) == [3]
    assert submit(ledger) == []


def test_shipped_uid_is_not_submitted_again_before_acknowledged() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=10, rows_per_job=1)
    assert [submit(ledger) for _ in range(3)] == [[0], [1], []]
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.ship()
    assert submit(ledger) == []  # "a" is on its way to the consumer; "b" is in flight
    ledger.acknowledge(["a"])
    assert submit(ledger) == [0]


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


def test_default_bound_is_in_tasks_and_follows_worker_threads() -> None:
    ledger = Ledger(
        list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=1, auto_bound_threads=1
    )
    # dask needs tasks in flight to hide its latency: 8 one-row tasks even for one thread
    assert [submit(ledger) for _ in range(9)] == [[i] for i in range(8)] + [[]]
    assert ledger.max_rows == MIN_TASKS_IN_FLIGHT == 8
    ledger.set_worker_threads(4)  # 2 x 4 threads is still 8 tasks
    assert ledger.max_rows == 8
    ledger.set_worker_threads(10)  # workers joined: 2 x 10 threads
    assert ledger.max_rows == 20
    assert len([j for j in (submit(ledger) for _ in range(30)) if j]) == 12
    ledger.set_worker_threads(0)  # every worker left: counts as one thread
    assert ledger.max_rows == 8
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
        list(range(10_000)), SequentialSampler(), max_rows=None, rows_per_job=None, auto_bound_threads=2
    )
    assert ledger.rows_per_job == 1 and ledger.max_rows == 8
    job = submit(ledger)
    ledger.finished(job, [ok(0, seconds=0.0015)], now=0.0)
    # README: tasks of about 75 ms, so 1.5 ms rows make 50-row tasks; bound 8 tasks x 50
    assert ledger.rows_per_job == 50 and ledger.max_rows == 400
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
        list(range(10_000)), SequentialSampler(), max_rows=None, rows_per_job=None, auto_bound_threads=2
    )
    job = submit(ledger)
    big = RowLoaded(0, [{"x": np.zeros(2**18, np.float32)}], 1e-6)  # 1 MiB rows, fast to make
    ledger.finished(job, [big], now=0.0)
    # README: tasks return at most 8 MiB of arrays, so 1 MiB rows make tasks of about 8 rows
    # (the 1 us row time alone would allow thousands)
    assert ledger.rows_per_job in (7, 8)
    assert ledger.max_rows == 8 * ledger.rows_per_job  # 8 tasks
    assert len(submit(ledger)) == ledger.rows_per_job


# ---------------------------------------------------------------------- state a new ledger shows


def test_a_new_ledger_runs_and_keeps_no_errors_by_default() -> None:
    ledger = Ledger(["u"], SequentialSampler(), max_rows=1, rows_per_job=1)
    assert ledger.counters().status == "running" and ledger.status == "running"
    assert ledger.fatal is None and not ledger.closed
    assert ledger.mean_load_seconds == 0.0 and ledger.recent_load_seconds() == []
    submit(ledger)
    ledger.finished([0], [err("u")], now=0.0)
    assert ledger.pop_error() is None  # collect_errors defaults to False
    assert ledger.counters().failures[0].uid == "u"


# ---------------------------------------------------------------------- counters and entries


def test_counters_add_up_over_several_jobs() -> None:
    ledger = Ledger(list("abcdef"), SequentialSampler(), max_rows=6, rows_per_job=1)
    for _ in range(6):
        submit(ledger)
    ledger.finished([0], [ok("a", 0.5)], now=0.0)
    ledger.finished([1], [ok("b", 1.5)], now=0.0)
    ledger.failed([2], RuntimeError("x"), "")
    ledger.failed([3], RuntimeError("y"), "")
    ledger.cancelled([4])
    ledger.cancelled([5])
    c = ledger.counters()
    assert (c.jobs_submitted, c.jobs_completed, c.jobs_failed) == (6, 4, 2)
    assert (c.rows_loaded, c.rows_failed, c.rows_cancelled, c.uids_tried, c.uids_loaded) == (2, 2, 2, 4, 2)
    assert ledger.mean_load_seconds == pytest.approx(1.0)
    assert ledger.recent_load_seconds() == [0.5, 1.5]


def test_recent_load_seconds_keeps_the_last_thousand() -> None:
    n = 1005
    ledger = Ledger(list(range(n)), SequentialSampler(), max_rows=n, rows_per_job=n)
    job = submit(ledger)
    ledger.finished(job, [ok(p, seconds=float(p)) for p in job], now=0.0)
    assert ledger.recent_load_seconds() == [float(p) for p in range(5, n)]
    assert ledger.mean_load_seconds == pytest.approx((n - 1) / 2)


def test_taken_entries_carry_row_position_rows_and_times() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=2)
    submit(ledger)
    ledger.finished([0, 1], [RowLoaded("a", [{"x": 1}, {"x": 2}], 0.25), ok("b")], now=7.0)
    first, second = ledger.take()
    assert (first.uid, first.position, first.rows, first.load_seconds, first.loaded_at) == (
        "a",
        0,
        ({"x": 1}, {"x": 2}),
        0.25,
        7.0,
    )
    assert (second.uid, second.position) == ("b", 1)


def test_has_waiting_follows_finished_and_taken_entries() -> None:
    ledger = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    assert not ledger.has_waiting()
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    assert ledger.has_waiting()
    ledger.take()
    assert not ledger.has_waiting()


def test_one_outcome_per_row_is_required() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=2)
    submit(ledger)
    with pytest.raises(ValueError):
        ledger.finished([0, 1], [ok("a")], now=0.0)


# ---------------------------------------------------------------------- failures


def test_failure_records_keep_type_traceback_and_counts() -> None:
    ledger = Ledger(["u"], SequentialSampler(), max_rows=1, rows_per_job=1, collect_errors=True)
    submit(ledger)
    ledger.finished([0], [err("u", "first")], now=0.0)
    submit(ledger)
    ledger.failed([0], KeyError("k"), "job traceback")
    (record,) = ledger.counters().failures
    assert (record.exc_type, record.message, record.traceback) == ("KeyError", "'k'", "job traceback")
    assert (record.count, record.consecutive) == (2, 2)
    row_error, job_error = ledger.pop_error(), ledger.pop_error()
    assert row_error is not None and isinstance(row_error.__cause__, ValueError)
    assert str(row_error) == "function_to_run failed for UID 'u': ValueError: first"
    assert job_error is not None and isinstance(job_error.__cause__, KeyError)


def test_a_row_failure_keeps_the_worker_traceback() -> None:
    ledger = Ledger(["u"], SequentialSampler(), max_rows=1, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [err("u")], now=0.0)
    (record,) = ledger.counters().failures
    assert (record.exc_type, record.traceback, record.consecutive) == ("ValueError", "traceback text", 1)


def test_failed_rows_are_submitted_again_in_the_next_pass() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1)
    assert [submit(ledger), submit(ledger)] == [[0], [1]]
    ledger.failed([0], RuntimeError("x"), "")
    ledger.finished([1], [err("b")], now=0.0)
    assert [submit(ledger), submit(ledger)] == [[0], [1]]


def test_a_result_under_another_uid_is_dropped_and_the_row_tried_again() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [ok("b")], now=0.0)
    (record,) = ledger.counters().failures
    assert (record.uid, record.exc_type, record.traceback) == ("a", "JobError", "")
    assert record.message == (
        "the worker reported UID 'b' for the source row of UID 'a' "
        "(row order of the source changed between reads?); the result was dropped"
    )
    assert not ledger.has_waiting()
    assert submit(ledger) == [1] and submit(ledger) == [0]  # "a" is not left outstanding


@pytest.mark.parametrize(
    ("reported", "expected"),
    [(-1, -2), (np.array([0, 0]), 0)],
    ids=["equal hash, different value", "comparison raises"],
)
def test_reported_uid_must_be_the_same_value(reported: Any, expected: Any) -> None:
    # hash(-1) == hash(-2) in CPython; an array compared with a UID cannot be made a bool
    ledger = Ledger([expected], SequentialSampler(), max_rows=1, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [RowLoaded(reported, [{"x": 1}], 0.0)], now=0.0)
    c = ledger.counters()
    assert c.rows_loaded == 0 and c.failures[0].exc_type == "JobError" and not ledger.take()


def test_failures_are_logged_once_as_warning_then_as_debug(caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(["u"], SequentialSampler(), max_rows=1, rows_per_job=1, max_failures_per_uid=2)
    with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
        for message in ("one", "two"):
            submit(ledger)
            ledger.finished([0], [err("u", message)], now=0.0)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "dask_reservoir: job for UID 'u' failed (1 times): ValueError: one"),
        (logging.DEBUG, "dask_reservoir: job for UID 'u' failed (2 times): ValueError: two"),
        (
            logging.WARNING,
            "dask_reservoir: UID 'u' quarantined after 2 failures in a row; last: ValueError: two",
        ),
    ]


def test_rejected_entry_is_a_failure_of_its_uid_and_a_failed_row() -> None:
    ledger = Ledger(
        list("ab"),
        SequentialSampler(),
        max_rows=2,
        rows_per_job=1,
        max_failures_per_uid=1,
        collect_errors=True,
    )
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.take()
    cause = OSError("disk full")
    ledger.rejected("a", cause)
    c = ledger.counters()
    assert (c.uids_loaded, c.rows_loaded, c.rows_failed) == (0, 0, 1)  # failed, no longer loaded
    assert (
        c.rows_submitted
        == c.rows_loaded + c.rows_failed + c.rows_requeued + c.rows_cancelled + c.rows_in_flight
    )
    (record,) = c.failures
    assert (record.uid, record.exc_type, record.message, record.traceback) == (
        "a",
        "OSError",
        "disk full",
        "",
    )
    assert list(c.quarantined) == ["a"] and c.unloadable == frozenset({"a"})
    error = ledger.pop_error()
    assert error is not None and error.uid == "a" and error.__cause__ is cause


def test_a_rejected_uid_whose_last_result_was_empty_stays_unloadable_only_if_empty() -> None:
    ledger = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [RowLoaded("a", [], 0.0)], now=0.0)
    ledger.take()
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)  # loads now: no longer empty
    ledger.take()
    ledger.rejected("a", OSError("x"))
    assert ledger.counters().unloadable == frozenset()


def test_quarantine_shows_the_latest_failure_of_the_uid() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1, max_failures_per_uid=1)
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.take()
    assert submit(ledger) == [1] and submit(ledger) == [0]  # "a" in flight again
    ledger.rejected("a", OSError("stored badly"))  # quarantined while its row is in flight
    ledger.finished([0], [err("a", "then failed")], now=0.0)
    c = ledger.counters()
    assert c.quarantined["a"].message == "then failed" and c.quarantined["a"].count == 2


# ---------------------------------------------------------------------- quarantine release


def test_released_uid_goes_before_the_rest_of_the_source_with_a_fresh_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = Ledger(list("abcdefgh"), SequentialSampler(), max_rows=1, rows_per_job=1, max_failures_per_uid=2)
    for position in range(9):  # "a" fails in both passes, the others load
        assert submit(ledger) == [position % 8]
        uid = "abcdefgh"[position % 8]
        ledger.finished([position % 8], [err(uid) if uid == "a" else ok(uid)], now=0.0)
        ledger.take()
    assert list(ledger.counters().quarantined) == ["a"]
    assert submit(ledger) == [1]
    ledger.finished([1], [ok("b")], now=0.0)
    ledger.take()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        assert ledger.release_quarantine() == ["a"]
    assert [r.getMessage() for r in caplog.records] == ["dask_reservoir: released 1 UIDs from quarantine"]
    record = ledger.counters().failures[0]
    assert (record.uid, record.count, record.consecutive) == ("a", 2, 0)
    assert submit(ledger) == [0]  # before c, d, ...
    ledger.finished([0], [err("a")], now=0.0)
    assert not ledger.counters().quarantined  # one failure of the two allowed
    assert ledger.counters().failures[0].consecutive == 1


def test_release_quarantine_of_a_row_in_flight_does_not_submit_it_twice() -> None:
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=3, rows_per_job=1, max_failures_per_uid=1)
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.take()
    assert submit(ledger) == [1] and submit(ledger) == [2]
    ledger.finished([1], [ok("b")], now=0.0)
    ledger.take()
    assert submit(ledger) == [0]  # "a" in flight (second pass)
    ledger.rejected("a", OSError("x"))
    assert ledger.release_quarantine(["a"]) == ["a"]
    assert submit(ledger) == [1]  # not "a" again while its row is out


def test_release_quarantine_names_a_uid_once_even_if_given_twice() -> None:
    ledger = Ledger(list("uv"), SequentialSampler(), max_rows=2, rows_per_job=1, max_failures_per_uid=1)
    submit(ledger)
    ledger.finished([0], [err("u")], now=0.0)
    assert ledger.release_quarantine(["u", "u"]) == ["u"]
    assert submit(ledger) == [0] and submit(ledger) == [1]


def test_a_quarantined_uid_never_leaves_the_retry_queue() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1, max_failures_per_uid=1)
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.take()
    assert submit(ledger) == [1] and submit(ledger) == [0]
    ledger.requeued([0])  # "a" is to be submitted first ...
    ledger.rejected("a", OSError("x"))  # ... but its earlier entry quarantines it
    ledger.finished([1], [ok("b")], now=0.0)
    ledger.take()
    assert submit(ledger) == [1] and submit(ledger) == []


# ---------------------------------------------------------------------- what to submit


def test_requeued_rows_go_first_one_job_at_a_time() -> None:
    ledger = Ledger(list("abcd"), SequentialSampler(), max_rows=4, rows_per_job=1)
    assert [submit(ledger) for _ in range(3)] == [[0], [1], [2]]
    ledger.requeued([1])
    ledger.requeued([2])
    assert submit(ledger) == [1] and submit(ledger) == [2] and submit(ledger) == [3]


def test_skip_first_pass_of_several_uids() -> None:
    ledger = Ledger(list("abcd"), SequentialSampler(), max_rows=4, rows_per_job=1, skip_first_pass=["b", "c"])
    assert [submit(ledger) for _ in range(2)] == [[0], [3]]
    c = ledger.counters()
    assert (c.uids_loaded, c.uids_tried) == (2, 2)


def test_a_sampler_yielding_no_rows_submits_nothing() -> None:
    class Empty(SequentialSampler):
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return []

    ledger = Ledger(list("ab"), Empty(), max_rows=2, rows_per_job=1)
    assert ledger.next_job() == []


def test_bound_follows_worker_threads_times_rows_per_job() -> None:
    ledger = Ledger(
        list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=2, auto_bound_threads=1
    )
    ledger.set_worker_threads(3)
    assert ledger.max_rows == 16  # max(2 x 3, 8) tasks x 2 rows
    ledger.set_worker_threads(6)
    assert ledger.max_rows == 24  # 2 x 6 tasks x 2 rows


def test_auto_task_size_grows_from_one_row() -> None:
    # rows of 37.5 ms make tasks of 2 rows (about 75 ms)
    ledger = Ledger(
        list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=None, auto_bound_threads=1
    )
    job = submit(ledger)
    ledger.finished(job, [ok(0, seconds=0.0375)], now=0.0)
    assert ledger.rows_per_job == 2 and ledger.max_rows == 16


def test_auto_task_size_stays_within_an_explicit_bound() -> None:
    # an explicit bound of 40 rows holds two tasks per worker thread (2 threads): 10 rows each
    ledger = Ledger(
        list(range(100)), SequentialSampler(), max_rows=40, rows_per_job=None, auto_bound_threads=2
    )
    job = submit(ledger)
    ledger.finished(job, [ok(0, seconds=1e-6)], now=0.0)
    assert ledger.rows_per_job == 10 and ledger.max_rows == 40
    ledger.take()
    assert submit(ledger) == list(range(1, 11))
    small = Ledger(list(range(100)), SequentialSampler(), max_rows=3, rows_per_job=None)
    small.finished(submit(small), [ok(0, seconds=1e-6)], now=0.0)
    assert small.rows_per_job == 1 and small.max_rows == 3  # too small to pack: one row a task


def test_default_bound_holds_at_most_the_reservoir() -> None:
    # fast rows want 4096-row tasks; a reservoir of 1000 entries takes 2 x 2 threads tasks of 250
    ledger = Ledger(
        list(range(10_000)),
        SequentialSampler(),
        max_rows=None,
        rows_per_job=None,
        capacity=1000,
        auto_bound_threads=2,
    )
    ledger.finished(submit(ledger), [ok(0, seconds=1e-6)], now=0.0)
    assert ledger.rows_per_job == 250 and ledger.max_rows == 1000
    ledger.take()
    jobs = [submit(ledger) for _ in range(5)]
    assert [len(j) for j in jobs] == [250] * 4 + [0]
    ledger.set_worker_threads(8)  # 2 x 8 threads: smaller tasks, the same rows out
    assert ledger.rows_per_job == 62 and ledger.max_rows == 992
    ledger.set_worker_threads(2)  # back: the sizer's wish within the new limit
    assert ledger.rows_per_job == 250
    slow = Ledger(list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=None, capacity=1000)
    slow.finished(submit(slow), [ok(0, seconds=0.015)], now=0.0)
    assert slow.rows_per_job == 5 and slow.max_rows == 40  # the limit does not bind: 8 tasks of 5
    # a fixed task size keeps two tasks out, even beyond a smaller reservoir
    fixed = Ledger(list(range(100)), SequentialSampler(), max_rows=None, rows_per_job=8, capacity=20)
    assert fixed.max_rows == 20
    assert (
        Ledger(list("abc"), SequentialSampler(), max_rows=None, rows_per_job=16, capacity=20).max_rows == 32
    )
    tiny = Ledger(list(range(10)), SequentialSampler(), max_rows=None, rows_per_job=None, capacity=3)
    assert tiny.max_rows == 3 and tiny.rows_per_job == 1


# ---------------------------------------------------------------------- status, close, wait


def test_set_status_records_what_stopped_the_runner() -> None:
    ledger = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    ledger.set_status("reconnecting")
    assert ledger.counters().status == "reconnecting" and ledger.fatal is None
    boom = RuntimeError("lost")
    ledger.set_status("failed", boom)
    assert ledger.status == "failed" and ledger.fatal is boom
    ledger.set_status("failed")  # no new cause: keeps the first
    assert ledger.fatal is boom


def test_close_drops_waiting_entries() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=2, rows_per_job=1)
    submit(ledger)
    ledger.finished([0], [ok("a")], now=0.0)
    ledger.close()
    assert ledger.closed is True and ledger.counters().status == "closed"
    assert not ledger.has_waiting() and ledger.take() == []
    ledger.close()
    assert ledger.closed is True


def _waited(ledger: Ledger, timeout: float) -> float:
    start = time.monotonic()
    ledger.wait(timeout)
    return time.monotonic() - start


def test_wait_returns_at_once_when_something_is_there_to_report() -> None:
    with_entry = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    submit(with_entry)
    with_entry.finished([0], [ok("a")], now=0.0)
    with_error = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1, collect_errors=True)
    submit(with_error)
    with_error.finished([0], [err("a")], now=0.0)
    stopped = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    stopped.set_status("failed", RuntimeError("x"))
    closed = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    closed.close()
    for ledger in (with_entry, with_error, stopped, closed):
        assert _waited(ledger, 5.0) < 2.0


def test_wait_blocks_until_the_timeout_when_nothing_happens() -> None:
    ledger = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    assert 0.15 <= _waited(ledger, 0.2) < 0.9
    assert _waited(ledger, -1.0) < 0.9  # a timeout already past does not block


def test_wait_wakes_when_an_entry_arrives() -> None:
    ledger = Ledger(["a"], SequentialSampler(), max_rows=1, rows_per_job=1)
    submit(ledger)
    timer = threading.Timer(0.05, lambda: ledger.finished([0], [ok("a")], now=0.0))
    timer.start()
    try:
        assert _waited(ledger, 10.0) < 5.0
    finally:
        timer.join()


def test_auto_does_not_pack_a_small_source_into_fewer_tasks_than_two_per_thread() -> None:
    ledger = Ledger(
        list("abc"), SequentialSampler(), max_rows=None, rows_per_job=None, capacity=10, auto_bound_threads=2
    )
    jobs = [submit(ledger) for _ in range(4)]
    assert jobs == [[0], [1], [2], []]
    for job, uid in zip(jobs, "abc", strict=False):
        ledger.finished(job, [ok(uid, seconds=1e-6)], now=0.0)  # fast rows: the sizer wants 4096
    assert ledger.rows_per_job == 1  # 3 rows, 2 threads: one row a task, none held back
    ledger.take()
    assert [submit(ledger) for _ in range(3)] == [[0], [1], [2]]
    bigger = Ledger(
        list(range(40)),
        SequentialSampler(),
        max_rows=None,
        rows_per_job=None,
        capacity=100,
        auto_bound_threads=2,
    )
    bigger.finished(submit(bigger), [ok(0, seconds=1e-6)], now=0.0)
    assert bigger.rows_per_job == 10  # 40 rows / (2 x 2 threads)


@pytest.mark.parametrize("indexed", [False, True], ids=["list", "UidIndex"])
def test_source_position_names_the_rows_out_and_restore_submits_them_first(indexed: bool) -> None:
    uids: Any = UidIndex(list("abcdef")) if indexed else list("abcdef")  # UidIndex: found by one scan
    ledger = Ledger(uids, SequentialSampler(), max_rows=3, rows_per_job=1)
    assert [submit(ledger) for _ in range(3)] == [[0], [1], [2]]
    ledger.finished([0], [ok("a")], now=0.0)  # "a" waits, "b" and "c" are in flight
    source_pass, cursor, pending = ledger.source_position()
    assert (source_pass, cursor) == (1, 3) and sorted(pending) == ["a", "b", "c"]
    ledger.take()
    assert sorted(ledger.source_position()[2]) == ["b", "c"]  # taken: no longer out

    resumed = Ledger(uids, SequentialSampler(), max_rows=10, rows_per_job=1)
    resumed.restore(
        source_pass=1, source_cursor=3, first=[uids.index(u) for u in pending], quarantined=["f", "zz"]
    )
    jobs = [submit(resumed) for _ in range(6)]
    assert sorted(p for job in jobs[:3] for p in job) == [0, 1, 2]  # what was out goes first
    assert jobs[3:] == [[3], [4], []]  # then the pass goes on; "f" stays quarantined
    assert set(resumed.counters().quarantined) == {"f"}


def test_results_the_store_rejects_count_towards_quarantine_despite_loading() -> None:
    ledger = Ledger(["a", "b"], SequentialSampler(), max_rows=1, rows_per_job=1, max_failures_per_uid=3)
    for attempt in range(3):
        assert submit(ledger) == [0]
        ledger.finished([0], [ok("a")], now=0.0)  # it loads...
        ledger.take()
        ledger.rejected("a", ValueError("cannot be stored"))  # ...but the store refuses it
        assert ledger.counters().failures[0].consecutive == attempt + 1
        if attempt < 2:
            assert submit(ledger) == [1]
            ledger.finished([1], [ok("b")], now=0.0)
            ledger.take()
    assert set(ledger.counters().quarantined) == {"a"}
    assert ledger.release_quarantine() == ["a"]
    assert submit(ledger) == [0]
    ledger.finished([0], [ok("a")], now=0.0)
    assert ledger.counters().failures[0].consecutive == 0  # a plain load after release resets the count


# ---------------------------------------------------------------------- vectorized jobs (finished_chunk)
def chunk_of(uids: list[Any], counts: list[int], seconds: float) -> Any:
    from dask_reservoir._core.blocks import ChunkLoaded, ColumnBlock

    return ChunkLoaded(uids, np.array(counts), ColumnBlock({"x": np.arange(10, 10 + sum(counts))}), seconds)


def test_a_chunk_in_submission_order_gives_one_entry_per_uid() -> None:
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=10, rows_per_job=3)
    assert submit(ledger) == [0, 1, 2]
    ledger.finished_chunk([0, 1, 2], chunk_of(["a", "b", "c"], [2, 0, 1], 3.0), now=5.0)
    c = ledger.counters()
    assert (c.jobs_completed, c.jobs_failed, c.rows_failed, c.failures) == (1, 0, 0, ())
    assert (c.rows_loaded, c.rows_in_flight, c.jobs_in_flight, c.entries_waiting) == (3, 0, 0, 3)
    assert (c.uids_tried, c.uids_loaded, c.unloadable) == (3, 2, frozenset({"b"}))
    assert ledger.recent_load_seconds() == [1.0, 1.0, 1.0] and ledger.mean_load_seconds == 1.0
    taken = ledger.take()
    assert [(e.uid, e.position, e.load_seconds, e.loaded_at) for e in taken] == [
        ("a", 0, 1.0, 5.0),
        ("b", 1, 1.0, 5.0),
        ("c", 2, 1.0, 5.0),
    ]
    assert [[r.as_dict()["x"] for r in e.rows] for e in taken] == [[10, 11], [], [12]]
    assert submit(ledger) == [0, 1, 2]  # taken: no longer out, the next pass submits them again


def test_a_chunk_reported_in_another_order_is_a_failure_of_each_uid() -> None:
    ledger = Ledger(list("ab"), SequentialSampler(), max_rows=10, rows_per_job=2)
    submit(ledger)
    ledger.finished_chunk([0, 1], chunk_of(["b", "a"], [1, 1], 2.0), now=0.0)
    c = ledger.counters()
    assert c.rows_loaded == 0 and c.rows_in_flight == 0 and c.jobs_completed == 1
    assert ledger.take() == []
    assert {r.uid for r in c.failures} == {"a", "b"} and len(c.failures) == 2
    assert all("reported UID" in r.message for r in c.failures)


def test_a_chunk_loading_a_uid_resets_its_consecutive_failures() -> None:
    ledger = Ledger(list("a"), SequentialSampler(), max_rows=1, rows_per_job=1, max_failures_per_uid=2)
    submit(ledger)
    ledger.finished([0], [RowFailed("a", "ValueError", "bad", "", None, 0.0)], now=0.0)
    submit(ledger)
    ledger.finished_chunk([0], chunk_of(["a"], [1], 1.0), now=0.0)
    ledger.take()
    submit(ledger)
    ledger.finished([0], [RowFailed("a", "ValueError", "bad", "", None, 0.0)], now=0.0)
    c = ledger.counters()
    assert not c.quarantined and c.failures[0].consecutive == 1  # not two in a row: the chunk loaded


def test_a_chunk_sizes_auto_tasks_from_its_rows_time() -> None:
    ledger = Ledger(
        list(range(10_000)), SequentialSampler(), max_rows=None, rows_per_job=None, auto_bound_threads=2
    )
    job = submit(ledger)
    assert job == [0]
    ledger.finished_chunk(job, chunk_of([0], [1], 0.0015), now=0.0)
    # README: tasks of about 75 ms, so 1.5 ms rows make 50-row tasks; bound 8 tasks x 50
    assert ledger.rows_per_job == 50 and ledger.max_rows == 400


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_chunk_of_one_row_per_uid_waits_as_one_block_unless_deterministic(deterministic: bool) -> None:
    from dask_reservoir._core.blocks import ChunkLoaded, ColumnBlock, CompletedBlock

    ledger = Ledger(
        list("abcd"), SequentialSampler(), max_rows=10, rows_per_job=3, deterministic=deterministic
    )
    assert submit(ledger) == [0, 1, 2]
    chunk = ChunkLoaded(["a", "b", "c"], np.ones(3, np.int64), ColumnBlock({"x": np.arange(3)}), 0.6)
    ledger.finished_chunk([0, 1, 2], chunk._replace(row_seconds=np.array([0.1, 0.2, 0.3])), now=4.0)
    assert ledger.counters().entries_waiting == 3
    taken = ledger.take(2)
    if deterministic:  # released row by row, in submission order
        assert [type(t).__name__ for t in taken] == ["Completed", "Completed"]
        assert [(t.uid, t.load_seconds) for t in taken] == [("a", 0.1), ("b", 0.2)]  # type: ignore[union-attr]
    else:  # no object per row: the task's block, split at the limit
        (block,) = taken
        assert isinstance(block, CompletedBlock) and block.uids == ["a", "b"]
        assert block.positions.tolist() == [0, 1] and block.load_seconds.tolist() == [0.1, 0.2]
        assert block.loaded_at == 4.0 and block.rows.tolist() == [0, 1]
    assert ledger.counters().entries_waiting == 1
    assert submit(ledger) == [3, 0, 1]  # the pass goes on to d, then a and b (taken: no longer out); c waits


@pytest.mark.parametrize("indexed", [False, True], ids=["list", "UidIndex"])
def test_a_rejected_entry_no_longer_counts_as_loaded(indexed: bool) -> None:
    uids: Any = UidIndex(list("abc")) if indexed else list("abc")
    ledger = Ledger(uids, SequentialSampler(), max_rows=3, rows_per_job=3)
    assert submit(ledger) == [0, 1, 2]
    ledger.finished([0, 1, 2], [ok("a"), ok("b"), ok("c")], now=0.0)
    assert (ledger.counters().uids_tried, ledger.counters().uids_loaded) == (3, 3)
    ledger.rejected("b", ValueError("cannot be stored"))  # the position found from the UID
    ledger.rejected("c", ValueError("cannot be stored"), 2)  # or given
    ledger.rejected("zz", ValueError("not a UID of the source"))
    c = ledger.counters()
    assert (c.uids_tried, c.uids_loaded) == (3, 1) and {f.uid for f in c.failures} == {"b", "c", "zz"}


def test_a_checkpoint_between_choosing_a_job_and_submitting_it_keeps_the_submission_order() -> None:
    """A row chosen again but not yet submitted sorted by its older submission's number: a resumed
    deterministic run submitted it first, and went on with other rows than the saving run."""
    ledger = Ledger(list("abc"), SequentialSampler(), max_rows=3, rows_per_job=1, deterministic=True)
    for _ in range(3):  # the first pass: a, b, c, numbered 0, 1, 2
        submit(ledger)
    ledger.finished([0, 1, 2], [ok("a"), ok("b"), ok("c")], now=0.0)
    assert [c.uid for c in ledger.take()] == ["a", "b", "c"]
    submit(ledger)  # the second pass: a, numbered 3
    assert ledger.next_job() == [1]  # b chosen; the runner has not submitted it yet
    assert ledger.source_position()[2] == ("a", "b")  # b after a, not before it (its old number, 1)
    ledger.submitted([1])
    assert ledger.source_position()[2] == ("a", "b")


def test_loading_is_done_only_when_every_row_of_the_passes_came_back() -> None:
    ledger = Ledger(["a", "b", "c"], SequentialSampler(), max_rows=None, rows_per_job=1, max_passes=1)
    first = [*ledger.next_job(), *ledger.next_job()]
    ledger.submitted(first[:1])
    ledger.submitted(first[1:])
    last = ledger.next_job()  # chosen, not yet submitted: the runner submits outside the lock
    assert (first, last) == ([0, 1], [2])
    ledger.finished(first[:1], [RowLoaded("a", [{"x": 1}], 0.1)], now=1.0)
    ledger.finished(first[1:], [RowLoaded("b", [{"x": 1}], 0.1)], now=1.0)
    assert not ledger.counters().loading_done  # the cursor is through, but "c" is not sent
    ledger.submitted(last)
    assert not ledger.counters().loading_done  # in flight
    ledger.finished(last, [RowLoaded("c", [{"x": 1}], 0.1)], now=2.0)
    assert ledger.counters().loading_done and ledger.next_job() == []
    unbounded = Ledger(["a"], SequentialSampler(), max_rows=None, rows_per_job=1)
    job = unbounded.next_job()
    unbounded.submitted(job)
    unbounded.finished(job, [RowLoaded("a", [{"x": 1}], 0.1)], now=1.0)
    assert not unbounded.counters().loading_done  # without passes, loading never ends

"""The failure book, without a cluster: records, counts in a row, quarantine, release, errors."""

from __future__ import annotations

import logging
from collections.abc import Hashable

import pytest

from dask_reservoir import JobError
from dask_reservoir._core.ledger.failures import FailureBook, misreported
from dask_reservoir._core.records import FailureRecord


def fail(book: FailureBook, uid: Hashable, message: str = "bad", exc: BaseException | None = None) -> None:
    book.failed(uid, "ValueError", message, "traceback text", exc)


def counts(book: FailureBook, uid: Hashable) -> tuple[int, int]:
    record = {r.uid: r for r in book.records()}[uid]
    return record.count, record.consecutive


# ---------------------------------------------------------------------- records


def test_a_new_book_is_empty() -> None:
    book = FailureBook()
    assert book.records() == () and list(book.quarantined) == [] and book.quarantine_records() == {}
    assert book.unloadable() == frozenset()
    assert book.pop_error() is None and not book.has_errors


def test_a_failure_record_keeps_type_message_traceback_and_counts() -> None:
    book = FailureBook()
    book.failed("u", "KeyError", "'k'", "tb", KeyError("k"))
    assert book.records() == (FailureRecord("u", "KeyError", "'k'", "tb", 1, 1),)
    book.failed("u", "OSError", "disk", "", None)
    assert book.records() == (FailureRecord("u", "OSError", "disk", "", 2, 2),)


def test_records_keep_one_per_uid_in_order_of_first_failure() -> None:
    book = FailureBook()
    for uid in ("b", "a", "b"):
        fail(book, uid)
    assert [(r.uid, r.count) for r in book.records()] == [("b", 2), ("a", 1)]


def test_failures_of_one_uid_do_not_count_for_another() -> None:
    book = FailureBook(max_failures_per_uid=2)
    fail(book, "a")
    fail(book, "b")
    assert counts(book, "a") == (1, 1) and counts(book, "b") == (1, 1)
    assert list(book.quarantined) == []


def test_first_failure_is_a_warning_later_ones_debug(caplog: pytest.LogCaptureFixture) -> None:
    book = FailureBook()
    with caplog.at_level(logging.DEBUG, logger="dask_reservoir"):
        fail(book, "u", "one")
        fail(book, "u", "two")
        fail(book, "v", "three")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "dask_reservoir: job for UID 'u' failed (1 times): ValueError: one"),
        (logging.DEBUG, "dask_reservoir: job for UID 'u' failed (2 times): ValueError: two"),
        (logging.WARNING, "dask_reservoir: job for UID 'v' failed (1 times): ValueError: three"),
    ]


def test_misreported_names_both_uids() -> None:
    assert misreported(1, "a") == (
        "the worker reported UID 1 for the source row of UID 'a' "
        "(row order of the source changed between reads?); the result was dropped"
    )


# ---------------------------------------------------------------------- errors


def test_errors_are_kept_only_when_collected() -> None:
    book = FailureBook()
    fail(book, "u")
    assert book.pop_error() is None and not book.has_errors


def test_collected_errors_come_out_oldest_first_with_their_cause() -> None:
    book = FailureBook(collect_errors=True)
    first, second = ValueError("one"), KeyError("two")
    book.failed("a", "ValueError", "one", "", first)
    book.failed("b", "KeyError", "'two'", "", second)
    assert book.has_errors
    one, two = book.pop_error(), book.pop_error()
    assert isinstance(one, JobError) and isinstance(two, JobError)
    assert (one.uid, str(one), one.__cause__) == (
        "a",
        "function_to_run failed for UID 'a': ValueError: one",
        first,
    )
    assert (two.uid, two.__cause__) == ("b", second)
    assert book.pop_error() is None and not book.has_errors


def test_a_failure_without_an_exception_has_no_cause() -> None:
    book = FailureBook(collect_errors=True)
    fail(book, "u", exc=None)
    error = book.pop_error()
    assert error is not None and error.__cause__ is None


# ---------------------------------------------------------------------- counts in a row, quarantine


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_quarantine_comes_at_the_limit_of_failures_in_a_row(limit: int) -> None:
    book = FailureBook(max_failures_per_uid=limit)
    for _ in range(limit - 1):
        fail(book, "u")
        assert "u" not in book.quarantined
    fail(book, "u", "last")
    assert list(book.quarantined) == ["u"]
    assert book.quarantine_records()["u"].message == "last"


def test_no_limit_never_quarantines() -> None:
    book = FailureBook(max_failures_per_uid=None)
    for _ in range(50):
        fail(book, "u")
    assert list(book.quarantined) == [] and counts(book, "u") == (50, 50)


def test_a_load_resets_the_count_in_a_row_not_the_total() -> None:
    book = FailureBook(max_failures_per_uid=2)
    fail(book, "u")
    book.loaded("u")
    assert counts(book, "u") == (1, 0)
    fail(book, "u")
    assert "u" not in book.quarantined and counts(book, "u") == (2, 1)
    fail(book, "u")
    assert "u" in book.quarantined and counts(book, "u") == (3, 2)


def test_a_load_of_another_uid_resets_nothing() -> None:
    book = FailureBook()
    fail(book, "u")
    book.loaded("v")
    assert counts(book, "u") == (1, 1) and [r.uid for r in book.records()] == ["u"]


def test_quarantine_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    book = FailureBook(max_failures_per_uid=1)
    with caplog.at_level(logging.WARNING, logger="dask_reservoir"):
        fail(book, "u", "one")
        fail(book, "u", "two")
    quarantines = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert quarantines == [
        "dask_reservoir: UID 'u' quarantined after 1 failures in a row; last: ValueError: one"
    ]
    assert book.quarantine_records()["u"].message == "two"  # the latest failure is shown


# ---------------------------------------------------------------------- loads, empties, rejections


def test_loaded_chunk_resets_counts_in_a_row_unless_rejected() -> None:
    book = FailureBook(max_failures_per_uid=5)
    fail(book, "a")
    fail(book, "b")
    book.rejected("c", OSError("x"))
    book.loaded_chunk(["a", "c"])
    assert counts(book, "a") == (1, 0) and counts(book, "b") == (1, 1) and counts(book, "c") == (1, 1)


def test_a_rejected_uid_is_a_failure() -> None:
    book = FailureBook(max_failures_per_uid=1, collect_errors=True)
    book.loaded("a")
    cause = OSError("disk full")
    book.rejected("a", cause)
    assert book.records() == (FailureRecord("a", "OSError", "disk full", "", 1, 1),)
    assert list(book.quarantined) == ["a"]
    error = book.pop_error()
    assert error is not None and error.__cause__ is cause


def test_a_load_after_a_rejection_does_not_reset_the_count_in_a_row() -> None:
    book = FailureBook(max_failures_per_uid=3)
    for attempt in range(3):
        book.loaded("a")
        book.rejected("a", ValueError("cannot be stored"))
        assert counts(book, "a") == (attempt + 1, attempt + 1)
    assert "a" in book.quarantined


# ---------------------------------------------------------------------- release and restore


def test_release_all_and_by_name() -> None:
    book = FailureBook(max_failures_per_uid=1)
    for uid in ("u", "v", "w"):
        fail(book, uid)
    assert book.release(["w", "missing", "w"]) == ["w"]
    assert list(book.quarantined) == ["u", "v"]
    assert book.release() == ["u", "v"] and list(book.quarantined) == []
    assert book.release() == [] and book.release(["u"]) == []


def test_release_starts_the_count_in_a_row_again() -> None:
    book = FailureBook(max_failures_per_uid=2)
    fail(book, "u")
    fail(book, "u")
    book.release()
    assert counts(book, "u") == (2, 0)
    fail(book, "u")
    assert "u" not in book.quarantined and counts(book, "u") == (3, 1)
    fail(book, "u")
    assert "u" in book.quarantined


def test_release_lifts_a_rejection() -> None:
    book = FailureBook(max_failures_per_uid=1)
    book.rejected("a", OSError("x"))
    book.release()
    fail(book, "a")  # quarantined again...
    book.release()
    book.loaded("a")  # ... and a plain load now resets the count
    fail(book, "a")
    assert counts(book, "a") == (3, 1)


def test_release_is_logged_only_when_something_is_released(caplog: pytest.LogCaptureFixture) -> None:
    book = FailureBook(max_failures_per_uid=1)
    fail(book, "u")
    fail(book, "v")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dask_reservoir"):
        book.release(["x"])
        book.release()
    assert [r.getMessage() for r in caplog.records] == ["dask_reservoir: released 2 UIDs from quarantine"]


def test_restore_quarantines_the_known_uids_of_a_checkpoint() -> None:
    book = FailureBook()
    book.restore(["a", "zz", "b"], known={"a", "b", "c"})
    assert list(book.quarantined) == ["a", "b"] and book.records() == ()
    assert book.quarantine_records()["a"] == FailureRecord(
        "a", "Quarantined", "quarantined when the checkpoint was saved", "", 0, 0
    )
    assert book.unloadable() == frozenset({"a", "b"})


def test_a_restored_quarantine_shows_a_later_failure_and_is_released_like_any() -> None:
    book = FailureBook(max_failures_per_uid=3)
    book.restore(["a"], known={"a"})
    fail(book, "a", "later")
    assert book.quarantine_records()["a"].message == "later"
    assert book.release() == ["a"] and counts(book, "a") == (1, 0)


def test_the_quarantined_view_is_live() -> None:
    book = FailureBook(max_failures_per_uid=1)
    view = book.quarantined
    fail(book, "u")
    assert "u" in view and len(view) == 1
    book.release()
    assert "u" not in view and len(view) == 0

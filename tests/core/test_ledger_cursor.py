"""The source cursor, without a cluster: pass order, wrap-around, requeued rows, skips, restore."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pytest

from dask_reservoir import RandomSampler, SequentialSampler
from dask_reservoir._core.checkpoint import order_digest
from dask_reservoir._core.ledger.cursor import SourceCursor, uids_at
from dask_reservoir._core.order import pass_order
from dask_reservoir._core.uid_index import UidIndex


def step(
    cursor: SourceCursor, limit: int, out: Sequence[Hashable] = (), barred: Sequence[Hashable] = ()
) -> tuple[list[int], list[Hashable]]:
    return cursor.next_positions(limit, out=set(out), barred=set(barred))


class Reversed(SequentialSampler):
    def indices(self, n: int, *, epoch: int) -> list[int]:
        return list(range(n))[::-1]


# ---------------------------------------------------------------------- uids_at


def test_uids_at_reads_a_list_in_the_order_given() -> None:
    assert uids_at(["a", "b", "c"], [2, 0, 2]) == ["c", "a", "c"]
    assert uids_at(["a"], []) == []


def test_uids_at_takes_from_a_uid_index_at_once() -> None:
    index = UidIndex(np.array([10, 20, 30]))
    assert uids_at(index, [2, 1]) == [30, 20]

    class Taker(list[str]):
        def take(self, positions: Sequence[int]) -> list[str]:
            return ["taken"] * len(positions)

    assert uids_at(Taker(["a", "b"]), [0, 1]) == ["taken", "taken"]


# ---------------------------------------------------------------------- the pass order


def test_a_new_cursor_has_started_no_pass() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    assert cursor.position() == (0, 0) and cursor.passes_done == 0
    assert cursor.retry_uids() == [] and cursor.digest() is None


def test_rows_come_in_the_samplers_order_up_to_the_limit() -> None:
    cursor = SourceCursor(list("abcd"), Reversed())
    assert step(cursor, 1) == ([3], [])
    assert cursor.position() == (1, 1)
    assert step(cursor, 2) == ([2, 1], [])
    assert cursor.position() == (1, 3)


def test_a_limit_of_zero_finds_nothing_and_moves_nothing() -> None:
    cursor = SourceCursor(list("ab"), SequentialSampler())
    cursor.requeue([1])
    assert step(cursor, 0) == ([], [])
    assert cursor.position() == (0, 0) and cursor.retry_uids() == ["b"]


def test_the_last_row_of_a_pass_completes_it_and_the_next_call_wraps() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    assert step(cursor, 2) == ([0, 1], [])
    assert cursor.passes_done == 0
    assert step(cursor, 1) == ([2], [])
    assert cursor.position() == (1, 3) and cursor.passes_done == 1  # every row submitted
    assert step(cursor, 1) == ([0], [])
    assert cursor.position() == (2, 1) and cursor.passes_done == 1


def test_a_call_wraps_into_the_next_pass_within_its_limit() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    step(cursor, 2)
    assert step(cursor, 3) == ([2, 0, 1], [])
    assert cursor.position() == (2, 2) and cursor.passes_done == 1


def test_a_call_looks_at_one_sources_worth_of_rows_at_most() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    assert step(cursor, 5) == ([0, 1, 2], [])  # a limit above the source: each row once
    assert cursor.position() == (1, 3)
    assert step(cursor, 3, out="abc") == ([], [])  # all out: one pass looked at, not more
    assert cursor.position() == (2, 3)
    step(cursor, 1, out="abc")
    assert cursor.position() == (3, 3)  # three rows out of three, again


def test_a_call_looking_past_out_rows_stops_after_n_rows() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler())
    step(cursor, 2)  # a, b
    assert step(cursor, 4, out="ab") == ([2, 3], [])  # c, d; then a, b of pass 2 are out
    assert cursor.position() == (2, 2)


def test_each_pass_asks_the_sampler_for_its_epoch() -> None:
    sampler = RandomSampler(seed=3)
    cursor = SourceCursor(list(range(20)), sampler)
    first, _ = step(cursor, 20)
    second, _ = step(cursor, 20)
    assert first == pass_order(sampler, 20, 0).tolist()
    assert second == pass_order(sampler, 20, 1).tolist()
    assert first != second


def test_a_rank_submits_its_shard_of_each_pass() -> None:
    sampler = RandomSampler(seed=1)
    cursor = SourceCursor(list(range(10)), sampler, rank=1, world_size=3)
    shard = pass_order(sampler, 10, 0, 1, 3).tolist()
    assert 0 < len(shard) < 10
    assert step(cursor, len(shard)) == (shard, [])
    assert cursor.position() == (1, len(shard)) and cursor.passes_done == 1
    second = pass_order(sampler, 10, 1, 1, 3).tolist()
    assert step(cursor, len(second)) == (second, [])
    assert cursor.position() == (2, len(second)) and cursor.passes_done == 2


def test_an_empty_pass_submits_nothing() -> None:
    class Empty(SequentialSampler):
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return []

    cursor = SourceCursor(list("ab"), Empty())
    assert step(cursor, 2) == ([], [])
    assert cursor.position() == (1, 0)


def test_a_bad_sampler_is_reported() -> None:
    class Bad(SequentialSampler):
        def indices(self, n: int, *, epoch: int) -> list[int]:
            return [n]

    with pytest.raises(ValueError, match=r"must yield indices in range\(2\)"):
        step(SourceCursor(list("ab"), Bad()), 1)


# ---------------------------------------------------------------------- out and barred rows


def test_rows_out_are_skipped_when_not_deterministic() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler())
    assert step(cursor, 2, out="ab") == ([2, 3], [])
    assert cursor.position() == (1, 4)


def test_rows_out_are_waited_for_when_deterministic() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler(), deterministic=True)
    assert step(cursor, 2) == ([0, 1], [])
    assert step(cursor, 4, out="ab") == ([2, 3], [])  # then "a" of pass 2: wait for it
    assert cursor.position() == (2, 0)
    assert step(cursor, 2, out="a") == ([], [])  # the cursor stays on "a"
    assert cursor.position() == (2, 0)
    assert step(cursor, 2) == ([0, 1], [])
    assert cursor.position() == (2, 2)


def test_a_deterministic_wait_keeps_what_was_found_before() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler(), deterministic=True)
    assert step(cursor, 3, out="b") == ([0], [])
    assert cursor.position() == (1, 1)


def test_barred_rows_are_passed_over_in_both_modes() -> None:
    for deterministic in (False, True):
        cursor = SourceCursor(list("abc"), SequentialSampler(), deterministic=deterministic)
        assert step(cursor, 2, barred="a") == ([1, 2], [])
        assert cursor.position() == (1, 3)


def test_a_row_found_in_one_call_is_not_found_twice_in_it() -> None:
    cursor = SourceCursor(list("ab"), SequentialSampler())
    step(cursor, 1)  # a
    cursor.requeue([1])
    assert step(cursor, 3) == ([1, 0], [])  # b from the retry queue; b of the pass is now out


def test_duplicate_uids_in_the_source_are_found_once_a_call() -> None:
    cursor = SourceCursor(["a", "b", "a"], SequentialSampler())
    assert step(cursor, 3) == ([0, 1], [])
    assert cursor.position() == (1, 3)


# ---------------------------------------------------------------------- requeued rows


def test_requeued_rows_go_first_in_their_order() -> None:
    cursor = SourceCursor(list("abcde"), SequentialSampler())
    step(cursor, 1)
    cursor.requeue([3])
    cursor.requeue([2, 4])
    assert cursor.retry_uids() == ["d", "c", "e"]
    assert step(cursor, 2) == ([3, 2], [])
    assert cursor.retry_uids() == ["e"] and cursor.position() == (1, 1)
    assert step(cursor, 3) == ([4, 1, 2], [])  # then the pass goes on, c included


def test_requeued_rows_out_or_barred_are_dropped_when_not_deterministic() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler())
    cursor.requeue([0, 1, 2])
    assert step(cursor, 1, out="a", barred="b") == ([2], [])
    assert cursor.retry_uids() == []


def test_a_requeued_row_out_is_waited_for_when_deterministic() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler(), deterministic=True)
    cursor.requeue([2, 0, 1])
    assert step(cursor, 3, out="a") == ([2], [])  # waits for "a": keeps the order, no pass
    assert cursor.retry_uids() == ["a", "b"] and cursor.position() == (0, 0)
    assert step(cursor, 3) == ([0, 1], [])  # then "a" of the pass: found by this call, waited for
    assert cursor.position() == (1, 0)


def test_a_requeued_barred_row_is_dropped_when_deterministic() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler(), deterministic=True)
    cursor.requeue([0, 1])
    assert step(cursor, 1, out="a", barred="a") == ([1], [])
    assert cursor.retry_uids() == []


def test_a_row_requeued_twice_goes_once() -> None:
    cursor = SourceCursor(list("ab"), SequentialSampler())
    cursor.requeue([1, 1])
    assert step(cursor, 3) == ([1, 0], [])
    det = SourceCursor(list("ab"), SequentialSampler(), deterministic=True)
    det.requeue([1, 1])
    assert step(det, 3) == ([1], [])  # the second waits for the first
    assert det.retry_uids() == ["b"]


def test_hold_back_puts_rows_in_front_in_their_order() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler())
    cursor.requeue([3])
    found, _ = step(cursor, 2)
    assert found == [3, 0]
    cursor.hold_back(found)
    assert cursor.retry_uids() == ["d", "a"]
    cursor.requeue([2])
    cursor.hold_back([1])
    assert cursor.retry_uids() == ["b", "d", "a", "c"]


def test_requeue_uids_finds_the_last_row_of_each_uid() -> None:
    cursor = SourceCursor(["a", "b", "a", "c"], SequentialSampler())
    cursor.requeue_uids(["c", "a", "missing"])
    assert step(cursor, 2) == ([3, 2], [])
    cursor.requeue_uids([])
    assert cursor.retry_uids() == []


# ---------------------------------------------------------------------- the first pass's skips


def test_skipped_uids_are_passed_over_in_the_first_pass_only() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler(), skip_first_pass=["b"])
    assert step(cursor, 1) == ([0], [])
    assert step(cursor, 1) == ([2], [1])  # b (position 1) does not count towards the limit
    assert cursor.position() == (1, 3)
    assert step(cursor, 3) == ([0, 1, 2], [])  # the second pass refreshes it


def test_a_skipped_uid_out_or_barred_is_not_reported() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler(), skip_first_pass=["a", "b"])
    assert step(cursor, 3, out="a", barred="b") == ([2], [])


def test_skips_apply_to_the_first_pass_of_a_restored_cursor_too() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler(), skip_first_pass=["c"])
    cursor.restore(source_pass=1, source_cursor=1, first=[])
    assert step(cursor, 2) == ([1, 0], [2])  # c, at position 2
    restored = SourceCursor(list("abc"), SequentialSampler(), skip_first_pass=["a"])
    restored.restore(source_pass=2, source_cursor=0, first=[])
    assert step(restored, 1) == ([0], [])  # pass 2: nothing skipped


def test_requeued_rows_are_never_skipped() -> None:
    cursor = SourceCursor(list("ab"), SequentialSampler(), skip_first_pass=["b"])
    cursor.requeue([1])
    assert step(cursor, 1) == ([1], [])


# ---------------------------------------------------------------------- checkpoint and restore


def test_digest_is_of_the_current_pass_and_follows_it() -> None:
    sampler = RandomSampler(seed=7)
    cursor = SourceCursor(list(range(6)), sampler)
    step(cursor, 1)
    first = cursor.digest()
    assert first == order_digest(pass_order(sampler, 6, 0))
    assert cursor.digest() == first  # the same pass: the same digest
    step(cursor, 6)  # into pass 2
    assert cursor.position()[0] == 2
    assert cursor.digest() == order_digest(pass_order(sampler, 6, 1)) != first


def test_restore_goes_on_where_the_checkpoint_stopped() -> None:
    sampler = RandomSampler(seed=2)
    cursor = SourceCursor(list(range(8)), sampler)
    cursor.restore(source_pass=2, source_cursor=5, first=[7, 1])
    assert cursor.position() == (2, 5) and cursor.retry_uids() == [7, 1]
    assert cursor.digest() == order_digest(pass_order(sampler, 8, 1))
    plain = SourceCursor(list(range(8)), SequentialSampler())
    plain.restore(source_pass=2, source_cursor=5, first=[7, 1])
    assert step(plain, 4) == ([7, 1, 5, 6], [])  # 7 of the pass: found by this call already
    assert plain.position() == (2, 7) and plain.passes_done == 1
    assert step(plain, 1) == ([7], [])
    assert plain.position() == (2, 8) and plain.passes_done == 2


def test_restore_goes_on_in_the_order_it_is_given() -> None:
    """A resumed reservoir checked the interrupted pass's order already: the cursor does not draw it again."""
    sampler = RandomSampler(seed=2)
    order = pass_order(sampler, 8, 1)
    given = SourceCursor(list(range(8)), sampler)
    given.restore(source_pass=2, source_cursor=5, first=[], order=order[::-1].copy())
    assert step(given, 3) == (order[::-1][5:].tolist(), [])
    drawn = SourceCursor(list(range(8)), sampler)
    drawn.restore(source_pass=2, source_cursor=5, first=[])
    assert step(drawn, 3) == (order[5:].tolist(), [])


def test_restore_clamps_a_cursor_beyond_the_pass() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    cursor.restore(source_pass=1, source_cursor=10, first=[])
    assert cursor.position() == (1, 3) and cursor.passes_done == 1
    assert step(cursor, 1) == ([0], [])
    assert cursor.position() == (2, 1)


def test_restore_at_pass_zero_only_queues_the_first_rows() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    cursor.restore(source_pass=0, source_cursor=2, first=[2])
    assert cursor.position() == (0, 0) and cursor.retry_uids() == ["c"]
    assert step(cursor, 3) == ([2, 0, 1], [])


def test_restore_queues_after_rows_requeued_before() -> None:
    cursor = SourceCursor(list("abc"), SequentialSampler())
    cursor.requeue([1])
    cursor.restore(source_pass=0, source_cursor=0, first=[2])
    assert cursor.retry_uids() == ["b", "c"]


def test_max_passes_stops_after_the_last_pass_and_defers_rows_out() -> None:
    cursor = SourceCursor(list("abcd"), SequentialSampler(), max_passes=2)
    assert cursor.next_positions(4, out=set(), barred=set()) == ([0, 1, 2, 3], [])
    assert not cursor.exhausted  # the second pass is to go
    # pass 2: "b" and "c" are still out: deferred, not skipped
    assert cursor.next_positions(4, out={"b", "c"}, barred=set()) == ([0, 3], [])
    assert not cursor.exhausted and cursor.retry_uids() == ["b", "c"]
    assert cursor.next_positions(4, out={"c"}, barred=set()) == ([1], [])
    assert cursor.next_positions(4, out=set(), barred={"c"}) == ([], [])  # quarantined: dropped
    assert cursor.exhausted and cursor.passes_done == 2
    assert cursor.next_positions(4, out=set(), barred=set()) == ([], [])  # no third pass


def test_without_max_passes_rows_out_are_skipped_and_passes_go_on() -> None:
    cursor = SourceCursor(list("ab"), SequentialSampler())
    assert cursor.next_positions(2, out=set(), barred=set()) == ([0, 1], [])
    assert cursor.next_positions(2, out={"a"}, barred=set()) == ([1], [])  # "a" skipped, not deferred
    assert not cursor.exhausted and cursor.retry_uids() == []

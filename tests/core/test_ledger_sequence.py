"""Submission numbers and the deterministic release order, without a cluster."""

from __future__ import annotations

from collections.abc import Hashable

from dask_reservoir._core.ledger.sequence import Sequencer
from dask_reservoir._core.records import Completed


def entry(uid: Hashable) -> Completed:
    return Completed(uid, 0, (), 0.0, 0.0)


def uids(items: list[Completed]) -> list[Hashable]:
    return [c.uid for c in items]


def test_numbers_follow_submission_and_a_resubmission_renumbers() -> None:
    seq = Sequencer()
    assert seq.key("a") == 0  # nothing numbered: the next number
    seq.number(["a", "b"], keep={"a", "b"})
    seq.number(["c"], keep={"a", "b", "c"})
    assert [seq.key(u) for u in "abc"] == [0, 1, 2] and seq.key("zz") == 3
    seq.number(["a"], keep={"a", "b", "c"})
    assert seq.key("a") == 3 and seq.key("zz") == 4
    assert sorted("cab", key=seq.key) == ["b", "c", "a"]


def test_numbers_of_rows_long_gone_are_forgotten_beyond_four_times_those_out() -> None:
    seq = Sequencer()
    seq.number([f"u{i}" for i in range(64)], keep=set())  # 64 = 4 x (0 + 16): all kept
    assert seq.key("u0") == 0 and seq.key("u63") == 63
    seq.number(["u64"], keep=set())  # 65 > 64: only those out stay, none here
    assert [seq.key(u) for u in ("u0", "u63", "u64")] == [65, 65, 65]


def test_the_forgetting_threshold_grows_with_the_rows_out() -> None:
    seq = Sequencer()
    out = {f"u{i}" for i in range(2)}
    seq.number([f"u{i}" for i in range(72)], keep=out)  # 72 = 4 x (2 + 16): all kept
    assert seq.key("u71") == 71
    seq.number(["u72"], keep=out | {"u72", "never"})  # 73 > 4 x (4 + 16)? no: all kept
    assert seq.key("u71") == 71
    seq.number(["u73"], keep=out)  # 74 > 72: only those out stay
    assert seq.key("u1") == 1 and seq.key("u0") == 0
    assert seq.key("u71") == 74 and seq.key("u73") == 74


def test_not_deterministic_entries_go_at_once() -> None:
    seq = Sequencer()
    assert not seq.deterministic
    seq.number(["a", "b"], keep={"a", "b"})
    b = entry("b")
    assert seq.arrive("b", b) == [b]
    assert seq.arrive("a", None) == []
    assert seq.arrive("never", entry("never"))[0].uid == "never"
    assert (seq.held, seq.held_entries) == (0, 0)


def test_deterministic_entries_go_in_submission_order() -> None:
    seq = Sequencer(deterministic=True)
    assert seq.deterministic
    seq.number(["a", "b", "c", "d"], keep=set("abcd"))
    assert seq.arrive("c", entry("c")) == []
    assert seq.arrive("b", None) == []
    assert (seq.held, seq.held_entries) == (2, 1)  # b is held with no entry
    assert uids(seq.arrive("a", entry("a"))) == ["a", "c"]  # b gave none
    assert (seq.held, seq.held_entries) == (0, 0)
    assert uids(seq.arrive("d", entry("d"))) == ["d"]


def test_deterministic_release_stops_at_the_first_gap() -> None:
    seq = Sequencer(deterministic=True)
    seq.number(list("abcde"), keep=set("abcde"))
    seq.arrive("b", entry("b"))
    seq.arrive("d", entry("d"))
    seq.arrive("e", entry("e"))
    assert uids(seq.arrive("a", entry("a"))) == ["a", "b"]
    assert (seq.held, seq.held_entries) == (2, 2)
    assert uids(seq.arrive("c", entry("c"))) == ["c", "d", "e"]


def test_a_row_not_numbered_or_already_released_goes_at_once() -> None:
    seq = Sequencer(deterministic=True)
    assert uids(seq.arrive("x", entry("x"))) == ["x"] and seq.arrive("x", None) == []
    seq.number(["a", "b"], keep={"a", "b"})
    seq.arrive("a", entry("a"))
    assert uids(seq.arrive("a", entry("a"))) == ["a"]  # number 0 is released already
    assert seq.held == 0


def test_a_resubmitted_row_is_waited_for_under_its_new_number() -> None:
    seq = Sequencer(deterministic=True)
    seq.number(["a"], keep={"a"})
    assert seq.arrive("a", None) == []  # failed: released with no entry
    seq.number(["b", "a"], keep={"a", "b"})
    assert seq.arrive("a", entry("a")) == []  # number 2 waits for b (1)
    assert uids(seq.arrive("b", entry("b"))) == ["b", "a"]


def test_clear_drops_what_is_held() -> None:
    seq = Sequencer(deterministic=True)
    seq.number(["a", "b"], keep={"a", "b"})
    seq.arrive("b", entry("b"))
    seq.clear()
    assert (seq.held, seq.held_entries) == (0, 0)

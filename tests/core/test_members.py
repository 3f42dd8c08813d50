"""Members: the store's entries by source position, oldest first, in arrays (replacement, eviction, FIFO)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.store.members import Members
from dask_reservoir._core.store.pins import SlotHolders


def setup(capacity: int, extra: int = 2) -> tuple[Members, SlotHolders]:
    holders = SlotHolders(capacity + extra)
    return Members(capacity, holders), holders


def add(members: Members, holders: SlotHolders, *pairs: tuple[object, int]) -> list[int]:
    """Store entries ``(uid, position)`` at once, as the store does; the positions evicted."""
    positions = np.array([p for _, p in pairs], np.int64)
    uids = [u for u, _ in pairs]
    members.check_position(positions, uids)
    replaced, evicted, gone = members.make_room(positions)
    holders.let_go(np.concatenate([replaced, gone]))
    slots = holders.claim(len(pairs))
    holders.hold(
        slots, positions=positions, uids=uids, loaded_at=np.zeros(len(pairs)), rows=[({"x": 1},)] * len(pairs)
    )
    members.insert(positions, slots)
    return evicted.tolist()


def test_the_oldest_is_evicted_and_a_replacement_becomes_the_newest() -> None:
    members, holders = setup(3)
    assert [add(members, holders, (uid, uid)) for uid in range(3)] == [[], [], []]
    assert add(members, holders, (0, 0)) == []  # replaces 0: now the newest
    assert members.uids() == [1, 2, 0] and members.newest_uid() == 0
    assert members.oldest_first()[0].tolist() == [1, 2, 0]
    assert add(members, holders, (3, 3)) == [1]
    assert (members.ingested, members.evicted, members.replaced) == (5, 1, 1)
    assert members.in_source_order()[0].tolist() == [0, 2, 3]
    assert holders.available() == 2  # five slots: three held, the two let go are free
    assert "size=3/3 ingested=5 evicted=1 replaced=1" in repr(members)


def test_a_block_replaces_its_positions_then_evicts_the_oldest_others() -> None:
    members, holders = setup(4, extra=4)
    add(members, holders, ("a", 0), ("b", 1), ("c", 2), ("d", 3))
    assert add(members, holders, ("e", 4), ("b", 1), ("f", 5)) == [0, 2]  # b replaced; a, c evicted
    assert members.uids() == ["d", "e", "b", "f"]
    assert (members.ingested, members.evicted, members.replaced) == (7, 2, 1)
    assert members.in_source_order()[0].tolist() == [1, 3, 4, 5]


def test_a_removed_entry_lets_go_of_its_slot() -> None:
    members, holders = setup(1)
    add(members, holders, ("a", 0))
    assert members.slot_of(0) == 0 and members.position_of("a") == 0
    pin = holders.pin()
    add(members, holders, ("b", 1))  # evicts "a", pinned: retired
    assert members.slot_of(0) == -1 and members.position_of("a") is None and holders.retired == 1
    pin.release()
    holders.apply_releases()
    assert holders.retired == 0


def test_others_counts_the_entries_that_stay_beside_a_put() -> None:
    members, holders = setup(3)
    assert members.others(0, "a") == 0 and members.newest_uid() is None
    add(members, holders, ("a", 0))
    add(members, holders, ("b", 1))
    assert members.others(0, "a") == 1 and members.others(2, "c") == 2
    assert members.others(0, "b") == 2  # not the UID at position 0: nothing of its own is replaced
    assert "a" in members and "c" not in members and [[1]] not in members and len(members) == 2


def test_positions_are_unique_across_uids() -> None:
    members, holders = setup(3)
    add(members, holders, ("a", 4))
    add(members, holders, ("a", 4))  # the same UID may take its position again
    with pytest.raises(
        ValueError, match=r"^entry positions must be unique: position 4 holds UID 'a', got UID 'b'$"
    ):
        add(members, holders, ("b", 4))
    assert members.uids() == ["a"]


def test_pinned_held_counts_the_members_an_open_snapshot_reads() -> None:
    members, holders = setup(4, extra=4)
    add(members, holders, ("a", 0), ("b", 1))
    assert members.pinned_held() == 0  # no snapshot open
    pin = holders.pin()
    assert members.pinned_held() == 2
    add(members, holders, ("c", 2), ("a", 0))  # a put again: the new one is not read
    assert members.pinned_held() == 1
    newer = holders.pin()
    assert members.pinned_held() == 3
    newer.release()
    holders.apply_releases()
    assert members.pinned_held() == 1
    pin.release()
    holders.apply_releases()
    assert members.pinned_held() == 0


def test_clear_removes_every_entry_and_keeps_the_counters() -> None:
    members, holders = setup(2)
    for uid in range(3):
        add(members, holders, (uid, uid))
    holders.let_go(members.clear())
    assert len(members) == 0 and members.uids() == [] and members.in_source_order()[0].tolist() == []
    assert holders.available() == 4 and members.newest_uid() is None
    assert (members.ingested, members.evicted) == (3, 1)
    add(members, holders, ("x", 1))
    assert members.uids() == ["x"]


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 6),
    puts=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=6, unique=True), max_size=40),
)
def test_blocks_match_a_model_and_the_fifo_stays_compact(capacity: int, puts: list[list[int]]) -> None:
    """Any puts (blocks of unique positions, at most capacity): members, order and counters as a model."""
    members, holders = setup(capacity, extra=capacity)
    model: dict[int, None] = {}  # positions, oldest first
    replaced = evicted = 0
    for drawn in puts:
        block = drawn[:capacity]
        gone = add(members, holders, *((f"u{p}", p) for p in block))
        for p in block:
            if p in model:
                del model[p]
                replaced += 1
        expected_gone = []
        while len(model) + len(block) > capacity:
            oldest = next(iter(model))
            del model[oldest]
            expected_gone.append(oldest)
        evicted += len(expected_gone)
        model.update(dict.fromkeys(block))
        assert gone == expected_gone
        assert members.oldest_first()[0].tolist() == list(model)
        assert members.uids() == [f"u{p}" for p in model]
        assert members.in_source_order()[0].tolist() == sorted(model)
        assert (members.replaced, members.evicted, len(members)) == (replaced, evicted, len(model))
        assert members._tail - members._head <= 2 * (capacity + 6) + 64  # dead items are compacted away


@pytest.mark.parametrize("capacity", [3, 8])
def test_a_long_run_of_puts_matches_the_model(capacity: int) -> None:
    """Thousands of puts, most replacing: the FIFO is compacted many times, dead runs span windows."""
    rng = np.random.default_rng(capacity)
    members, holders = setup(capacity, extra=capacity)
    model: dict[int, None] = {}
    for step in range(3000):
        block = rng.choice(
            30 if step % 3 else 2 * capacity, size=int(rng.integers(1, capacity + 1)), replace=False
        )
        gone = add(members, holders, *((f"u{p}", int(p)) for p in block))
        for p in block.tolist():
            model.pop(p, None)
        expected_gone = []
        while len(model) + len(block) > capacity:
            oldest = next(iter(model))
            del model[oldest]
            expected_gone.append(oldest)
        model.update(dict.fromkeys(block.tolist()))
        assert gone == expected_gone
        assert members.oldest_first()[0].tolist() == list(model) and len(members) == len(model)
        assert members._fifo.shape[1] <= max(64, 4 * capacity)  # dead items compacted away, not kept
    assert members.newest_uid() == f"u{next(reversed(model))}"
    assert members.in_source_order()[0].tolist() == sorted(model)


def test_an_eviction_skips_a_dead_run_longer_than_a_window() -> None:
    members, holders = setup(100, extra=100)
    add(members, holders, *((f"u{p}", p) for p in range(100)))
    for p in range(90):  # put again: 90 dead items at the head of the FIFO
        add(members, holders, (f"u{p}", p))
    assert add(members, holders, ("new", 500)) == [90]  # the oldest live one, past the dead run
    assert add(members, holders, *((f"v{p}", 600 + p) for p in range(12))) == [*range(91, 100), 0, 1, 2]
    assert members.uids()[:3] == ["u3", "u4", "u5"] and len(members) == 100


def test_a_new_members_holds_nothing_at_any_position() -> None:
    members, _ = setup(2)
    assert len(members) == 0 and members.uids() == [] and members.newest_uid() is None
    assert members.position_of("a") is None and "a" not in members
    assert [members.slot_of(p) for p in (-1, 0, 5, 15, 16, 10**6)] == [-1] * 6
    assert members.slots_of(np.array([-1, 0, 5, 15, 16, 10**6])).tolist() == [-1] * 6


def test_slot_of_and_slots_of_name_the_slot_at_every_position_as_positions_grow() -> None:
    members, holders = setup(4, extra=4)
    for p in (0, 15, 16, 40, 300):  # ever further positions: the record of positions grows
        add(members, holders, (f"u{p}", p))
    positions, slots = members.oldest_first()
    assert positions.tolist() == [15, 16, 40, 300]  # 0 evicted
    assert holders.uids_at(slots) == ["u15", "u16", "u40", "u300"]
    expected = dict(zip(positions.tolist(), slots.tolist(), strict=True))
    everywhere = list(range(-2, 700))
    assert members.slots_of(np.array(everywhere)).tolist() == [expected.get(p, -1) for p in everywhere]
    assert [members.slot_of(p) for p in everywhere] == [expected.get(p, -1) for p in everywhere]
    add(members, holders, ("u0", 0))  # position 0 stored again (evicts 15): found like any other
    (slot,) = members.oldest_first()[1][-1:].tolist()
    assert members.slot_of(0) == slot and members.slots_of(np.array([0, 15])).tolist() == [slot, -1]
    assert members.position_of("u0") == 0 and members.position_of("u15") is None


def test_make_room_removes_what_the_put_replaces_and_evicts_before_the_insert() -> None:
    members, holders = setup(2)
    add(members, holders, ("a", 0), ("b", 1))
    assert members.position_of("a") == 0 and members.position_of("b") == 1
    replaced, evicted, evicted_slots = members.make_room(np.array([1, 2]))  # b replaced, a evicted
    assert holders.uids_at(replaced) == ["b"] and evicted.tolist() == [0]
    assert holders.uids_at(evicted_slots) == ["a"]
    assert len(members) == 0 and members.position_of("a") is None and "b" not in members
    assert members.slot_of(0) == -1 and members.slot_of(1) == -1 and members.newest_uid() is None


def test_making_room_for_no_positions_changes_nothing() -> None:
    members, holders = setup(2)
    add(members, holders, ("a", 3))
    replaced, evicted, evicted_slots = members.make_room(np.array([], np.int64))
    assert (replaced.tolist(), evicted.tolist(), evicted_slots.tolist()) == ([], [], [])
    assert members.uids() == ["a"] and members.replaced == 0 and members.evicted == 0


def test_after_clear_no_position_and_no_uid_is_found() -> None:
    members, holders = setup(2)
    add(members, holders, ("a", 0), ("b", 20))
    assert members.position_of("b") == 20
    holders.let_go(members.clear())
    assert members.position_of("a") is None and "b" not in members
    assert members.slot_of(0) == -1 and members.slot_of(20) == -1
    assert members.slots_of(np.array([0, 20])).tolist() == [-1, -1]
    add(members, holders, ("b", 20))
    assert members.position_of("b") == 20 and members.uids() == ["b"]

"""SourceOrder: stored positions in source order, the sorted arrays snapshots share (pure, hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.store.source_order import SourceOrder


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.booleans()), max_size=60))
def test_current_matches_sorting_the_positions(ops: list[tuple[bool, int, bool]]) -> None:
    order, slot_at, handles = SourceOrder(), np.full(61, -1, np.int32), 0
    previous: list[tuple[np.ndarray, np.ndarray, list[int], list[int]]] = []
    for add, position, look in ops:
        if add:  # stored, or stored again in another slot
            slot_at[position] = handles
            handles += 1
        else:
            slot_at[position] = -1
        order.changed(np.array([position]))
        if look:
            positions, slots = order.current(slot_at)
            expected = np.flatnonzero(slot_at >= 0).tolist()
            assert positions.tolist() == expected and slots.tolist() == slot_at[expected].tolist()
            assert not slots.flags.writeable and not positions.flags.writeable
            previous.append((positions, slots, positions.tolist(), slots.tolist()))
    for positions, slots, were, slots_were in previous:  # never written after being handed out
        assert positions.tolist() == were and slots.tolist() == slots_were


def test_no_change_hands_out_the_same_arrays() -> None:
    order, slot_at = SourceOrder(), np.full(8, -1, np.int32)
    slot_at[3] = 0
    order.changed(np.array([3]))
    first = order.current(slot_at)
    again = order.current(slot_at)
    assert first[0] is again[0] and first[1] is again[1]
    slot_at[1] = 1
    order.changed(np.array([1]))
    assert order.current(slot_at)[1] is not first[1]
    order.changed(np.array([], np.int64))  # nothing changed: the same arrays
    assert order.current(slot_at)[0] is order.current(slot_at)[0]


def test_clear_forgets_every_position() -> None:
    order, slot_at = SourceOrder(), np.full(1001, -1, np.int32)
    slot_at[[1000, 2]] = [7, 3]
    order.changed(np.array([1000, 2]))
    assert order.current(slot_at)[1].tolist() == [3, 7]
    order.clear()
    assert order.current(slot_at)[0].tolist() == []


def test_many_changes_at_once_are_read_from_the_slot_array() -> None:
    """More changes than an eighth of the positions: one pass over the slot array instead of a sort."""
    order, slot_at = SourceOrder(), np.full(40, -1, np.int32)
    slot_at[np.arange(20) * 2] = np.arange(20)[::-1]  # slot 0 among them
    order.changed(np.arange(20) * 2)
    positions, slots = order.current(slot_at)
    assert positions.tolist() == list(range(0, 40, 2)) and slots.tolist() == list(range(19, -1, -1))
    slot_at[[0, 38]] = -1  # two removed: few changes, the incremental way
    order.changed(np.array([0, 38]))
    positions, slots = order.current(slot_at)
    assert positions.tolist() == list(range(2, 38, 2)) and slots.tolist() == list(range(18, 0, -1))

"""SourceOrder: entries by source position, the sorted arrays snapshots share (pure, hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.source_order import SourceOrder


def at(position: int, handle: int) -> Entry:
    return Entry(f"u{position}", position, ({"x": 1},), handle=handle)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.booleans()), max_size=60))
def test_current_matches_sorting_the_positions(ops: list[tuple[bool, int, bool]]) -> None:
    order, model, handles = SourceOrder(), {}, 0
    previous: list[tuple[np.ndarray, np.ndarray, list[int], list[int]]] = []
    for add, position, look in ops:
        if add and position not in model:
            order.add(at(position, handles))
            model[position] = handles
            handles += 1
        elif not add and position in model:
            assert order.remove(position) == model.pop(position)
        if look:
            positions, slots = order.current()
            expected = sorted(model)
            assert positions.tolist() == expected and slots.tolist() == [model[p] for p in expected]
            assert not slots.flags.writeable
            previous.append((positions, slots, positions.tolist(), slots.tolist()))
        assert len(order) == len(model)
        assert all(order.get(p).position == p for p in model)  # type: ignore[union-attr]
    for positions, slots, were, slots_were in previous:  # never written after being handed out
        assert positions.tolist() == were and slots.tolist() == slots_were


def test_no_change_hands_out_the_same_arrays() -> None:
    order = SourceOrder()
    order.add(at(3, 0))
    first = order.current()
    again = order.current()
    assert first[0] is again[0] and first[1] is again[1]
    order.add(at(1, 1))
    assert order.current()[1] is not first[1]


def test_positions_beyond_the_first_sixteen_and_clear() -> None:
    order = SourceOrder()
    order.add(at(1000, 7))
    order.add(Entry("none", 2, ({"x": 1},)))  # no slot yet: recorded as -1
    assert order.current()[1].tolist() == [-1, 7]
    order.remove(1000)
    order.remove(2)
    order.clear()
    assert len(order) == 0 and order.get(1000) is None and order.current()[0].tolist() == []
    with pytest.raises(KeyError):
        order.remove(5)

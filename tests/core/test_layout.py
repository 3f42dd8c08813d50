"""Layout checks: what rows the store refuses, and the read-only views it keeps (pure)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.layout import (
    block_layout,
    check_rows,
    check_servable,
    frozen_row,
    layout_of,
    read_only,
    servable_block,
    stackable_layout,
)
from dask_reservoir._core.store.table import StoreError


def test_layouts_of_rows_and_blocks_agree() -> None:
    row = {"x": np.zeros((2, 3), np.float32), "t": np.array(["a", "b"]), "n": 1}
    assert layout_of(row) == {"x": ((2, 3), "number"), "t": ((2,), "str"), "n": None}
    block = {"x": np.zeros((4, 2, 3), np.float32), "t": np.zeros((4, 2), "<U1"), "n": np.arange(4)}
    assert block_layout(block) == layout_of(row)
    assert block_layout({"o": np.empty((4, 2), object)}) == {"o": None}


def test_values_no_batch_can_take_are_refused() -> None:
    check_servable("u", "c", {"a": [1]})
    check_servable("u", "c", np.zeros(2))
    with pytest.raises(StoreError, match=r"holds a numpy.matrix for UID 'u'") as info:
        check_servable("u", "c", np.asarray(np.eye(2)).view(np.matrix))
    assert (info.value.uid, info.value.column, info.value.dtype) == ("u", "c", "numpy.matrix")
    with pytest.raises(StoreError, match=r"holds a lock for UID 'u' that cannot be deep-copied \(TypeError"):
        check_servable("u", "c", threading.Lock())
    with pytest.raises(
        StoreError, match=r"^each row of an entry must be a dict, got list at index 0 for UID 3$"
    ):
        check_rows(3, [[1]])


def test_servable_block_sends_refused_and_stackable_arrays_one_by_one() -> None:
    objects = np.empty(3, object)
    objects[:] = ["a", np.zeros(2), "c"]
    rows = np.arange(3)
    assert servable_block([0, 1, 2], {"o": objects, "x": np.zeros(3)}, rows, stackable=False)
    assert not servable_block([0, 1, 2], {"o": objects}, rows, stackable=True)
    assert servable_block([0, 2], {"o": objects}, np.array([0, 2]), stackable=True)
    objects[1] = threading.Lock()
    assert not servable_block([0, 1, 2], {"o": objects}, rows, stackable=False)


def test_stackable_layout_names_the_uid_and_the_column() -> None:
    stored = layout_of({"x": np.zeros(2), "y": 1})
    other_columns = Entry(5, 5, ({"x": np.zeros(2)},))
    with pytest.raises(
        StoreError, match=r"UID 5 has columns \['x'\] but the stored rows \(UID 0 among them\)"
    ) as info:
        stackable_layout(other_columns, stored, alone=False, holder=0)
    assert info.value.column == "y"
    kinds = Entry(6, 6, ({"x": np.array(["a", "b"]), "y": 1},))
    with pytest.raises(StoreError, match=r"an array of shape \(2,\) and str values for UID 6") as info:
        stackable_layout(kinds, stored, alone=False, holder=None)
    assert info.value.column == "x" and "among them" not in str(info.value)
    scalar = Entry(7, 7, ({"x": 1, "y": 1},))
    with pytest.raises(StoreError, match=r"holds a value that is not an array for UID 7"):
        stackable_layout(scalar, stored, alone=False, holder=0)
    two_rows = Entry(8, 8, ({"x": np.zeros(3)}, {"x": np.zeros(4)}))
    with pytest.raises(StoreError, match=r"shape \(4,\)"):
        stackable_layout(two_rows, None, alone=True, holder=None)  # alone: its first row sets the layout
    assert stackable_layout(Entry(9, 9, ({"x": np.zeros(3)},)), stored, alone=True, holder=0) == {
        "x": ((3,), "number")
    }


def test_frozen_rows_are_read_only_views_and_leave_the_callers_arrays_alone() -> None:
    mine, theirs = np.zeros(3), read_only(np.ones(2))
    kept = frozen_row({"a": mine, "b": theirs, "c": [1]})
    assert not kept["a"].flags.writeable and mine.flags.writeable and np.shares_memory(kept["a"], mine)
    assert kept["b"] is theirs and kept["c"] == [1]

"""Admission: the store's rules for the rows it takes, and what they remember (pure)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dask_reservoir._core.blocks import BlockRow, ColumnBlock
from dask_reservoir._core.store.admission import Admission
from dask_reservoir._core.store.entry import Entry
from dask_reservoir._core.store.table import StoreError


def admission(**options: object) -> Admission:
    settings: dict = {"columnar": True, "uid_column": "uid", "uid_type": None, "stackable": False}
    return Admission(**(settings | options))


def test_prepare_makes_dicts_with_typed_uids_and_leaves_the_callers_rows() -> None:
    block = ColumnBlock({"uid": np.array([4, 5]), "x": np.array([1.0, 2.0])})
    mine = {"uid": 7, "x": 3.0}
    entry = Entry(5, 5, (BlockRow(block, 1), mine))
    admission(uid_type=np.int64).prepare(entry)
    assert entry.rows == ({"uid": 5, "x": 2.0}, {"uid": 7, "x": 3.0}) and type(mine["uid"]) is int
    assert all(type(r["uid"]) is np.int64 for r in entry.rows)
    untyped = Entry(5, 5, ({"x": 1},))
    admission(uid_type=np.int64).prepare(untyped)  # no UID column: left as it is
    assert untyped.rows == ({"x": 1},)
    with pytest.raises(StoreError, match="must be a dict"):
        admission().prepare(Entry(1, 1, ("row",)))  # type: ignore[arg-type]


def test_table_for_warns_once_per_column() -> None:
    rules = admission()
    first = Entry(0, 0, ({"x": np.zeros(2, np.float32), "y": 1},))
    table = rules.table_for(first, None, size=4)
    assert table is not None and rules.table_for(first, table, size=4) is table
    assert rules.table_for(Entry(1, 1, first.rows * 2), table, size=4) is None  # two rows: kept as rows
    changed = Entry(2, 2, ({"x": np.zeros(2, np.float64), "y": 1},))
    with pytest.warns(UserWarning, match=r"column 'x' changed from float32 array of shape \(2,\) to float64"):
        assert rules.table_for(changed, table, size=4) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rules.table_for(changed, table, size=4) is None  # warned once
    assert admission(columnar=False).table_for(first, None, size=4) is None


def test_block_writes_need_columns_that_slot_and_values_that_serve() -> None:
    block = ColumnBlock({"uid": np.array([1, 2], np.int32), "x": np.zeros((2, 3))}, python=frozenset({"uid"}))
    rows = np.array([0, 1])
    assert admission(columnar=False).block([1, 2], block, rows) is None
    prepared = admission(uid_type=np.int64).block([1, 2], block, rows)
    assert prepared is not None
    schema, layout = prepared
    assert block.columns["uid"].dtype == np.int64  # converted in place, as the store keeps them
    assert block.python == frozenset()  # and read back as uid_type, not as Python ints
    assert layout == {"uid": None, "x": ((3,), "number")}
    assert sorted(schema) == ["uid", "x"]
    assert admission().block([1, 2], ColumnBlock({1: np.zeros(2)}), rows) is None  # type: ignore[dict-item]
    objects = ColumnBlock({"o": np.array([[1], [2]], dtype=object)[:, 0]})
    objects.columns["o"][1] = np.zeros(2)  # an array in an object column: served only alone
    assert admission(stackable=True).block([1, 2], objects, rows) is None
    assert admission().block([1, 2], objects, rows) is not None


def test_a_stackable_store_keeps_the_layout_of_its_first_rows() -> None:
    rules = admission(stackable=True)
    first = Entry(0, 0, ({"x": np.zeros(2)},))
    layout = rules.stackable_layout(first, alone=True, holder=None)
    assert rules.layout is None  # nothing kept before the put is done
    rules.took(layout)
    assert rules.layout == {"x": ((2,), "number")} and rules.fits_block({"x": ((2,), "number")})
    assert not rules.fits_block({"x": ((3,), "number")})
    rules.took(None)  # a put that leaves other entries: the layout stays
    assert rules.layout == {"x": ((2,), "number")}
    rules.clear()
    assert rules.layout is None and rules.fits_block({"x": ((3,), "number")})
    rules.took_block({"x": ((3,), "number")})
    assert rules.layout == {"x": ((3,), "number")}
    assert admission().fits_block({"y": None}) and "stackable=True layout=set" in repr(rules)

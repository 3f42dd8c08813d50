"""The loaded entries as a DataFrame (``to_pandas``), from a store snapshot; no cluster."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from dask_reservoir._core.frames import entries_frame, load_time_column
from dask_reservoir._core.store import Entry, ReservoirStore
from dask_reservoir._core.uid_index import UidIndex

UIDS = np.array([10, 11, 12, 13], dtype=np.int64)


class Lookup:
    """The UID lookups of a source of ``UIDS`` (what entries_frame reads of a source)."""

    def __init__(self) -> None:
        self.index = UidIndex(UIDS)

    def has(self, uid: object) -> bool:
        return self.index.has(uid)  # type: ignore[arg-type]

    def position(self, uid: object) -> int:
        return self.index.position(uid)  # type: ignore[arg-type]


def store_of(*uids: int, rows_per_entry: int = 1, loaded_at: float = 100.0) -> ReservoirStore:
    store = ReservoirStore(8, uid_column="uid")
    for uid in uids:
        rows = tuple({"uid": uid, "x": uid * 2 + k} for k in range(rows_per_entry))
        store.put(Entry(uid, int(np.flatnonzero(UIDS == uid)[0]), rows, loaded_at + uid))
    return store


def frame(store: ReservoirStore, uids: list[int] | None = None, stamp: str | None = None) -> pd.DataFrame:
    snapshot = store.snapshot()
    try:
        return entries_frame(
            snapshot, uids, source=Lookup(), uid_values=UIDS, uid_column="uid", stamp_column=stamp, dtypes={}
        )
    finally:
        snapshot.release()


def test_every_entry_in_source_order_with_its_own_values() -> None:
    out = frame(store_of(12, 10, 13))
    assert out["uid"].tolist() == [10, 12, 13]
    assert out["x"].tolist() == [20, 24, 26]
    assert out["uid"].dtype == np.int64


def test_the_uids_asked_for_in_their_order_and_only_the_loaded_ones() -> None:
    out = frame(store_of(10, 12, 13), [13, 11, 10])
    assert out["uid"].tolist() == [13, 10]  # 11 is a source UID, not loaded now
    assert out["x"].tolist() == [26, 20]


def test_an_entry_of_several_rows_gives_each_row() -> None:
    out = frame(store_of(11, rows_per_entry=3))
    assert out["uid"].tolist() == [11, 11, 11]
    assert out["x"].tolist() == [22, 23, 24]


def test_uids_not_in_the_source_are_named() -> None:
    with pytest.raises(KeyError, match=r"UIDs not in the source \(2\): \[99, 98\]"):
        frame(store_of(10), [10, 99, 98])


def test_an_empty_store_gives_an_empty_frame_with_the_uid_dtype() -> None:
    out = frame(ReservoirStore(4, uid_column="uid"), stamp="loaded_at")
    assert list(out.columns) == ["uid", "loaded_at"]
    assert len(out) == 0 and out["uid"].dtype == np.int64


def test_the_load_time_column_is_each_entrys_wall_clock_time() -> None:
    now = time.monotonic()
    store = ReservoirStore(4, uid_column="uid")
    store.put(Entry(10, 0, ({"uid": 10, "x": 1},), now - 60.0))
    before = time.time()
    out = frame(store, stamp="t")
    stamp = out["t"].iloc[0].timestamp()
    assert before - 61.0 <= stamp <= time.time() - 59.0  # a minute ago, in wall-clock time
    assert str(out["t"].dtype).startswith("datetime64")


def test_a_produced_column_named_like_the_stamp_is_refused() -> None:
    store = ReservoirStore(4, uid_column="uid")
    store.put(Entry(10, 0, ({"uid": 10, "loaded_at": 1},)))
    with pytest.raises(ValueError, match=r"cannot add its load-time column 'loaded_at'"):
        frame(store, stamp="loaded_at")
    assert frame(store, stamp=None)["loaded_at"].tolist() == [1]


def test_rows_that_do_not_stack_still_make_a_frame() -> None:
    store = ReservoirStore(4, uid_column="uid")
    store.put(Entry(10, 0, ({"uid": 10, "v": np.zeros(2)},)))
    with pytest.warns(UserWarning, match=r"column 'v' changed"):
        store.put(Entry(11, 1, ({"uid": 11, "v": np.zeros(3)},)))
    out = frame(store)
    assert out["uid"].tolist() == [10, 11]
    assert [len(v) for v in out["v"]] == [2, 3]


@pytest.mark.parametrize(("given", "name"), [(True, "loaded_at"), ("when", "when"), (False, None)])
def test_load_time_column_names(given: object, name: str | None) -> None:
    assert load_time_column(given, "uid") == name


@pytest.mark.parametrize("given", ["", 1, None, 0.5])
def test_load_time_column_refuses_what_is_not_a_bool_or_a_name(given: object) -> None:
    with pytest.raises(TypeError, match=r"loaded_at must be a bool or a non-empty str"):
        load_time_column(given, "uid")


def test_load_time_column_refuses_the_uid_column() -> None:
    with pytest.raises(ValueError, match=r"that is the UID column"):
        load_time_column("uid", "uid")

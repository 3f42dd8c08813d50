"""Rows of a row function packed into column blocks on the worker (``_worker/packing.py``).

Pure checks of what packs and what does not, then the same source and function with
rows packed (``rows_per_job=4``) and not (``rows_per_job=1``) on a process cluster:
every row served, in every form, is the same value of the same type.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, SequentialSampler
from dask_reservoir._core.blocks import ChunkLoaded, as_rows
from dask_reservoir._core.records import RowFailed, RowLoaded
from dask_reservoir._worker.packing import pack, pack_column


def _loaded(*rows: dict[str, Any]) -> list[RowLoaded]:
    return [RowLoaded(f"u{i}", [row], 0.1 * (i + 1)) for i, row in enumerate(rows)]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type (arrays: same dtype, shape and values)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and bool(a == b)
    return bool(a == b)


PACKABLE = {
    "python int": [1, -(2**63)],
    "python float": [1.5, float("inf")],
    "python bool": [True, False],
    "python complex": [1j, 2 + 0j],
    "str": ["a", ""],
    "numpy int8": [np.int8(1), np.int8(-3)],
    "numpy float32": [np.float32(0.5), np.float32(2)],
    "numpy datetime64": [np.datetime64("2020-01-01", "s"), np.datetime64(0, "s")],
    "float32 arrays": [np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)],
    "uint8 vectors": [np.arange(4, dtype=np.uint8), np.arange(4, 8, dtype=np.uint8)],
}


@pytest.mark.parametrize("kind", PACKABLE)
def test_a_column_of_one_kind_packs_and_reads_back_unchanged(kind: str) -> None:
    values = PACKABLE[kind]
    chunk = pack(_loaded(*({"v": v, "uid": f"u{i}"} for i, v in enumerate(values))))
    assert type(chunk) is ChunkLoaded
    assert chunk.uids == ["u0", "u1"] and chunk.counts.tolist() == [1, 1]
    assert chunk.row_seconds is not None and chunk.row_seconds.tolist() == pytest.approx([0.1, 0.2])
    assert chunk.seconds == pytest.approx(0.3)
    back = pickle.loads(pickle.dumps(chunk))  # as the client receives it
    for i, outcome in enumerate(as_rows(back)):
        (row,) = outcome.rows
        assert list(row) == ["v", "uid"]
        assert _same(row["v"], values[i]), (kind, row["v"], values[i])
        assert _same(row["uid"], f"u{i}")
        assert outcome.seconds == pytest.approx(0.1 * (i + 1))


NOT_PACKABLE = {
    "int and float": [1, 2.5],
    "bool and int": [True, 1],
    "int beyond int64": [2**63, 1],
    "None": [None, None],
    "lists": [[1], [2]],
    "bytes": [b"a", b"b"],
    "numpy str_": [np.str_("a"), np.str_("b")],
    "int8 and int16 scalars": [np.int8(1), np.int16(1)],
    "datetime64 of two units": [np.datetime64(1, "s"), np.datetime64(1, "ms")],
    "arrays of two shapes": [np.zeros(2), np.zeros(3)],
    "arrays of two dtypes": [np.zeros(2, np.float32), np.zeros(2, np.float64)],
    "0-d arrays": [np.array(1.0), np.array(2.0)],
    "big-endian arrays": [np.zeros(2, ">f4"), np.ones(2, ">f4")],  # stacking would make them native
    "object arrays": [np.array([1, "a"], dtype=object)] * 2,
    "an array subclass": [np.ma.masked_array([1, 2])] * 2,
    "str arrays": [np.array(["ab", "3"]), np.array(["c", "d"])],  # the store keeps them as objects
    "bytes arrays": [np.array([b"ab", b"c"]), np.array([b"d", b""])],
    "structured arrays": [np.zeros(1, dtype=[("a", "i4"), ("b", "f8")])] * 2,
}


@pytest.mark.parametrize("kind", NOT_PACKABLE)
def test_a_column_mixing_kinds_or_holding_objects_does_not_pack(kind: str) -> None:
    values = NOT_PACKABLE[kind]
    assert pack_column(values) is None
    assert pack(_loaded(*({"v": v} for v in values))) is None


def test_only_tasks_whose_every_row_loaded_into_one_row_alike_pack() -> None:
    one = {"x": 1}
    assert pack(_loaded(one)) is None  # a single row: nothing to gain
    assert pack([*_loaded(one), RowFailed("b", "ValueError", "bad")]) is None
    assert pack([*_loaded(one), RowLoaded("b", [], 0.0)]) is None  # an empty result
    assert pack([*_loaded(one), RowLoaded("b", [one, one], 0.0)]) is None  # two rows
    assert pack(_loaded(one, {"y": 1})) is None  # other columns
    assert pack(_loaded({"x": 1, "y": 2}, {"y": 2, "x": 1})) is None  # the columns in another order
    assert pack(_loaded(one, one)) is not None


def test_a_packed_task_pickles_as_a_few_arrays() -> None:
    rows = _loaded(*({"image": np.full((8, 8), i, np.float32), "label": i % 10} for i in range(500)))
    chunk = pack(rows)
    assert chunk is not None
    assert chunk.block.columns["image"].shape == (500, 8, 8)
    assert chunk.block.python == frozenset({"label"})
    data = 500 * 8 * 8 * 4  # the images' bytes, in both
    packed, unpacked = len(pickle.dumps(chunk)) - data, len(pickle.dumps(rows)) - data
    assert packed < unpacked / 2, (packed, unpacked)  # per row: no dict, no array header, no key


# ---------------------------------------------------------------- through a reservoir, on a process cluster
ROWS = 24


def produce(row: dict[str, Any]) -> dict[str, Any]:
    uid = int(row["sample_uid"])
    return {
        "image": np.full((2, 3), uid, np.float32),
        "label": uid % 5,
        "weight": uid / 4,
        "flag": uid % 2 == 0,
        "name": f"n{uid}",
        "small": np.int16(uid),
    }


def _serve(
    client: Client, rows_per_job: int, uids: np.ndarray
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[Any]]:
    source = pd.DataFrame({"sample_uid": uids})
    common: dict[str, Any] = {
        "min_reservoir_samples": ROWS,
        "client": client,
        "rows_per_job": rows_per_job,
        "batch_size": ROWS,
    }
    with AsyncReservoir(source, produce, ROWS, reservoir_sampler=SequentialSampler(), **common) as r:
        (batch,) = list(r)
        frame = r.to_pandas()
    # the row dicts themselves, as a collate_fn receives them
    with AsyncReservoir(source, produce, ROWS, collate_fn=list, **common) as r:
        (given,) = list(r)
    rows = sorted(given, key=lambda row: row["sample_uid"])
    return frame, batch, rows


@pytest.mark.parametrize("uid_dtype", [np.int64, np.uint64])  # uint64: UIDs stored as the source's numpy type
def test_packed_and_unpacked_rows_serve_the_same_values_and_types(
    process_client: Client, uid_dtype: type
) -> None:
    uids = np.arange(ROWS, dtype=uid_dtype)
    packed = _serve(process_client, 4, uids)
    single = _serve(process_client, 1, uids)
    frame, batch, rows = packed
    assert frame["sample_uid"].tolist() == list(range(ROWS))
    for uid, row in zip(frame["sample_uid"], frame.to_dict("records"), strict=True):
        expected = produce({"sample_uid": uid})
        assert np.array_equal(row["image"], expected["image"]) and row["image"].dtype == np.float32
        assert (row["label"], row["weight"], row["flag"], row["name"]) == (
            expected["label"],
            expected["weight"],
            expected["flag"],
            expected["name"],
        )
    assert batch["sample_uid"].tolist() == list(range(ROWS))
    assert np.array_equal(batch["image"][:, 0, 0], np.arange(ROWS, dtype=np.float32))
    produced = [*produce({"sample_uid": 0}), "sample_uid"]
    pd.testing.assert_frame_equal(frame[produced], single[0][produced])
    assert frame.columns.tolist() == single[0].columns.tolist()
    assert batch.keys() == single[1].keys()
    for name, values in batch.items():
        other = single[1][name]
        assert values.dtype == other.dtype and values.shape == other.shape, name
        assert np.array_equal(values, other), name
    assert [r["sample_uid"] for r in rows] == list(range(ROWS))
    for a, b in zip(rows, single[2], strict=True):  # what a collate_fn receives: the same values and types
        assert a.keys() == b.keys()
        for key in a:
            assert _same(a[key], b[key]), (key, a[key], b[key])
    assert type(rows[0]["label"]) is int and type(rows[0]["small"]) is np.int16
    assert batch["sample_uid"].dtype == uid_dtype


TEXT_KINDS: dict[str, Any] = {
    "str": lambda uid: np.array([f"w{uid:02d}", "xyz"[uid % 3]]),  # one dtype (<U3) for every row
    "bytes": lambda uid: np.array([f"{uid:02d}".encode(), b"b"]),
    "records": lambda uid: np.array([(uid, uid / 2)], dtype=[("a", "i4"), ("b", "f8")]),
}


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("kind", TEXT_KINDS)
def test_arrays_of_text_or_records_per_row_serve_in_tasks_of_many_rows(
    client: Client, kind: str, batched: bool
) -> None:
    """A str, bytes or structured array per row, 8 rows a task: served as returned (it failed every iter())."""
    make = TEXT_KINDS[kind]

    def per_row(row: dict[str, Any]) -> dict[str, Any]:
        return {"x": make(int(row["sample_uid"]))}

    def per_chunk(frame: pd.DataFrame) -> dict[str, Any]:
        uids = frame["sample_uid"].to_numpy()
        return {"sample_uid": uids, "x": np.stack([make(int(u)) for u in uids])}

    with AsyncReservoir(
        pd.DataFrame({"sample_uid": np.arange(ROWS)}),
        per_chunk if batched else per_row,
        ROWS,
        min_reservoir_samples=ROWS,
        client=client,
        rows_per_job=8,
        batched=batched,
        batch_size=6,
    ) as r:
        served = 0
        for batch in r:
            for uid, x in zip(batch["sample_uid"].tolist(), batch["x"], strict=True):
                expected = make(uid)
                assert x.dtype == expected.dtype and x.tolist() == expected.tolist(), (uid, x, expected)
                served += 1
        assert served == ROWS and r.stats().rows_failed == 0

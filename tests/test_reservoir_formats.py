"""Batch formats and ``to_pandas`` (pure parts without a cluster, the rest on one)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, SequentialSampler
from dask_reservoir._core.formats import to_frame
from tests.utils import GATE, frame, gated_load, iterate_until


def record(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {
        "image": np.full((2, 3), v, dtype=np.float32),
        "label": v,
        "name": f"case-{v}",
        "when": np.datetime64("2026-01-01", "D") + np.timedelta64(v, "D"),
        "score": float(v) / 2,
    }


def test_to_frame_keeps_dtypes_and_puts_arrays_in_object_columns() -> None:
    batch = {
        "label": np.array([1, 2]),
        "name": np.array(["a", "bb"]),
        "when": np.array(["2026-01-01", "2026-01-02"], dtype="datetime64[D]"),
        "image": np.arange(12, dtype=np.float32).reshape(2, 2, 3),
    }
    out = to_frame(batch)
    assert list(out.columns) == ["label", "name", "when", "image"] and len(out) == 2
    assert out["label"].dtype == np.int64 and out["when"].dtype.kind == "M"
    assert out["image"].dtype == object and out["image"].iloc[1].shape == (2, 3)
    assert np.array_equal(out["image"].iloc[1], batch["image"][1])


def test_pandas_batches(client: Client) -> None:
    with AsyncReservoir(
        frame(10),
        record,
        10,
        min_reservoir_samples=10,
        client=client,
        batch_size=4,
        batch_format="pandas",
        reservoir_sampler=SequentialSampler(),
    ) as r:
        batches = list(r)
        assert [len(b) for b in batches] == [4, 4, 2]
        whole = pd.concat(batches, ignore_index=True)
        assert whole["sample_uid"].tolist() == list(range(10))
        assert (whole["label"] == whole["sample_uid"]).all()
        assert whole["name"].tolist() == [f"case-{i}" for i in range(10)]
        assert whole["when"].dtype.kind == "M" and whole["score"].dtype == np.float64
        assert all(
            img.shape == (2, 3) and img[0, 0] == uid
            for img, uid in zip(whole["image"], whole["sample_uid"], strict=True)
        )
        with r.subsample_uids([3, 1], new_sampler=SequentialSampler()) as sub:  # subsets keep the format
            got = pd.concat(list(sub), ignore_index=True)
            assert got["sample_uid"].tolist() == [3, 1]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_batches(client: Client) -> None:
    import torch

    with AsyncReservoir(
        frame(6), record, 6, min_reservoir_samples=6, client=client, batch_size=3, batch_format="torch"
    ) as r:
        batch = next(iter(r))
        assert isinstance(batch["image"], torch.Tensor) and batch["image"].shape == (3, 2, 3)
        assert torch.equal(batch["label"], batch["sample_uid"])


def test_bad_batch_format(client: Client) -> None:
    with pytest.raises(
        ValueError, match=r"batch_format must be one of \['numpy', 'pandas', 'torch'\], got 'arrow'"
    ):
        AsyncReservoir(frame(4), record, 4, client=client, batch_format="arrow")
    with pytest.raises(ValueError, match=r"batch_format='pandas' converts the default collate's batches"):
        AsyncReservoir(frame(4), record, 4, client=client, batch_format="pandas", collate_fn=list)


def test_to_pandas_all_and_by_uid(client: Client) -> None:
    with AsyncReservoir(frame(12), record, 12, min_reservoir_samples=1, client=client) as r:
        iterate_until(r, lambda: r.reservoir_size() == 12)
        before = r.stats()
        whole = r.to_pandas()
        assert whole["sample_uid"].tolist() == list(range(12))  # source order
        assert (whole["label"] == whole["sample_uid"]).all() and whole["image"].iloc[5][0, 0] == 5
        assert whole["loaded_at"].dtype.kind == "M"
        age = pd.Timestamp.now() - whole["loaded_at"]
        assert (age >= pd.Timedelta(0)).all() and (age < pd.Timedelta(minutes=5)).all()
        some = r.to_pandas([7, 2, 9])
        assert some["sample_uid"].tolist() == [7, 2, 9] and some["name"].tolist() == [
            "case-7",
            "case-2",
            "case-9",
        ]
        with pytest.raises(KeyError, match=r"UIDs not in the source \(2\): \[99, 'x'\]"):
            r.to_pandas([1, 99, "x"])
        after = r.stats()
        assert (after.epochs, after.samples_served, after.live_iterators) == (
            before.epochs,
            before.samples_served,
            0,
        )


def text_for_uid_2(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {"x": np.array(["two", "two"]) if v == 2 else np.full(2, v, dtype=np.float64), "label": v}


def test_to_pandas_of_rows_that_do_not_stack_keeps_each_value(client: Client) -> None:
    """With batch_size=1 the store keeps rows of other kinds; to_pandas() made every number text."""
    with AsyncReservoir(frame(5), text_for_uid_2, 5, min_reservoir_samples=5, client=client) as r:
        with pytest.warns(UserWarning, match="column 'x' changed"):
            batches = list(r)
        assert sorted(int(b["sample_uid"][0]) for b in batches) == [0, 1, 2, 3, 4]
        whole = r.to_pandas()
    assert whole["sample_uid"].tolist() == [0, 1, 2, 3, 4] and whole["sample_uid"].dtype == np.int64
    for uid, x in zip(whole["sample_uid"], whole["x"], strict=True):
        expected = ["two", "two"] if uid == 2 else [float(uid)] * 2
        assert x.tolist() == expected, (uid, x)
    assert whole["label"].tolist() == [0, 1, 2, 3, 4] and whole["label"].dtype.kind == "i"


def test_to_pandas_before_anything_loaded_is_empty(client: Client) -> None:
    GATE.clear()
    try:
        with AsyncReservoir(frame(4), gated_load, 4, client=client) as r:
            empty = r.to_pandas()
            assert list(empty.columns) == ["sample_uid", "loaded_at"] and len(empty) == 0
            assert len(r.to_pandas([1, 2])) == 0
            GATE.set()
    finally:
        GATE.set()


def own_loaded_at(row: dict[str, Any]) -> dict[str, Any]:
    return {"loaded_at": f"disk-{row['value']}", "label": int(row["value"])}


def test_to_pandas_never_overwrites_a_column_of_yours(client: Client) -> None:
    """A produced column named loaded_at came back from to_pandas() as the library's Timestamps."""
    with AsyncReservoir(
        frame(4), own_loaded_at, 4, min_reservoir_samples=4, client=client, batch_size=4
    ) as r:
        assert next(iter(r))["loaded_at"].tolist() == [f"disk-{i}" for i in range(4)]
        with pytest.raises(ValueError, match=r"function_to_run produces a column named 'loaded_at'; pass"):
            r.to_pandas()
        mine = r.to_pandas(loaded_at=False)
        assert list(mine.columns) == ["loaded_at", "label", "sample_uid"]
        assert mine["loaded_at"].tolist() == [f"disk-{i}" for i in range(4)]
        both = r.to_pandas([2, 0], loaded_at="finished_at")
        assert both["loaded_at"].tolist() == ["disk-2", "disk-0"] and both["finished_at"].dtype.kind == "M"
        with pytest.raises(ValueError, match=r"load-time column 'sample_uid': that is the UID column"):
            r.to_pandas(loaded_at="sample_uid")
        with pytest.raises(TypeError, match=r"loaded_at must be a bool or a non-empty str .*got int: 1"):
            r.to_pandas(loaded_at=1)  # type: ignore[arg-type]

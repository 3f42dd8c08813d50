"""The transform stage without a cluster: its seed stream, and the rules a transform must keep."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dask_reservoir._core.augment import STREAM, ServeTransform


def jitter(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    sample["x"] = sample["x"] + int(rng.integers(0, 10**9))
    return sample


def rows() -> list[dict[str, Any]]:
    return [{"uid": u, "x": 0} for u in (1, 2, 3)]


def test_the_stream_depends_on_seed_epoch_and_place_only() -> None:
    t = ServeTransform(jitter, batched=False, seed=7, uid_column="uid")
    first = [r["x"] for r in t.for_epoch(2).rows(rows(), start=4)]
    assert first == [r["x"] for r in t.for_epoch(2).rows(rows(), start=4)]  # a rebuilt batch
    assert len(set(first)) == 3  # one generator per batch, drawn in order: rows differ
    others = [
        ServeTransform(jitter, batched=False, seed=8, uid_column="uid").for_epoch(2),
        t.for_epoch(3),
    ]
    for other in others:
        assert [r["x"] for r in other.rows(rows(), start=4)] != first
    assert [r["x"] for r in t.for_epoch(2).rows(rows(), start=5)] != first
    expected = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(STREAM, 2, 4))).integers(0, 10**9)
    assert first[0] == expected
    assert t.for_epoch(2).epoch == 2 and not t.for_epoch(0).batched
    assert repr(t) == "<ServeTransform: jitter batched=False seed=7>"


def test_rows_keep_their_uid_and_must_be_dicts() -> None:
    t = ServeTransform(lambda s, rng: {"x": 1}, batched=False, seed=0, uid_column="uid").for_epoch(0)
    assert t.rows(rows(), start=0) == [{"x": 1, "uid": 1}, {"x": 1, "uid": 2}, {"x": 1, "uid": 3}]
    same = ServeTransform(
        lambda s, rng: {**s, "uid": np.int64(s["uid"])}, batched=False, seed=0, uid_column="uid"
    )
    assert [type(r["uid"]) for r in same.for_epoch(0).rows(rows(), start=0)] == [
        int,
        int,
        int,
    ]  # the stored UID
    wrong = ServeTransform(lambda s, rng: {**s, "uid": 9}, batched=False, seed=0, uid_column="uid")
    with pytest.raises(
        ValueError, match=r"^transform changed the UID column 'uid' of UID 1 to 9: the UID names"
    ):
        wrong.for_epoch(0).rows(rows(), start=0)
    listed = ServeTransform(lambda s, rng: [s], batched=False, seed=0, uid_column="uid")
    with pytest.raises(
        TypeError, match=r"^transform must return the sample as a dict .*, got list for UID 1$"
    ):
        listed.for_epoch(0).rows(rows(), start=0)


def test_batches_keep_their_uids_in_order() -> None:
    batch = {"uid": np.array([4, 5, 6]), "x": np.zeros(3)}

    def add(b: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"x": b["x"] + rng.random(3)}

    t = ServeTransform(add, batched=True, seed=1, uid_column="uid").for_epoch(0)
    assert t.batched
    out = t.batch(dict(batch), start=0)
    assert out["uid"].tolist() == [4, 5, 6] and (out["x"] > 0).all()
    for bad in ({"uid": np.array([5, 4, 6])}, {"uid": np.array([4, 5])}):
        broken = ServeTransform(lambda b, rng, bad=bad: {**b, **bad}, batched=True, seed=1, uid_column="uid")
        with pytest.raises(ValueError, match=r"changed the UID column 'uid': it must keep the batch's rows"):
            broken.for_epoch(0).batch(dict(batch), start=0)
    not_dict = ServeTransform(lambda b, rng: list(b), batched=True, seed=1, uid_column="uid")
    with pytest.raises(TypeError, match=r"must return the batch as a dict of column -> array, got list$"):
        not_dict.for_epoch(0).batch(dict(batch), start=0)
    other = ServeTransform(lambda b, rng: b, batched=True, seed=1, uid_column="uid").for_epoch(0)
    assert other.batch("a collate_fn's batch", start=0) == "a collate_fn's batch"  # no UID column to keep

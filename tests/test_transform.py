"""``transform=``: fresh augmentation at every serve, off the consumer's thread, reproducible when seeded."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, RandomSampler

pytestmark = pytest.mark.timeout(120)

N = 24


def load(row: dict[str, Any]) -> dict[str, Any]:
    uid = int(row["sample_uid"])
    return {"x": np.full(3, uid, np.int64), "base": uid}


def shift(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    offset = int(rng.integers(1, 10**9))
    sample["x"] += offset  # in place: the sample is the transform's own copy
    sample["off"] = offset
    return sample


def shift_batch(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    offsets = rng.integers(1, 10**9, size=len(batch["x"]))
    batch["x"] += offsets[:, None]
    batch["off"] = offsets
    return batch


def frame() -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(1000, 1000 + N)})


def serve(r: AsyncReservoir, epochs: int) -> list[tuple[int, int, int]]:
    """(epoch, uid, offset) of every served row, each row checked against its UID."""
    served = []
    for epoch in range(epochs):
        for batch in r:
            uids = batch["sample_uid"]
            assert (batch["base"] == uids).all()
            assert (batch["x"] == (uids + batch["off"])[:, None]).all()
            served += [(epoch, int(u), int(o)) for u, o in zip(uids, batch["off"], strict=True)]
    return served


@pytest.mark.parametrize("batched", [False, True])
def test_each_serve_is_augmented_afresh_and_the_reservoir_is_untouched(
    process_client: Client, batched: bool
) -> None:
    with AsyncReservoir(
        frame(), load, N, min_reservoir_samples=N, client=process_client, batch_size=5,
        transform=shift_batch if batched else shift, transform_batched=batched, timeout=60,
    ) as r:  # fmt: skip
        served = serve(r, 3)
        table = r.to_pandas()
    assert len(served) == 3 * N
    by_uid: dict[int, set[int]] = {}
    for _, uid, offset in served:
        by_uid.setdefault(uid, set()).add(offset)
    assert all(len(offsets) == 3 for offsets in by_uid.values())  # a new offset at every serve
    assert (np.stack(table["x"].to_list())[:, 0] == table["sample_uid"]).all()  # stored values unchanged
    assert "off" not in table.columns


def run(client: Client, *, seed: int, batched: bool = False) -> list[tuple[int, int, int]]:
    with AsyncReservoir(
        frame(), load, N, min_reservoir_samples=N, client=client, batch_size=4, transform=shift,
        transform_batched=batched, transform_seed=seed, deterministic=True, max_reservoir_replacement_size=4,
        reservoir_sampler=RandomSampler(seed=5), timeout=60,
    ) as r:  # fmt: skip
        return serve(r, 3)


def test_deterministic_runs_with_one_seed_are_augmented_identically(process_client: Client) -> None:
    first, again, other = (
        run(process_client, seed=11),
        run(process_client, seed=11),
        run(process_client, seed=12),
    )
    assert first == again
    assert [(e, u) for e, u, _ in first] == [(e, u) for e, u, _ in other]  # same rows, same order
    assert [o for *_, o in first] != [o for *_, o in other]  # another seed: other offsets


def test_the_transform_runs_in_the_batch_thread_while_the_step_runs(client: Client) -> None:
    threads: list[str] = []

    def note(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return sample

    with AsyncReservoir(
        frame(), load, N, min_reservoir_samples=N, client=client, transform=note, batch_size=2, timeout=60
    ) as r:
        for _ in range(3):
            for batch in r:
                assert (batch["x"][:, 0] == batch["sample_uid"]).all()
                time.sleep(0.005)  # the training step: the next batches are built meanwhile
    assert (
        len(threads) >= 3 * N
    )  # a batch built ahead and dropped (an epoch prepared, then not used) is built again
    in_builder = sum(name.startswith("dask_reservoir-batches") for name in threads)
    # a batch not started when next() asks for it is built there (as any batch); the rest, off the loop
    assert in_builder > len(threads) // 2, threads


def test_a_transform_that_breaks_the_rules_raises_naming_the_uid(client: Client) -> None:
    def not_a_dict(sample: dict[str, Any], rng: np.random.Generator) -> Any:
        return [sample]

    def other_uid(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {**sample, "sample_uid": -1}

    def drops_rows(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {k: v[1:] for k, v in batch.items()}

    cases = [
        (
            not_a_dict,
            False,
            TypeError,
            r"must return the sample as a dict of column -> value, got list for UID 10\d\d",
        ),
        (other_uid, False, ValueError, r"changed the UID column 'sample_uid' of UID 10\d\d to -1"),
        (drops_rows, True, ValueError, r"changed the UID column 'sample_uid': it must keep the batch's rows"),
    ]
    for transform, batched, error, message in cases:
        with AsyncReservoir(
            frame(), load, N, min_reservoir_samples=N, client=client, batch_size=4, transform=transform,
            transform_batched=batched, timeout=60,
        ) as r:  # fmt: skip
            with pytest.raises(error, match=message):
                next(iter(r))


def test_transform_options_are_checked(client: Client) -> None:
    with pytest.raises(TypeError, match="transform must be callable or None, got int: 3"):
        AsyncReservoir(frame(), load, N, client=client, transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transform_batched must be a bool, got str"):
        AsyncReservoir(frame(), load, N, client=client, transform=shift, transform_batched="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="transform_seed must be >= 0, got -1"):
        AsyncReservoir(frame(), load, N, client=client, transform=shift, transform_seed=-1)

"""Data-parallel ranks: shards per pass, equal batch counts, ranks as separate processes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, RandomSampler, SequentialSampler
from dask_reservoir._core.shards import shard_positions
from tests.cli_cluster import cli_cluster
from tests.utils import frame, iterate_until, load_value


def uneven_load(row: dict[str, Any]) -> dict[str, Any]:
    """Rows of some UIDs give no entry: ranks fill at different rates."""
    if int(row["value"]) % 7 == 3:
        return []  # type: ignore[return-value]
    return load_value(row)


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_rank_yields_the_same_number_of_batches_every_epoch(client: Client, drop_last: bool) -> None:
    world = 3
    ranks = [
        AsyncReservoir(
            frame(90),
            uneven_load,
            24,
            min_reservoir_samples=10,
            client=client,
            batch_size=4,
            drop_last=drop_last,
            reservoir_sampler=RandomSampler(seed=rank),
            rank=rank,
            world_size=world,
            max_reservoir_replacement_size=3,
        )
        for rank in range(world)
    ]
    expected = 10 // 4 if drop_last else math.ceil(10 / 4)
    try:
        for _ in range(20):
            for r in ranks:
                it = iter(r)
                assert len(it) == expected
                batches = list(it)
                assert len(batches) == expected
                for b in batches:
                    assert np.array_equal(b["label"], b["sample_uid"])
                    assert int(b["sample_uid"][0]) % 7 != 3
        sizes = {r.reservoir_size() for r in ranks}
        assert all(s >= 10 for s in sizes)
    finally:
        for r in ranks:
            r.close()


def test_a_rank_loads_only_its_shard_of_each_pass(client: Client) -> None:
    n, world = 40, 2
    with AsyncReservoir(
        frame(n),
        load_value,
        n,
        min_reservoir_samples=8,
        client=client,
        rank=1,
        world_size=world,
        max_jobs_at_once=4,
        rows_per_job=1,
        source_sampler=SequentialSampler(),
    ) as r:
        shard = r.shard_uids(0)
        assert shard == shard_positions(n, 0, 1, world).tolist() and len(shard) == 20
        assert r.shard_uids(1) != shard
        served = {int(v) for b in r for v in b["sample_uid"]}
        # at most 8 + 4 rows were submitted so far: the first rows of this rank's shard
        assert len(served) >= 8 and served <= set(shard[:12])


def test_epoch_of_a_rank_with_maximum_samples_counts_entries(client: Client) -> None:
    with AsyncReservoir(
        frame(30),
        load_value,
        30,
        min_reservoir_samples=4,
        maximum_number_of_samples_per_epoch=9,
        client=client,
        batch_size=2,
        rank=0,
        world_size=2,
    ) as r:
        it = iter(r)  # waits for 9 entries, then serves exactly 9
        assert r.reservoir_size() >= 9 and len(it) == 5
        assert sum(len(b["label"]) for b in it) == 9


def test_subsets_of_a_rank_are_not_sharded(client: Client) -> None:
    with AsyncReservoir(
        frame(20), load_value, 20, min_reservoir_samples=5, client=client, rank=1, world_size=4
    ) as r:
        list(r)
        with r.subsample_uids([0, 1, 2, 3, 4, 5], new_sampler=SequentialSampler()) as sub:
            assert sub.shard_uids(0) == [0, 1, 2, 3, 4, 5]  # the whole subset, in its first pass
            iterate_until(sub, lambda: sub.reservoir_size() == 6)
            assert sorted(int(v) for b in sub for v in b["sample_uid"]) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 2, "world_size": 2}, r"rank must be in \[0, world_size\) = \[0, 2\), got rank=2"),
        ({"world_size": 0}, r"world_size must be >= 1, got world_size=0"),
        ({"rank": -1, "world_size": 3}, r"got rank=-1"),
    ],
)
def test_bad_rank_is_a_clear_error(client: Client, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AsyncReservoir(frame(4), load_value, 4, client=client, **kwargs)


RANK = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np, pandas as pd
    from dask_reservoir import AsyncReservoir, RandomSampler, SequentialSampler

    def load(row):
        time.sleep(0.01)
        return {"x": np.float32(row["uid"]), "label": int(row["uid"])}

    address, rank, world, epochs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    source = pd.DataFrame({"uid": np.arange(60)})
    r = AsyncReservoir(
        source, load, 30, min_reservoir_samples=12, client=address, batch_size=4, uid_column="uid",
        reservoir_sampler=RandomSampler(seed=rank), source_sampler=SequentialSampler(),
        rank=rank, world_size=world, max_jobs_at_once=4, rows_per_job=1,
    )
    counts, lengths, first = [], [], None
    for epoch in range(epochs):
        it = iter(r)
        lengths.append(len(it))
        batches = list(it)
        counts.append(len(batches))
        for b in batches:
            assert (b["label"] == b["uid"]).all()
        if first is None:
            first = sorted(int(u) for b in batches for u in b["uid"])
    result = {"counts": counts, "lengths": lengths, "first": first,
              "shards": [r.shard_uids(p) for p in range(3)], "status": r.stats().status}
    r.close()
    with open(out, "w") as f:
        json.dump(result, f)
    """
)


def test_three_ranks_as_processes_on_one_cli_cluster(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    world = 3
    epochs = {0: 5, 1: 20, 2: 20}  # rank 0 closes early; the others go on
    with cli_cluster(tmp_path) as cluster:
        procs = {
            rank: subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    cluster.address,
                    str(rank),
                    str(world),
                    str(epochs[rank]),
                    str(tmp_path / f"rank{rank}.json"),
                ]
            )
            for rank in range(world)
        }
        for proc in procs.values():
            assert proc.wait(120) == 0
    results = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(world)}
    for rank, result in results.items():
        assert result["counts"] == [3] * epochs[rank] and result["lengths"] == [3] * epochs[rank]
        assert result["status"] == "running"
        # the first epoch comes from the first pass: the rank's own shard, not the first rows
        assert set(result["first"]) <= set(result["shards"][0]) and len(result["first"]) == 12
    for p in range(3):
        shards = [set(results[rank]["shards"][p]) for rank in range(world)]
        assert set().union(*shards) == set(range(60)) and sum(len(s) for s in shards) == 60
    assert results[1]["shards"][0] != results[1]["shards"][1]


def test_an_epoch_longer_than_the_reservoir_is_cut_to_its_capacity(client: Client) -> None:
    with AsyncReservoir(
        frame(50),
        load_value,
        10,
        min_reservoir_samples=5,
        maximum_number_of_samples_per_epoch=20,
        client=client,
        batch_size=4,
        rank=0,
        world_size=2,
        timeout=60,
    ) as r:
        it = iter(r)
        assert len(it) == 3 and sum(len(b["label"]) for b in it) == 10


def test_more_ranks_than_rows_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match=r"world_size=4 is larger than the source's 3 rows"):
        AsyncReservoir(frame(3), load_value, 3, client=client, rank=1, world_size=4)

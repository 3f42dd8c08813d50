"""Dealing source rows to data-parallel ranks (pure: no cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dask_reservoir import SequentialSampler
from dask_reservoir._core.ledger import Ledger
from dask_reservoir._core.records import RowLoaded
from dask_reservoir._core.shards import check_rank, rows_per_rank_epoch, shard_mask, shard_positions


@given(st.integers(0, 300), st.integers(1, 9), st.integers(0, 50))
def test_shards_are_disjoint_cover_the_source_and_are_balanced(n: int, world: int, pass_number: int) -> None:
    shards = [shard_positions(n, pass_number, rank, world) for rank in range(world)]
    together = np.concatenate(shards)
    assert sorted(together.tolist()) == list(range(n))  # disjoint, and every row once
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    again = [shard_positions(n, pass_number, rank, world) for rank in range(world)]
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))  # every rank computes alike
    for rank, shard in enumerate(shards):
        assert np.flatnonzero(shard_mask(n, pass_number, rank, world)).tolist() == shard.tolist()


def test_shards_change_across_passes_so_every_rank_meets_every_row() -> None:
    n, world = 60, 3
    first = shard_positions(n, 0, 0, world)
    assert any(not np.array_equal(first, shard_positions(n, p, 0, world)) for p in range(1, 4))
    met = set()
    for p in range(40):
        met.update(shard_positions(n, p, 0, world).tolist())
    assert met == set(range(n))


def test_one_rank_gets_everything() -> None:
    assert shard_positions(5, 3, 0, 1).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("rank", "world", "error", "message"),
    [
        (3, 3, ValueError, r"rank must be in \[0, world_size\) = \[0, 3\), got rank=3"),
        (-1, 2, ValueError, r"got rank=-1"),
        (0, 0, ValueError, r"world_size must be >= 1, got world_size=0"),
        (0.5, 2, TypeError, r"rank must be an int, got float: 0.5"),
        (0, "2", TypeError, r"world_size must be an int, got str: '2'"),
        (True, 2, TypeError, r"rank must be an int, got bool"),
    ],
)
def test_bad_ranks_are_refused(rank: object, world: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_rank(rank, world)


def test_rows_per_rank_epoch_rule() -> None:
    assert (
        rows_per_rank_epoch(min_reservoir_samples=8, maximum_number_of_samples_per_epoch=None, n_source=100)
        == 8
    )
    assert (
        rows_per_rank_epoch(min_reservoir_samples=8, maximum_number_of_samples_per_epoch=20, n_source=100)
        == 20
    )
    assert (
        rows_per_rank_epoch(min_reservoir_samples=8, maximum_number_of_samples_per_epoch=None, n_source=5)
        == 5
    )


def _one_pass(ledger: Ledger, n_rows: int) -> list[int]:
    """Submit until the ledger starts its second pass; finish and take every job."""
    submitted: list[int] = []
    while ledger.counters().source_passes < 1:
        job = ledger.next_job()
        if not job:
            break
        ledger.submitted(job)
        submitted.extend(job)
        ledger.finished(job, [RowLoaded(p, [{"x": p}], 0.0) for p in job], now=0.0)
        ledger.take()
        assert len(submitted) <= n_rows
    return submitted


def test_ledgers_of_three_ranks_submit_disjoint_shards_covering_the_source() -> None:
    n, world = 30, 3
    uids = list(range(n))
    per_rank = []
    for rank in range(world):
        ledger = Ledger(uids, SequentialSampler(), max_rows=4, rows_per_job=1, rank=rank, world_size=world)
        submitted = _one_pass(ledger, n)
        assert submitted == shard_positions(n, 0, rank, world).tolist()  # in the source sampler's order
        per_rank.append(set(submitted))
    assert set().union(*per_rank) == set(range(n))
    assert sum(len(s) for s in per_rank) == n


def test_rows_per_rank_epoch_is_at_least_one_and_at_most_the_capacity() -> None:
    assert (
        rows_per_rank_epoch(min_reservoir_samples=1, maximum_number_of_samples_per_epoch=None, n_source=10)
        == 1
    )
    assert (
        rows_per_rank_epoch(
            min_reservoir_samples=5, maximum_number_of_samples_per_epoch=50, n_source=99, capacity=8
        )
        == 8
    )

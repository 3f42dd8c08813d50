"""Data-parallel ranks: which source rows each rank loads in each pass, with no communication.

Pure code.  In pass ``p`` over the source, the rows are dealt to the ``world_size``
ranks by one permutation seeded with ``(SHARD_SEED, p)``, which every rank computes
alike: rank ``r`` loads the rows at positions ``permutation[r::world_size]``.  Within
a pass the shards are disjoint and cover the source (sizes differ by at most one);
across passes the permutation changes, so over passes every rank meets every row (a
global shuffle over time, instead of a fixed partition per rank).

Every rank's epoch yields the same number of batches, whatever its reservoir holds
(:func:`rows_per_rank_epoch`), so that data-parallel training never waits at a
collective for a rank whose epoch ended early.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHARD_SEED", "check_rank", "rows_per_rank_epoch", "shard_mask", "shard_positions"]

SHARD_SEED = 20_261_203
"""Seed of the permutations dealing rows to ranks (the same on every rank, every run)."""


def check_rank(rank: object, world_size: object) -> tuple[int, int]:
    """``(rank, world_size)`` checked: ints, ``world_size >= 1``, ``0 <= rank < world_size``.

    Examples
    --------
    >>> check_rank(1, 3)
    (1, 3)
    >>> check_rank(3, 3)
    Traceback (most recent call last):
    ...
    ValueError: rank must be in [0, world_size) = [0, 3), got rank=3
    """
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    r, w = int(rank), int(world_size)  # type: ignore[call-overload]
    if w < 1:
        raise ValueError(f"world_size must be >= 1, got world_size={w}")
    if not 0 <= r < w:
        raise ValueError(f"rank must be in [0, world_size) = [0, {w}), got rank={r}")
    return r, w


def shard_positions(n: int, pass_number: int, rank: int, world_size: int) -> np.ndarray:
    """Sorted positions of the source rows rank ``rank`` loads in pass ``pass_number``.

    Examples
    --------
    >>> shards = [shard_positions(10, 0, r, 3) for r in range(3)]
    >>> [len(s) for s in shards], sorted(np.concatenate(shards).tolist()) == list(range(10))
    ([4, 3, 3], True)
    >>> shards[0].tolist(), shard_positions(10, 1, 0, 3).tolist()  # another pass, another shard
    ([0, 6, 7, 8], [0, 4, 6, 9])
    """
    if world_size == 1:
        return np.arange(n, dtype=np.int64)
    permutation = np.random.default_rng([SHARD_SEED, pass_number]).permutation(n)
    return np.sort(permutation[rank::world_size]).astype(np.int64)


def shard_mask(n: int, pass_number: int, rank: int, world_size: int) -> np.ndarray:
    """``mask[i]`` is True when rank ``rank`` loads source row ``i`` in pass ``pass_number``."""
    mask = np.zeros(n, dtype=bool)
    mask[shard_positions(n, pass_number, rank, world_size)] = True
    return mask


def rows_per_rank_epoch(
    *,
    min_reservoir_samples: int,
    maximum_number_of_samples_per_epoch: int | None,
    n_source: int,
    capacity: int | None = None,
) -> int:
    """Entries every rank's epoch serves when ``world_size > 1``.

    ``maximum_number_of_samples_per_epoch`` when given, else ``min_reservoir_samples``,
    at most the source's rows and the reservoir's ``capacity``: every rank's ``iter()`` waits until its reservoir holds
    that many entries, and then serves exactly that many (repeating its order from the
    start if the sampler gave fewer), so every rank yields the same number of batches.

    Examples
    --------
    >>> rows_per_rank_epoch(min_reservoir_samples=64, maximum_number_of_samples_per_epoch=None, n_source=1000)
    64
    >>> rows_per_rank_epoch(min_reservoir_samples=64, maximum_number_of_samples_per_epoch=128, n_source=100)
    100
    >>> rows_per_rank_epoch(min_reservoir_samples=8, maximum_number_of_samples_per_epoch=500, n_source=1000, capacity=256)
    256
    """
    wanted = maximum_number_of_samples_per_epoch or min_reservoir_samples
    return max(1, min(wanted, n_source, capacity or wanted))

"""Which positions, in which order: a sampler's epoch order, and a rank's pass over the source."""

from __future__ import annotations

from typing import Any

import numpy as np

from dask_reservoir._core.samplers import Sampler
from dask_reservoir._core.shards import shard_mask

__all__ = ["epoch_order", "pass_order"]


def epoch_order(
    sampler: Sampler,
    n: int,
    epoch: int,
    *,
    name: str = "reservoir_sampler",
    of: str = "entries in the reservoir",
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """The sampler's indices for one epoch, checked to lie in ``range(n)``.

    ``positions`` are the source positions of the ``n`` entries, given to samplers
    that read source columns (``uses_positions``).

    Examples
    --------
    >>> from dask_reservoir._core.samplers import SequentialSampler
    >>> epoch_order(SequentialSampler(), 3, 0).tolist()
    [0, 1, 2]
    """
    if getattr(sampler, "uses_positions", False):
        raw: Any = sampler.indices(n, epoch=epoch, positions=positions)  # type: ignore[call-arg]
    else:
        raw = sampler.indices(n, epoch=epoch)
    if isinstance(raw, range) and (len(raw) == 0 or (min(raw[0], raw[-1]) >= 0 and max(raw[0], raw[-1]) < n)):
        # bounds from its ends (min() of a range steps through it), no Python step per index
        return np.arange(raw.start, raw.stop, raw.step, dtype=np.int64)
    order = raw if isinstance(raw, np.ndarray) else np.asarray(list(raw))
    if order.size and not np.issubdtype(order.dtype, np.integer):
        raise TypeError(f"{name} {sampler!r} must yield int indices, got {order.dtype} values")
    order = order.astype(np.int64, copy=False).ravel()
    bad = order[(order < 0) | (order >= n)]
    if bad.size:
        raise ValueError(
            f"{name} {sampler!r} must yield indices in range({n}) ({n} {of}), got {bad[:5].tolist()!r}"
        )
    return order


def pass_order(sampler: Sampler, n: int, pass_number: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Source positions of pass ``pass_number`` over ``n`` rows in ``sampler``'s order, rank ``rank``'s shard.

    Examples
    --------
    >>> from dask_reservoir import SequentialSampler
    >>> pass_order(SequentialSampler(), 6, 0).tolist(), pass_order(SequentialSampler(), 6, 0, 1, 2).tolist()
    ([0, 1, 2, 3, 4, 5], [0, 2, 5])
    """
    order = epoch_order(sampler, n, pass_number, name="source_sampler", of="source rows")
    if world_size > 1:  # this rank's shard of this pass, in the sampler's order
        order = order[shard_mask(n, pass_number, rank, world_size)[order]]
    return np.asarray(order, dtype=np.int64)  # an array: 8 bytes per row, not a Python int

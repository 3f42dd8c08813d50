"""PyTorch adapter: batches as tensors, and an ``IterableDataset`` over a reservoir.

Optional: ``pip install dask_reservoir[torch]``.  Importing this module
without torch raises an ``ImportError`` saying so.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dask_reservoir._core.tensors import TORCH_MISSING, to_tensors

try:
    import torch
    from torch.utils.data import IterableDataset
except ImportError as exc:  # pragma: no cover - exercised in an environment without torch
    raise ImportError(TORCH_MISSING) from exc

if TYPE_CHECKING:
    from dask_reservoir.reservoir import AsyncReservoir

__all__ = ["ReservoirDataset", "distributed_rank", "to_tensors"]


def distributed_rank() -> dict[str, int]:
    """``{"rank": ..., "world_size": ...}`` of ``torch.distributed`` when it is initialised, else one rank.

    Pass it to ``AsyncReservoir(..., **distributed_rank())`` in each data-parallel process.

    Examples
    --------
    >>> distributed_rank()  # no process group here
    {'rank': 0, 'world_size': 1}
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return {"rank": int(dist.get_rank()), "world_size": int(dist.get_world_size())}
    return {"rank": 0, "world_size": 1}


class ReservoirDataset(IterableDataset):
    """An ``IterableDataset`` yielding a reservoir's batches as tensors.

    Each ``iter()`` is one epoch of the reservoir.  Use it with
    ``DataLoader(dataset, batch_size=None, num_workers=0)``: the reservoir already
    batches and loads in the background on dask, so DataLoader workers would
    only add copies.

    Parameters
    ----------
    reservoir : AsyncReservoir
        The reservoir to iterate (its ``batch_size`` applies).
    device, pin_memory, non_blocking
        As :func:`to_tensors`.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from distributed import Client, LocalCluster
    >>> from dask_reservoir import AsyncReservoir
    >>> cluster = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
    >>> client = Client(cluster, set_as_default=False)
    >>> def load(row):
    ...     return {"x": np.full(3, row["v"], np.float32)}
    >>> r = AsyncReservoir(pd.DataFrame({"v": range(4)}), load, 4, min_reservoir_samples=4, client=client, batch_size=2)
    >>> [tuple(b["x"].shape) for b in ReservoirDataset(r)]
    [(2, 3), (2, 3)]
    >>> r.close(); client.close(); cluster.close()
    """

    def __init__(
        self,
        reservoir: AsyncReservoir,
        *,
        device: str | torch.device | None = None,
        pin_memory: bool = False,
        non_blocking: bool = False,
    ) -> None:
        super().__init__()
        self.reservoir = reservoir
        self.device = device
        self.pin_memory = pin_memory
        self.non_blocking = non_blocking

    def __reduce__(self) -> Any:
        raise RuntimeError(
            "ReservoirDataset must be used with DataLoader(num_workers=0): it cannot be sent to "
            "DataLoader worker processes (the reservoir loads in the background on dask already, "
            "and owns a runner and dask futures that cannot be pickled)"
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 0:
            raise RuntimeError(
                "ReservoirDataset must be used with DataLoader(num_workers=0): the reservoir loads "
                f"in the background on dask already, got a DataLoader worker ({info.num_workers} workers)"
            )
        for batch in self.reservoir:
            yield to_tensors(
                batch, device=self.device, pin_memory=self.pin_memory, non_blocking=self.non_blocking
            )

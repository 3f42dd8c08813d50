"""dask_reservoir: an asynchronous sample reservoir on dask.distributed.

Slow per-sample jobs (``function_to_run(row)``) run on dask workers in the
background; finished samples enter a bounded reservoir keyed by UID; the
training or analysis loop iterates batches (``dict[str, numpy.ndarray]``)
sampled from whatever is loaded now.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dask_reservoir._core.collate import collate_rows
from dask_reservoir._core.performance import Performance
from dask_reservoir._core.records import FailureRecord
from dask_reservoir._core.samplers import RandomSampler, Sampler, SequentialSampler
from dask_reservoir._core.stats import ReservoirStats
from dask_reservoir._core.weighted import BalancedSampler, WeightedSampler
from dask_reservoir.errors import (
    ClusterLostError,
    IteratorExpiredError,
    JobError,
    JobTimeoutError,
    ReservoirClosedError,
)
from dask_reservoir.reservoir import AsyncReservoir, SequenceAsyncReservoir

try:
    __version__ = version("dask_reservoir")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = [
    "AsyncReservoir",
    "BalancedSampler",
    "ClusterLostError",
    "FailureRecord",
    "IteratorExpiredError",
    "JobError",
    "JobTimeoutError",
    "Performance",
    "RandomSampler",
    "ReservoirClosedError",
    "ReservoirStats",
    "Sampler",
    "SequenceAsyncReservoir",
    "SequentialSampler",
    "WeightedSampler",
    "__version__",
    "collate_rows",
]
if sorted(__all__) != __all__:  # pragma: no cover - guards edits
    raise ImportError("dask_reservoir.__all__ must stay sorted")

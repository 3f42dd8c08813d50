"""The dask_reservoir benchmark suite: ``make bench`` or ``python -m benchmarks.run``."""

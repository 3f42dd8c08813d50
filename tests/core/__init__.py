"""Tests of the pure core (dask_reservoir/_core): no cluster, mutation-tested (make mutation)."""

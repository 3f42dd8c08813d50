"""The runtime: the only layer that starts threads and processes and holds dask futures.

The job runner and its result collector, the cluster and client handling, the lifecycle
(close at exit), progress, batch building and prefetch, and the loader process (``loader/``).
"""

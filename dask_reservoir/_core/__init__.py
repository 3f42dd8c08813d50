"""The pure core: what the reservoir decides and keeps, with no threads and no dask client.

Records and counters, options, the store and its slot table, the ledger's parts, samplers,
collate and batch formats, ingestion rules, sizing, shards, subsets and the checkpoint format.
Everything here is tested without a cluster, and mutation-tested (``make mutation``).
"""

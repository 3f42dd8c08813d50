"""The loader process, on both sides.

A child Python owns the dask client and the runner (``child``); the parent holds a handle on it
(``parent``) and a mirror of its ledger (``mirror``).
"""

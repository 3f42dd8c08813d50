"""A dask DataFrame source on a real cluster: UIDs and rows read from its own persisted partitions."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir._source.dask_source import DaskSource
from dask_reservoir._source.make import make_source


def test_dask_source_computes_only_uids(client: Client) -> None:
    pdf = pd.DataFrame({"case": [f"c{i}" for i in range(10)], "v": range(10)})
    ddf = dd.from_pandas(pdf, npartitions=3)
    src = make_source(ddf, "case", scheduler=client)
    assert isinstance(src, DaskSource)
    assert src.uids == pdf["case"].tolist()
    assert sum(src.lengths) == 10 and src.rows[0] == (0, 0) and src.rows[-1][0] == 2
    assert src.column_values("v", scheduler=client) == list(range(10))
    sub = src.subset([9, 0])
    assert sub.column_values("v", scheduler=client) == [9, 0]


def test_dask_source_without_uid_column_and_errors(client: Client) -> None:
    ddf = dd.from_pandas(pd.DataFrame({"v": range(7)}), npartitions=2)
    assert make_source(ddf, "sample_uid", scheduler=client).uids == list(range(7))
    dup = dd.from_pandas(pd.DataFrame({"uid": [1, 2, 2]}), npartitions=2)
    with pytest.raises(ValueError, match=r"duplicate UIDs \[2\]"):
        make_source(dup, "uid", scheduler=client)
    empty = dd.from_pandas(pd.DataFrame({"uid": pd.Series([], dtype="int64")}), npartitions=1)
    with pytest.raises(ValueError, match="empty dask DataFrame"):
        make_source(empty, "uid", scheduler=client)


def test_dask_source_reads_uids_and_rows_from_its_own_persisted_partitions(client: Client) -> None:
    ddf = dd.from_pandas(pd.DataFrame({"uid": range(6), "v": range(6)}), npartitions=2)
    first = make_source(ddf, "uid", scheduler=client)
    second = make_source(ddf, "uid", scheduler=client)
    child = first.subset([5, 0])
    assert isinstance(first, DaskSource) and isinstance(second, DaskSource) and isinstance(child, DaskSource)
    keys = {f.key for f in first.parts}
    assert all(str(k[0]).startswith("dask_reservoir-part-") for k in keys)
    assert keys.isdisjoint(f.key for f in second.parts)  # each source persists its own copy
    assert {f.key for f in child.parts} == keys and first.has_uid_column
    first.release()
    first.release()  # idempotent; the child keeps its own references
    assert child.column_values("v") == [5, 0]
    child.release()
    second.release()


def test_unsigned_uids_keep_their_dtype_in_a_dask_source_and_its_subsets(client: Client) -> None:
    """A dask source's UIDs arrive as Python ints: uint64 hashes became an object (or int64) array."""
    hashes = np.array([2**63, 5, 2**64 - 1, 6], np.uint64)
    ddf = dd.from_pandas(pd.DataFrame({"uid": hashes, "v": range(4)}), npartitions=2)
    small = dd.from_pandas(pd.DataFrame({"uid": np.array([3, 1], np.uint64)}), npartitions=1)
    src, low = make_source(ddf, "uid", scheduler=client), make_source(small, "uid", scheduler=client)
    try:
        assert src.uid_index.values.dtype == np.uint64 and src.uids == hashes.tolist()
        assert low.uid_index.values.dtype == np.uint64 and low.uid_index.stored_type is np.uint64
        sub = src.subset([2, 1])
        assert sub.uid_index.values.dtype == np.uint64 and sub.uids == [2**64 - 1, 5]
        assert sub.position(2**64 - 1) == 0
        sub.release()  # type: ignore[attr-defined]
    finally:
        src.release()  # type: ignore[attr-defined]
        low.release()  # type: ignore[attr-defined]

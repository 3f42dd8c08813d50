"""W6 "vectorized fill": rows/s of a cheap vectorized function, and the cost of a source's UID index.

Four ways to run the same work on 2 worker processes (same run, same machine):

- ``batched=True``: the reservoir calls the function once per chunk of rows and
  stores every produced row (capacity = the source), time to the first batch;
- row by row: the same computation per row dict, packed ``rows_per_job`` rows per
  task (on fewer rows: it is the slow path; rows/s is what compares);
- ``dask.dataframe.map_partitions(f).compute()``: what dask itself does (the floor);
- plain pandas, ``f(frame)`` in this process (the limit).

Then ``make_source`` (validation and UID index) on 1e5, 1e6 and 1e7 integer UIDs.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import RATIOS, Result, local_cluster
from dask_reservoir import AsyncReservoir
from dask_reservoir._source.make import make_source

BATCHED = "vectorized fill: batched=True"
MAP_PARTITIONS = "vectorized fill: map_partitions().compute()"
PANDAS = "vectorized fill: plain pandas, one process"


def cheap(frame: pd.DataFrame) -> pd.DataFrame:
    """A trivial vectorized function: one produced row per source row."""
    return pd.DataFrame({"uid": frame["uid"].to_numpy(), "y": frame["x"].to_numpy() * 2.0 + 1.0})


def cheap_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"y": row["x"] * 2.0 + 1.0}


def _source(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"uid": np.arange(rows, dtype=np.int64), "x": np.random.default_rng(0).random(rows)})


def _fill_seconds(client: Any, frame: pd.DataFrame, function: Any, **options: Any) -> float:
    start = time.perf_counter()
    with AsyncReservoir(
        frame,
        function,
        len(frame),
        min_reservoir_samples=len(frame),
        uid_column="uid",
        client=client,
        **options,
    ) as r:
        iter(r)  # returns once every row is stored
        seconds = time.perf_counter() - start
    return seconds


def w6_fill(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    import dask.dataframe as dd

    rows, row_rows = cfg["fill_rows"], cfg["row_by_row_rows"]
    frame = _source(rows)
    results: list[Result] = []
    ratios = {"x_map_partitions": ("rows_per_s", MAP_PARTITIONS), "x_pandas": ("rows_per_s", PANDAS)}
    with local_cluster(2, scheduler) as client:
        seconds = _fill_seconds(client, frame, cheap, batched=True, rows_per_job=cfg["chunk"])
        results.append(
            {
                "system": BATCHED,
                "rows": rows,
                "seconds": seconds,
                "rows_per_s": rows / seconds,
                RATIOS: ratios,
            }
        )
        seconds = _fill_seconds(client, _source(row_rows), cheap_row, rows_per_job=2048)
        results.append(
            {
                "system": "vectorized fill: row by row, rows_per_job=2048",
                "rows": row_rows,
                "seconds": seconds,
                "rows_per_s": row_rows / seconds,
                RATIOS: ratios,
            }
        )
        parts = dd.from_pandas(frame, npartitions=max(2, rows // cfg["chunk"]))
        with warnings.catch_warnings():  # dask warns that the frame travels in the graph: it does, once
            warnings.simplefilter("ignore", UserWarning)
            parts = client.persist(parts)  # in the workers' memory, as the reservoir's source is
        start = time.perf_counter()
        parts.map_partitions(cheap, meta={"uid": "i8", "y": "f8"}).compute(scheduler=client)
        seconds = time.perf_counter() - start
        results.append(
            {"system": MAP_PARTITIONS, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}
        )
        del parts
    start = time.perf_counter()
    cheap(frame)
    seconds = time.perf_counter() - start
    results.append({"system": PANDAS, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds})
    for n in cfg["index_sizes"]:
        big = pd.DataFrame({"uid": np.arange(n, dtype=np.int64)})
        start = time.perf_counter()
        source = make_source(big, "uid")
        source.position(n - 1)  # builds the lookup table
        seconds = time.perf_counter() - start
        results.append(
            {
                "system": f"source UID index: {n:.0e} int UIDs",
                "rows": n,
                "seconds": seconds,
                "ns_per_uid": seconds / n * 1e9,
                "index_mb": source.uid_index.nbytes() / 2**20,
            }
        )
    return results

"""W10 warm start (the persistent tier, ``cache=``) and W11 one pass (``passes=1``, ``batched=True``).

Both load every source row once (``passes=1``, capacity = the source) and time
construction to :meth:`~dask_reservoir.AsyncReservoir.wait_loaded` on a cluster started
before the clock (and warmed up by a small unmeasured reservoir, as a long-lived cluster is).

W10: a cold start without cache, a cold start that fills a fresh cache directory, then a
warm start from it (a second reservoir, same function, same source); and a plain
``pyarrow.parquet.read_table`` loop over the cache's files in this process (the limit of
reading them back).  W11: ``batched=True`` against ``dask.dataframe`` ``map_partitions``.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import Result, local_cluster, ratios
from dask_reservoir import AsyncReservoir

W10_SHAPE = (64, 64)
NO_CACHE = "cold start, no cache"
CACHE_COLD = "cold start, cache=<empty dir> (fills it)"
CACHE_WARM = "warm start, cache=<same dir>"
PYARROW = "pyarrow.parquet.read_table loop over the cache files, this process"


def slow_array_loader(row: dict[str, Any]) -> dict[str, Any]:
    """W10's loader: sleep ``row["delay"]`` seconds, return a 64x64 float32 array and a label.

    The array is random (seeded by the UID), so that its 16 KB do not compress in Parquet: the
    cache moves the bytes an image would.
    """
    time.sleep(float(row["delay"]))
    uid = int(row["sample_uid"])
    image = np.random.default_rng(uid).random(W10_SHAPE, dtype=np.float32)
    return {"image": image, "label": np.int64(uid % 10)}


def _warm_up(client: Any) -> None:
    """An unmeasured reservoir of a few rows: what only the cluster's first one costs (imports)."""
    source = pd.DataFrame({"delay": np.zeros(8)})
    with AsyncReservoir(source, slow_array_loader, 8, passes=1, client=client) as r:
        r.wait_loaded(timeout=120)


def _w10_start(client: Any, cfg: dict[str, Any], cache: str | None) -> tuple[dict[str, float], Any]:
    """Seconds from construction to the first batch and to every row loaded; the final stats."""
    rows = cfg["rows"]
    source = pd.DataFrame({"delay": np.full(rows, cfg["delay"])})
    options: dict[str, Any] = {} if cache is None else {"cache": cache}
    t0 = time.perf_counter()
    with AsyncReservoir(
        source,
        slow_array_loader,
        rows,
        min_reservoir_samples=cfg["minimum"],
        batch_size=cfg["batch"],
        passes=1,
        client=client,
        **options,
    ) as r:
        next(iter(r))
        first = time.perf_counter() - t0
        stats = r.wait_loaded(timeout=600)
        full = time.perf_counter() - t0
        if r.reservoir_size() != rows:
            raise RuntimeError(f"the reservoir holds {r.reservoir_size()} entries, not {rows}")
    return {"first_batch_s": first, "full_s": full, "rows_per_s": rows / full}, stats


def _pyarrow_loop(folder: Path) -> Result:
    """Read every cache file with ``pyarrow.parquet.read_table``, one after the other, here."""
    import pyarrow.parquet as pq

    files = sorted(folder.rglob("*.parquet"))
    size = sum(f.stat().st_size for f in files)
    t0 = time.perf_counter()
    for f in files:
        pq.read_table(f)
    seconds = time.perf_counter() - t0
    return {"system": PYARROW, "files": len(files), "cache_MB_per_s": size / seconds / 1e6}


def w10(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """Cold start, cold start filling a fresh cache, warm start from it; the read loop's limit."""
    with tempfile.TemporaryDirectory(prefix="bench-w10-") as folder, local_cluster(2, scheduler) as client:
        _warm_up(client)
        cold, _ = _w10_start(client, cfg, None)
        filling, fill_stats = _w10_start(client, cfg, folder)
        warm, warm_stats = _w10_start(client, cfg, folder)
        limit = _pyarrow_loop(Path(folder))
    return [
        {"system": NO_CACHE, **cold},
        {
            "system": CACHE_COLD,
            **filling,
            "cache_misses": fill_stats.cache_misses,
            "cache_MB_written": fill_stats.cache_bytes_written / 1e6,
            **ratios(("full_vs_no_cache", "full_s", NO_CACHE)),
        },
        {
            "system": CACHE_WARM,
            **warm,
            "cache_hits": warm_stats.cache_hits,
            "cache_misses": warm_stats.cache_misses,
            "cache_MB_read": warm_stats.cache_bytes_read / 1e6,
            "cache_MB_per_s": warm_stats.cache_bytes_read / warm["full_s"] / 1e6,
            **ratios(
                ("first_batch_vs_cold", "first_batch_s", NO_CACHE),
                ("speedup_vs_cold", "rows_per_s", NO_CACHE),
                ("read_vs_pyarrow", "cache_MB_per_s", PYARROW),
            ),
        },
        limit,
    ]


# ---------------------------------------------------------------- W11 one pass
ONE_PASS = "passes=1, batched=True (defaults), construction to wait_loaded()"
MAP_PARTITIONS = "dask.dataframe from_pandas().map_partitions().compute()"


def derive(frame: pd.DataFrame) -> pd.DataFrame:
    """W11's vectorized function: the chunk with a derived column."""
    return frame.assign(y=frame["x"].to_numpy() * 2.0 + 1.0)


def _w11_source(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"sample_uid": np.arange(rows, dtype=np.int64), "x": np.random.default_rng(0).random(rows)}
    )


def _one_pass(client: Any, source: pd.DataFrame, **options: Any) -> Result:
    rows = len(source)
    t0 = time.perf_counter()
    with AsyncReservoir(source, derive, rows, passes=1, batched=True, client=client, **options) as r:
        stats = r.wait_loaded(timeout=600)
        seconds = time.perf_counter() - t0
        if stats.rows_loaded != rows or r.reservoir_size() != rows:
            raise RuntimeError(f"loaded {stats.rows_loaded} rows, holds {r.reservoir_size()}, not {rows}")
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


def _map_partitions(client: Any, source: pd.DataFrame, npartitions: int) -> Result:
    import dask.dataframe as dd

    rows = len(source)
    t0 = time.perf_counter()
    with (
        warnings.catch_warnings()
    ):  # dask warns that the frame travels in the graph: it does, as the source does
        warnings.simplefilter("ignore", UserWarning)
        parts = dd.from_pandas(source, npartitions=npartitions)
        out = parts.map_partitions(derive).compute(scheduler=client)
    seconds = time.perf_counter() - t0
    if len(out) != rows:
        raise RuntimeError(f"map_partitions returned {len(out)} rows, not {rows}")
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "npartitions": npartitions}


def w11(cfg: dict[str, Any], scheduler: str | None) -> list[Result]:
    """Load a tiny source once with ``batched=True``; the same function through ``map_partitions``."""
    source = _w11_source(cfg["rows"])
    versus = ("x_map_partitions", "rows_per_s", MAP_PARTITIONS)
    with local_cluster(2, scheduler) as client:
        _warm_up(client)
        one_pass = _one_pass(client, source)
        chunked = _one_pass(client, source, rows_per_job=cfg["chunk"])
        dask_df = _map_partitions(client, source, max(2, cfg["rows"] // cfg["chunk"]))
    return [
        {"system": ONE_PASS, **one_pass, **ratios(versus)},
        {"system": f"passes=1, batched=True, rows_per_job={cfg['chunk']}", **chunked, **ratios(versus)},
        {"system": MAP_PARTITIONS, **dask_df},
    ]

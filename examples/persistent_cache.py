"""Compute once, keep it: a cold run fills the cache, a warm run reads it, a changed function recomputes.

Run: ``python examples/persistent_cache.py [--cache DIR]``

``cache=`` keeps every result of ``function_to_run`` on disk (one Parquet file per UID,
written by the workers), keyed by the UID, the source row and a fingerprint of the
function's code.  A second reservoir on the same cache, in this script or in another
one days later, reads the results instead of recomputing them; editing the function (or
``cache_version=``) starts afresh.  Fresh augmentation at every serve goes in
``transform=``, which is applied after the cache, so cached samples are never served
identically twice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir

ROWS = 120


def preprocess(row: dict[str, Any]) -> dict[str, Any]:
    """The expensive, deterministic part: a stand-in for reading and resampling a volume."""
    time.sleep(0.02)
    rng = np.random.default_rng(int(row["case"]))
    return {"volume": rng.normal(size=(16, 16, 16)).astype(np.float32), "label": int(row["case"]) % 4}


def preprocess_v2(row: dict[str, Any]) -> dict[str, Any]:
    """The same, with another normalisation: another fingerprint, so nothing is read from the cache."""
    time.sleep(0.02)
    rng = np.random.default_rng(int(row["case"]))
    volume = rng.normal(size=(16, 16, 16)).astype(np.float32)
    return {"volume": volume / volume.std(), "label": int(row["case"]) % 4}


def flip(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The cheap, random part, at every serve: a random flip along each axis."""
    axes = tuple(axis for axis in range(3) if rng.random() < 0.5)
    sample["volume"] = np.flip(sample["volume"], axis=axes).copy() if axes else sample["volume"]
    return sample


def fill(client: Client, cache: str, function: Any, label: str) -> None:
    cases = pd.DataFrame({"case": np.arange(ROWS)})
    start = time.perf_counter()
    with AsyncReservoir(
        cases,
        function,
        ROWS,
        client=client,
        cache=cache,
        passes=1,
        batch_size=16,
        uid_column="case",
        transform=flip,
    ) as reservoir:
        stats = reservoir.wait_loaded(timeout=300)
        seconds = time.perf_counter() - start
        batches = sum(1 for _ in reservoir)
    print(
        f"{label}: {ROWS} samples in {seconds:.2f} s, cache {stats.cache_hits} hits / {stats.cache_misses} misses, "
        f"{stats.cache_bytes_read / 1e6:.1f} MB read, {stats.cache_bytes_written / 1e6:.1f} MB written; "
        f"an epoch of {batches} augmented batches"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache directory (default: a new temporary one)")
    args = parser.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="dask_reservoir-cache-")
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        fill(client, cache, preprocess, "cold run")
        fill(client, cache, preprocess, "warm run")
        fill(client, cache, preprocess_v2, "changed function")
    files = pd.read_parquet(sorted(Path(cache).rglob("*.parquet"))[0])
    print(f"a cache file read with plain pandas: columns {list(files.columns)}")


if __name__ == "__main__":
    main()

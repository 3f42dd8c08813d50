"""Compute features for a table of cases once, then query them from any script.

Run: ``python examples/features_once.py [--cache DIR]``

The first script loads every row exactly once (``passes=1``), waits for the pass to end
(``wait_loaded()``), and analyses everything loaded with pandas.  Its results are kept
in ``cache=``; a later script (here, a second reservoir) selects cases by UID and gets
their features from the cache without recomputing them, and the cache itself is plain
Parquet that ``pandas.read_parquet`` reads without this library.
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


def features(row: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for an expensive per-case feature extractor."""
    time.sleep(0.01)
    rng = np.random.default_rng(int(row["case_id"][1:]))
    signal = rng.normal(loc=row["age"] / 50, size=256)
    return {
        "mean": float(signal.mean()),
        "energy": float((signal**2).sum()),
        "spectrum": np.abs(np.fft.rfft(signal))[:8],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="cache directory (default: a new temporary one)")
    args = parser.parse_args()
    cache = args.cache or tempfile.mkdtemp(prefix="dask_reservoir-features-")
    rng = np.random.default_rng(0)
    cases = pd.DataFrame({"case_id": [f"c{i:04d}" for i in range(400)], "age": rng.integers(20, 90, 400)})
    options: dict[str, Any] = dict(uid_column="case_id", cache=cache, passes=1)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        # script 1: every case once, then plain pandas over everything loaded
        with AsyncReservoir(cases, features, len(cases), client=client, **options) as reservoir:
            stats = reservoir.wait_loaded(timeout=300, progress=False)
            table = reservoir.to_pandas(loaded_at=False).merge(cases, on="case_id")
        print(
            f"one pass: {stats.rows_loaded} rows loaded, {stats.rows_submitted} submitted, loading done: {stats.loading_done}"
        )
        print(f"correlation age / mean feature: {table['age'].corr(table['mean']):.2f}")
        # script 2, any day later: the cases of interest, read from the cache
        wanted = cases.query("age >= 80")["case_id"].tolist()
        with AsyncReservoir(
            cases[cases["case_id"].isin(wanted)], features, len(wanted), client=client, **options
        ) as again:
            again_stats = again.wait_loaded(timeout=300)
            subset = again.to_pandas(loaded_at=False)
        print(
            f"{len(wanted)} cases aged 80 or more: {again_stats.cache_hits} read from the cache, "
            f"{again_stats.cache_misses} computed; mean energy {subset['energy'].mean():.1f}"
        )
    files = sorted(Path(cache).rglob("*.parquet"))
    raw = pd.concat([pd.read_parquet(f) for f in files[:5]], ignore_index=True)
    print(f"the cache read with plain pandas: {len(files)} files, columns {list(raw.columns)}")


if __name__ == "__main__":
    main()

"""Vectorized features over a Parquet dataset of a million rows, batches as DataFrames.

    python examples/tabular_features.py [--rows 1000000]

Writes a Parquet dataset (8 files) to a temporary directory, reads it with
``dask.dataframe.read_parquet`` selecting two of its columns (the rows stay on
the workers), and runs a vectorized ``function_to_run`` (``batched=True``) over
chunks of rows on a local cluster of 2 worker processes.  One epoch of
``batch_format="pandas"`` batches is read, then ``to_pandas()`` pulls a few UIDs
with their dtypes (a categorical and a nullable integer) kept.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir


def features(chunk: pd.DataFrame) -> pd.DataFrame:
    """One produced row per source row: a few vectorized features."""
    amount = chunk["amount"].to_numpy()
    band = pd.cut(amount, bins=[-np.inf, 10, 100, np.inf], labels=["small", "medium", "large"])
    return pd.DataFrame(
        {
            "sample_uid": chunk["sample_uid"].to_numpy(),
            "log_amount": np.log1p(amount).astype(np.float32),
            "band": band,
            "cents": pd.array(np.where(amount > 0, (amount * 100).round(), np.nan), dtype="Int64"),
        }
    )


def write_dataset(directory: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "sample_uid": np.arange(rows, dtype=np.int64),
            "amount": rng.exponential(40.0, rows).round(2),
            "comment": "unused column, never read",
        }
    )
    frame.loc[frame.index % 97 == 0, "amount"] = 0.0
    for i, part in enumerate(np.array_split(np.arange(rows), 8)):
        frame.iloc[part].to_parquet(directory / f"part.{i}.parquet", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), args.rows)
        with (
            LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            source = dd.read_parquet(tmp, columns=["sample_uid", "amount"])
            start = time.perf_counter()
            with AsyncReservoir(
                source,
                features,
                args.rows,
                min_reservoir_samples=args.rows,
                client=client,
                batched=True,
                rows_per_job=50_000,
                batch_size=65_536,
                batch_format="pandas",
            ) as reservoir:
                rows = 0
                for batch in reservoir:
                    rows += len(batch)
                seconds = time.perf_counter() - start
                print(
                    f"epoch: {rows} rows in {seconds:.1f} s ({rows / seconds:,.0f} rows/s, loading included)"
                )
                print(f"batch dtypes: {dict(batch.dtypes.astype(str))}")
                table = reservoir.to_pandas([3, 97, 42])
                print(table.drop(columns="loaded_at").to_string(index=False))
                print(f"stats: {reservoir.stats().summary()}")


if __name__ == "__main__":
    main()

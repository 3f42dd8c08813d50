"""A dask DataFrame source read from Parquet: rows are read on the workers, never on the client.

Run: ``python examples/dask_parquet.py``

The example writes a small Parquet dataset (4 files) to a temporary folder,
opens it with ``dask.dataframe.read_parquet`` and streams processed samples.
Only the UID column and partition lengths are computed on the client.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, RandomSampler


def load(row: dict[str, Any]) -> dict[str, Any]:
    """Build a sample from a row read on the worker."""
    return {"signal": np.sin(np.linspace(0, row["frequency"], 64)).astype(np.float32), "label": row["label"]}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for part in range(4):
            n = 50
            pd.DataFrame(
                {
                    "recording": [f"r{part}-{i}" for i in range(n)],
                    "frequency": np.linspace(1, 20, n) + part,
                    "label": np.arange(n) % 3,
                }
            ).to_parquet(Path(folder) / f"part-{part}.parquet")
        source = dd.read_parquet(folder)
        print(f"source: {source.npartitions} partitions, columns {list(source.columns)}")
        with AsyncReservoir(
            source,
            load,
            100,
            min_reservoir_samples=50,
            uid_column="recording",
            nb_workers=2,
            batch_size=10,
            rows_per_job=8,  # rows of one task are read from their partitions on the worker
            reservoir_sampler=RandomSampler(seed=1),
            timeout=120,
        ) as reservoir:
            for epoch in range(3):
                labels = np.concatenate([b["label"] for b in reservoir])
                print(
                    f"epoch {epoch + 1}: {len(labels)} samples, label counts {np.bincount(labels).tolist()}"
                )
            print(f"stats: {reservoir.stats().summary()}")


if __name__ == "__main__":
    main()

"""Analysis by UID: select cases with a pandas query, pull their processed samples in order.

Run: ``python examples/subsample_uids.py``

A table of cases (one row per case, ``case_id`` as UID) feeds a reservoir whose
loader "processes" each case into a volume.  An analyst selects cases with a
query, gets a new reservoir on just those UIDs (reusing what is loaded already),
and summarises the processed samples in the order asked for.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, SequentialSampler


def process_case(row: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for reading and resampling a 3-D volume."""
    time.sleep(0.005)
    rng = np.random.default_rng(int(row["case_id"][1:]))
    volume = rng.normal(loc=row["age"] / 100, scale=0.1, size=(8, 16, 16)).astype(np.float32)
    return {"volume": volume, "site": row["site"]}


def main() -> None:
    rng = np.random.default_rng(0)
    cases = pd.DataFrame(
        {
            "case_id": [f"c{i:03d}" for i in range(120)],
            "age": rng.integers(20, 90, 120),
            "site": rng.choice(["A", "B", "C"], 120),
        }
    )
    with AsyncReservoir(
        cases,
        process_case,
        120,
        min_reservoir_samples=120,
        uid_column="case_id",
        nb_workers=2,
        batch_size=8,
        timeout=120,
    ) as reservoir:
        iter(reservoir)  # load everything once
        selected = cases.query("age >= 60 and site == 'A'").sort_values("age", ascending=False)
        uids = selected["case_id"].tolist()
        print(f"{len(uids)} cases of site A aged 60 or more, oldest first")
        with reservoir.subsample_uids(uids, new_sampler=SequentialSampler()) as subset:
            print(f"subset reservoir starts with {subset.reservoir_size()} samples already loaded")
            rows = []
            for batch in subset:
                for uid, volume in zip(batch["case_id"], batch["volume"], strict=True):
                    rows.append(
                        {"case_id": uid, "mean_intensity": float(volume.mean()), "voxels": volume.size}
                    )
        summary = pd.DataFrame(rows).merge(cases, on="case_id")
        assert summary["case_id"].tolist() == uids, "samples come back in the order asked for"
        print(summary[["case_id", "age", "site", "mean_intensity"]].to_string(index=False))
        print(f"correlation age / mean intensity: {summary['age'].corr(summary['mean_intensity']):.2f}")


if __name__ == "__main__":
    main()

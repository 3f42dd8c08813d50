"""Train a small model on a local dask cluster while a slow loader fills the reservoir.

Run: ``python examples/local_training.py [--epochs 20] [--delay 0.02] [--step 0.005] [--workers 2]``

The loader stands in for reading and augmenting a sample (it sleeps ``--delay``
seconds); the "model" is a logistic regression trained with numpy, plus
``--step`` seconds per batch standing in for the GPU's work, so the example
needs nothing beyond dask_reservoir.  Watch the reservoir fill while the loop
never waits after the first epoch.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, RandomSampler

N_FEATURES = 16


def load_sample(row: dict[str, Any]) -> dict[str, Any]:
    """Slow loading: a noisy feature vector whose label depends on its mean."""
    time.sleep(row["delay"])
    rng = np.random.default_rng(row["sample_uid"])
    label = row["sample_uid"] % 2
    features = rng.normal(loc=0.5 if label else -0.5, scale=1.0, size=N_FEATURES).astype(np.float32)
    return {"features": features, "label": np.int64(label)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--step", type=float, default=0.005, help="seconds of 'GPU work' per batch")
    args = parser.parse_args()

    cases = pd.DataFrame({"delay": np.full(args.rows, args.delay)})
    weights = np.zeros(N_FEATURES, np.float32)
    start = time.perf_counter()
    batches = 0
    with AsyncReservoir(
        cases,
        load_sample,
        max_reservoir_samples=128,
        min_reservoir_samples=32,
        nb_workers=args.workers,  # an embedded LocalCluster, closed with the reservoir
        batch_size=16,
        reservoir_sampler=RandomSampler(seed=0),
        max_reservoir_replacement_size=16,  # at most 16 fresh samples per epoch
        timeout=120,
    ) as reservoir:
        for epoch in range(args.epochs):
            correct = seen = 0
            for batch in reservoir:
                x, y = batch["features"], batch["label"]
                p = 1 / (1 + np.exp(-(x @ weights)))
                weights -= 0.1 * x.T @ (p - y) / len(y)
                time.sleep(args.step)
                correct += int(((p > 0.5) == y).sum())
                seen += len(y)
                batches += 1
            s = reservoir.stats()
            print(
                f"epoch {epoch + 1:2d}: accuracy {correct / seen:.2f}, reservoir {s.reservoir_size}/"
                f"{s.max_reservoir_samples}, loaded {s.rows_loaded}, waited {s.consumer_wait_seconds:.2f} s"
            )
        stats = reservoir.stats()
    elapsed = time.perf_counter() - start
    print(f"throughput: {batches / elapsed:.1f} batches/s over {elapsed:.1f} s (cluster start included)")
    print(f"stats: {stats.summary()}")


if __name__ == "__main__":
    main()

"""Use a running dask cluster by address; this script starts nothing itself.

Start a cluster first, for example::

    dask scheduler --host 127.0.0.1 --port 8786 &
    dask worker tcp://127.0.0.1:8786 --nworkers 2 --nthreads 1 &

Then run: ``python examples/remote_scheduler.py --scheduler tcp://127.0.0.1:8786``

``load_sample`` is defined here, in a script the cluster cannot import: it
travels by value.  dask_reservoir itself need not be installed on the cluster: the
reservoir uploads its own code to a scheduler and workers that lack it (``upload_code=True``);
they need dask, distributed, pandas and numpy at this client's versions.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir


def load_sample(row: dict[str, Any]) -> dict[str, Any]:
    """Runs on a worker: report where it ran next to the data."""
    return {
        "pixels": np.full((8, 8), row["sample_uid"], np.float32),
        "worker_pid": os.getpid(),
        "host": socket.gethostname(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", required=True, help="scheduler address, e.g. tcp://127.0.0.1:8786")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    source = pd.DataFrame({"name": [f"sample-{i}" for i in range(args.rows)]})
    with AsyncReservoir(
        source, load_sample, 64, min_reservoir_samples=32, client=args.scheduler, batch_size=16, timeout=60
    ) as reservoir:
        pids: set[int] = set()
        for epoch in range(args.epochs):
            n = 0
            for batch in reservoir:
                pids.update(int(p) for p in batch["worker_pid"])
                n += len(batch["pixels"])
            print(f"epoch {epoch + 1}: {n} samples")
        s = reservoir.stats()
        print(f"scheduler {s.address}, status {s.status}, loaded by {len(pids)} worker processes")
        print(f"stats: {s.summary()}")


if __name__ == "__main__":
    main()

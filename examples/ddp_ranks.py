"""Data-parallel ranks on one cluster: each rank a process, shards per pass, equal epochs.

Run: ``python examples/ddp_ranks.py`` (starts a 2-worker cluster and 3 rank processes), or
``python examples/ddp_ranks.py --scheduler tcp://127.0.0.1:8786`` to use yours.

Each rank builds its own ``AsyncReservoir(..., rank=r, world_size=3)`` against the same
scheduler, with no communication between ranks: in every pass over the source the rows
are dealt to the ranks by a permutation each rank computes alike, and every rank's epoch
yields the same number of batches (here ``min_reservoir_samples / batch_size``), so a
collective in the training step (an all-reduce of gradients) never waits for a rank
whose epoch ended early.  In a torch job, pass ``**dask_reservoir.torch.distributed_rank()``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, RandomSampler

ROWS = 300


def load_case(row: dict[str, Any]) -> dict[str, Any]:
    """Runs on a worker: a small "volume" whose values carry its UID."""
    time.sleep(0.005)
    return {"volume": np.full((4, 4, 4), row["case"], np.float32), "label": int(row["case"]) % 3}


def run_rank(address: str, rank: int, world_size: int, epochs: int) -> None:
    source = pd.DataFrame({"case": np.arange(ROWS)})
    with AsyncReservoir(
        source,
        load_case,
        64,
        min_reservoir_samples=32,
        batch_size=8,
        uid_column="case",
        client=address,
        reservoir_sampler=RandomSampler(seed=rank),
        rank=rank,
        world_size=world_size,
        timeout=120,
    ) as reservoir:
        counts = []
        for _ in range(epochs):
            batches = 0
            for batch in reservoir:
                assert (batch["volume"][:, 0, 0, 0] == batch["case"]).all()
                batches += 1
            counts.append(batches)
        shard = reservoir.shard_uids(0)
        s = reservoir.stats()
        print(
            json.dumps(
                {
                    "rank": rank,
                    "shard_pass0": [int(u) for u in shard],
                    "batches": counts,
                    "uids_loaded": s.uids_loaded,
                    "passes": s.source_passes,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", help="scheduler address (default: start a LocalCluster)")
    parser.add_argument("--ranks", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)  # a rank process
    args = parser.parse_args()
    if args.rank is not None:
        run_rank(args.scheduler, args.rank, args.ranks, args.epochs)
        return

    from distributed import LocalCluster

    cluster = (
        None if args.scheduler else LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    )
    address = args.scheduler or cluster.scheduler_address  # type: ignore[union-attr]
    try:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--scheduler",
                    address,
                    "--ranks",
                    str(args.ranks),
                    "--epochs",
                    str(args.epochs),
                    "--rank",
                    str(rank),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for rank in range(args.ranks)
        ]
        results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        if cluster is not None:
            cluster.close()
    for r in results:
        print(
            f"rank {r['rank']}: pass-0 shard of {len(r['shard_pass0'])} UIDs, "
            f"batches per epoch {r['batches']}, {r['uids_loaded']} UIDs loaded so far"
        )
    shards = [set(r["shard_pass0"]) for r in results]
    disjoint = sum(len(s) for s in shards) == len(set().union(*shards))
    print(
        f"pass-0 shards disjoint: {disjoint}, covering the {ROWS} rows: {set().union(*shards) == set(range(ROWS))}"
    )
    print(f"equal batch counts on every rank and epoch: {len({tuple(r['batches']) for r in results}) == 1}")


if __name__ == "__main__":
    main()

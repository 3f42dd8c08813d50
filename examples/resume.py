"""Train, checkpoint each epoch, get killed, resume: the run goes on where it stopped.

Run: ``python examples/resume.py``.  It starts a 2-worker cluster, runs a trainer process
that saves ``r.state_dict()`` after every epoch (``r.save(path)``), kills it with SIGKILL
in the middle of an epoch, and starts a new trainer with ``AsyncReservoir.restore(path,
...)``: epoch numbers go on, and the reservoir refills with the members it had (they
are loaded first).  With ``deterministic=True`` the resumed epochs are the very batches
the killed run would have served.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_reservoir import AsyncReservoir, RandomSampler


def load_case(row: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.002)
    return {"image": np.full((8, 8), row["case"], np.float32)}


def reservoir_args(address: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    source = pd.DataFrame({"case": np.arange(500)})
    kwargs = {
        "min_reservoir_samples": 32,
        "batch_size": 8,
        "uid_column": "case",
        "client": address,
        "reservoir_sampler": RandomSampler(seed=0),
        "max_reservoir_replacement_size": 8,
        "deterministic": True,
        "timeout": 60,
    }
    return (source, load_case, 64), kwargs


def train(address: str, checkpoint: str, resume: bool, epochs: int) -> None:
    args, kwargs = reservoir_args(address)
    r = AsyncReservoir.restore(checkpoint, *args, **kwargs) if resume else AsyncReservoir(*args, **kwargs)
    with r:
        start = r.state_dict()["epoch"]
        if resume:
            print(
                f"resumed at epoch {start} with {len(json.loads(Path(checkpoint).read_text())['members'])} members"
            )
        for epoch in range(start, start + epochs):
            r.save(checkpoint)  # the state before this epoch: a kill during it resumes it
            first = next(iter(r))["case"][:4].tolist()  # the epoch's first UIDs (the rest is not needed here)
            print(f"epoch {epoch}: first UIDs {first}", flush=True)
            if not resume:
                time.sleep(0.5)  # the rest of the epoch's training: the kill lands here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["train", "resume"], help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        train(args.scheduler, args.checkpoint, args.role == "resume", 1000 if args.role == "train" else 3)
        return

    from distributed import LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        tempfile.TemporaryDirectory() as tmp,
    ):
        checkpoint = str(Path(tmp) / "state.json")
        cmd = [sys.executable, __file__, "--scheduler", cluster.scheduler_address, "--checkpoint", checkpoint]
        trainer = subprocess.Popen([*cmd, "--role", "train"], stdout=subprocess.PIPE, text=True)
        seen = []
        assert trainer.stdout is not None
        for line in trainer.stdout:
            seen.append(line.strip())
            print(f"trainer: {seen[-1]}")
            if len(seen) == 5:
                break
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        print(f"trainer killed (exit {trainer.returncode}) after {len(seen)} epochs")
        done = subprocess.run(
            [*cmd, "--role", "resume"], capture_output=True, text=True, timeout=120, check=True
        )
        for line in done.stdout.splitlines():
            print(f"resumed: {line}")
        killed = {line.split(":")[0]: line for line in seen}
        again = [line for line in done.stdout.splitlines() if line.split(":")[0] in killed]
        same = bool(again) and all(killed[line.split(":")[0]] == line for line in again)
        print(f"epochs served before and after the kill are identical: {same}")


if __name__ == "__main__":
    main()

"""W1 with the library's defaults, timed from the consumer's side; run it under py-spy.

``python tools/profile_w1.py [--seconds 15]`` prints the batch rate against the
step-limited rate, the share of the run spent inside ``iter()``/``next()``, and the
stall p50/p99 per batch.  To see where the stalls go::

    py-spy record -r 250 --threads --format raw -o w1.txt -- .venv/bin/python tools/profile_w1.py
    python tools/profile_w1.py --summarize w1.txt

The summary counts, for the consumer's (main) thread, the samples whose stack is
inside dask_reservoir, by the innermost dask_reservoir function, and for every other
thread, the samples not idle in a wait.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
import sys
import time

import numpy as np
import pandas as pd

DELAY, STEP, BATCH, RESERVOIR, MINIMUM, WORKERS = 0.02, 0.005, 32, 256, 64, 2
IDLE = ("select", "poll", "wait", "sleep", "acquire", "_worker", "epoll", "get (queue", "recv")


def run(seconds: float) -> None:
    """Run W1 with defaults for ``seconds`` after the first batch; print what the consumer felt."""
    import os

    if os.environ.get("SWITCH"):
        sys.setswitchinterval(float(os.environ["SWITCH"]))
    from distributed import Client, LocalCluster

    from benchmarks.common import slow_image_loader
    from dask_reservoir import AsyncReservoir, RandomSampler

    source = pd.DataFrame({"delay": np.full(2000, DELAY)})
    t_start = time.perf_counter()
    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        AsyncReservoir(
            source,
            slow_image_loader,
            RESERVOIR,
            min_reservoir_samples=MINIMUM,
            client=client,
            batch_size=BATCH,
            reservoir_sampler=RandomSampler(seed=0),
        ) as r,
    ):
        stalls: list[float] = []
        starts: list[float] = []
        first = None
        deadline = None
        while deadline is None or time.perf_counter() < deadline:
            t0 = time.perf_counter()
            it = iter(r)
            if first is not None:
                starts.append(time.perf_counter() - t0)
            while True:
                try:
                    next(it)
                except StopIteration:
                    if stalls:
                        stalls[-1] += 0.0
                    break
                now = time.perf_counter()
                if first is None:
                    first = now - t_start
                    deadline = now + seconds
                    t_run = now
                else:
                    stalls.append(now - t0)
                time.sleep(STEP)
                t0 = time.perf_counter()
                if time.perf_counter() >= deadline:
                    break
        wall = time.perf_counter() - t_run
        s = np.array(stalls)
        print(
            f"first batch {first:.2f} s; {len(s) / wall:.1f} batches/s of {1 / STEP:.0f} step-limited "
            f"({len(s) / wall * STEP:.3f}); in iter()/next() {s.sum() / wall:.1%} of the run; "
            f"stall p50 {np.percentile(s, 50) * 1e3:.2f} ms p99 {np.percentile(s, 99) * 1e3:.2f} ms; "
            f"rows_per_job {r.rows_per_job}, bound {r.max_jobs_at_once}"
        )
        e = np.array(starts)
        print(
            f"iter() alone: p50 {np.percentile(e, 50) * 1e3:.2f} ms p99 {np.percentile(e, 99) * 1e3:.2f} ms; "
            f"share of stall time {e.sum() / s.sum():.0%}"
        )
        print(r.stats().summary())


def summarize(path: str) -> None:
    """Print where a py-spy ``--format raw`` profile of :func:`run` spent its samples."""
    consumer: collections.Counter[str] = collections.Counter()
    others: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        thread = frames[0]
        if "MainThread" in thread or "main" in thread.lower().split()[0:1]:
            inside = [f for f in frames if "dask_reservoir/" in f and "tools/profile" not in f]
            total += n
            if inside:
                consumer[re.sub(r" \(.*", "", inside[-1])] += n
            else:
                consumer["<outside the library>"] += n
        else:
            leaf = frames[-1]
            if not any(word in leaf for word in IDLE):
                others[f"{thread[:40]} :: {re.sub(r' [(].*', '', leaf)}"] += n
    print(f"consumer thread: {total} samples")
    for name, n in consumer.most_common(15):
        print(f"  {n:6d} {n / max(total, 1):6.1%}  {name}")
    print("other threads, busy samples by leaf:")
    for name, n in others.most_common(15):
        print(f"  {n:6d}  {name}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--summarize", default=None, help="a py-spy --format raw file to summarize")
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize)
    else:
        sys.path.insert(0, ".")
        run(args.seconds)

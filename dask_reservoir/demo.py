"""The demo job: a slow loader feeding a training-like loop through a reservoir.

``python -m dask_reservoir demo`` (and ``make demo``) runs :func:`run_demo`.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import pandas as pd

from dask_reservoir._core.samplers import RandomSampler
from dask_reservoir.reservoir import AsyncReservoir

__all__ = ["DemoResult", "run_demo", "slow_loader"]

RATE_WINDOW = 1.0
"""Seconds over which each epoch line's batches/s is measured (at least the last epoch)."""


def slow_loader(row: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``row["delay"]`` seconds, then return an image and a label (a stand-in for a slow read)."""
    time.sleep(float(row["delay"]))
    rng = np.random.default_rng(int(row["sample_uid"]))
    return {
        "image": rng.standard_normal((3, 64, 64), dtype=np.float32),
        "label": np.int64(row["sample_uid"] % 10),
    }


@dataclass(frozen=True)
class DemoResult:
    """What the demo measured."""

    epochs: int
    batches: int
    samples: int
    seconds: float
    first_batch_seconds: float
    batches_per_second: float
    distinct_uids: int
    wait_fraction: float
    steady_batches_per_second: float
    steady_wait_fraction: float
    stall_seconds_p50: float
    stall_seconds_p99: float


def run_demo(
    *,
    rows: int = 400,
    delay: float = 0.02,
    workers: int = 2,
    scheduler: str | None = None,
    reservoir: int = 128,
    minimum: int = 32,
    batch_size: int = 16,
    epochs: int = 100,
    step: float = 0.005,
    out: TextIO | None = None,
) -> DemoResult:
    """Stream batches from a slow loader and print throughput and stats.

    Parameters
    ----------
    rows : int
        Source rows (one job each).
    delay : float
        Seconds each job sleeps, standing in for a slow read and augmentation.
    workers : int
        Worker processes of the embedded LocalCluster (ignored with ``scheduler``).
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://127.0.0.1:8786``.
    reservoir, minimum, batch_size : int
        Reservoir capacity, the minimum before the first epoch, and entries per batch.
    epochs : int
        Epochs to run.
    step : float
        Seconds the "training step" takes per batch.
    out : file, optional
        Where to print (default ``sys.stdout``).
    """
    out = out or sys.stdout
    source = pd.DataFrame({"delay": np.full(rows, delay)})
    start = time.perf_counter()
    where = scheduler or f"an embedded LocalCluster of {workers} worker processes"
    print(f"dask_reservoir demo: {rows} rows, loader {delay * 1000:.0f} ms/row, on {where}", file=out)
    batches = samples = 0
    first_batch = None
    first_batch_at = waited_before = 0.0
    seen: set[int] = set()
    marks: deque[tuple[float, int]] = deque()  # (time, batches) at the first batch and each epoch's end
    with AsyncReservoir(
        source,
        slow_loader,
        reservoir,
        min_reservoir_samples=minimum,
        client=scheduler,
        nb_workers=None if scheduler else workers,
        batch_size=batch_size,
        reservoir_sampler=RandomSampler(seed=0),
        timeout=120,
    ) as r:
        for epoch in range(epochs):
            for batch in r:
                if first_batch is None:
                    first_batch_at = time.perf_counter()
                    first_batch = first_batch_at - start
                    waited_before = r.stats().consumer_wait_seconds
                    marks.append((first_batch_at, 1))  # the rate counts the batches after the first
                time.sleep(step)  # the training step
                batches += 1
                samples += len(batch["label"])
                seen.update(int(u) for u in batch["sample_uid"])
            s = r.stats()
            now = time.perf_counter()
            rate = _recent_rate(marks, now, batches)
            marks.append((now, batches))
            line = (
                f"epoch {epoch + 1:>3}/{epochs}  {rate:7.1f} batches/s  "
                f"reservoir {s.reservoir_size}/{s.max_reservoir_samples}  loaded {s.rows_loaded} rows  "
                f"distinct served {len(seen)}  waited {s.consumer_wait_seconds:.2f} s  workers {s.workers}"
            )
            if s.rows_failed or s.workers_lost:
                line += f"  failed {s.rows_failed} rows  workers lost {s.workers_lost}"
            line_end = "\r" if out.isatty() and epoch + 1 < epochs else "\n"
            print(line, file=out, end=line_end, flush=True)
        stats = r.stats()
    end = time.perf_counter()
    seconds = end - start
    steady = max(end - first_batch_at, 1e-9)
    result = DemoResult(
        epochs=epochs,
        batches=batches,
        samples=samples,
        seconds=seconds,
        first_batch_seconds=first_batch or 0.0,
        batches_per_second=batches / seconds,
        distinct_uids=len(seen),
        wait_fraction=stats.consumer_wait_seconds / seconds,
        steady_batches_per_second=(batches - 1) / steady,
        steady_wait_fraction=(stats.consumer_wait_seconds - waited_before) / steady,
        stall_seconds_p50=stats.stall_seconds_p50,
        stall_seconds_p99=stats.stall_seconds_p99,
    )
    started = "connecting to the scheduler" if scheduler else "cluster start"
    print(
        f"done: {batches} batches ({samples} samples) in {seconds:.2f} s; first batch after "
        f"{result.first_batch_seconds:.2f} s ({started} included); after it, "
        f"{result.steady_batches_per_second:.1f} batches/s, the loop spent "
        f"{100 * result.steady_wait_fraction:.1f}% of the time inside iter()/next() (per batch: p50 "
        f"{result.stall_seconds_p50 * 1e3:.2f} ms, p99 {result.stall_seconds_p99 * 1e3:.2f} ms; the step "
        f"is {step * 1000:.0f} ms per batch)",
        file=out,
    )
    print(f"stats: {stats.summary()}", file=out)
    return result


def _recent_rate(marks: deque[tuple[float, int]], now: float, batches: int) -> float:
    """Batches per second over about the last :data:`RATE_WINDOW` seconds (at least the last epoch).

    ``marks`` holds ``(time, batches so far)`` from the first batch on; those older than
    the window are dropped, but the newest of them stays as the window's start.

    Examples
    --------
    >>> marks = deque([(0.0, 1), (0.5, 50), (1.5, 150)])
    >>> _recent_rate(marks, 2.0, 200)  # from the mark at 0.5 s, the last one at least 1 s old
    100.0
    >>> _recent_rate(deque(), 2.0, 0)  # no batch yet
    0.0
    """
    while len(marks) > 1 and now - marks[1][0] >= RATE_WINDOW:
        marks.popleft()
    if not marks or now <= marks[0][0]:
        return 0.0
    at, done = marks[0]
    return (batches - done) / (now - at)

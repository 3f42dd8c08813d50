"""Helpers for the tests: polling with a deadline, loaders, frames."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster


def poll_for(
    predicate: Callable[[], bool], *, timeout: float = 10.0, period: float = 0.01, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` is true; fail with a message after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached after {timeout} seconds")
        time.sleep(period)


@contextmanager
def threaded_cluster(workers: int) -> Iterator[Client]:
    """A client of a fresh threaded LocalCluster of ``workers`` single-thread workers."""
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@contextmanager
def local_process_cluster(workers: int = 2) -> Iterator[LocalCluster]:
    """A LocalCluster of ``workers`` single-thread worker processes (with nannies) on 127.0.0.1."""
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as cluster:
        yield cluster


def scheduler_task_count(client: Client) -> int:
    """Tasks the scheduler holds."""
    return int(client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)))


def frame(n: int, **extra: Any) -> pd.DataFrame:
    """A source of ``n`` rows with a ``value`` column."""
    return pd.DataFrame({"value": np.arange(n, dtype=np.int64), **extra})


def load_value(row: dict[str, Any]) -> dict[str, Any]:
    """A fast loader: an image and a label derived from the row."""
    v = int(row["value"])
    return {"image": np.full((2, 3), v, dtype=np.float32), "label": v}


# In-process (threaded) clusters run tasks in this process, so a module-level
# gate lets a test hold jobs until it says so.
GATE = threading.Event()


def gated_load(row: dict[str, Any]) -> dict[str, Any]:
    """Wait for GATE (at most 30 s), then load."""
    GATE.wait(30)
    return load_value(row)


def library_stacks() -> str:
    """Where each thread of dask_reservoir (and distributed's event loop) is now: for a stall's report."""
    import sys
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = []
    for ident, frame in sys._current_frames().items():
        name = names.get(ident, "?")
        if name.startswith("dask_reservoir") or "IO loop" in name or "Profile" in name:
            stacks.append(f"--- thread {name}\n" + "".join(traceback.format_stack(frame)[-12:]))
    return "\n".join(stacks)


def iterate_until(
    reservoir: Any,
    predicate: Callable[[], bool],
    *,
    timeout: float = 60.0,
    check: Callable[[Any], None] | None = None,
) -> int:
    """Run epochs (checking each batch) until ``predicate()``; return the epochs run.

    Loading only goes on while someone ingests, so waiting for loads means iterating.
    """
    deadline = time.monotonic() + timeout
    epochs = 0
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"condition not reached after {timeout} seconds and {epochs} epochs; "
                f"{reservoir!r}\n{library_stacks()}"
            )
        for batch in reservoir:
            if check is not None:
                check(batch)
        epochs += 1
    return epochs

"""Lifecycle under load: thousands of epochs, bounded futures, tasks, threads and memory."""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np
import psutil
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, RandomSampler
from tests.utils import frame, poll_for, scheduler_task_count

pytestmark = pytest.mark.timeout(240)

EPOCHS = 2000
FRESH_PER_EPOCH = 2


def fast_or_failing(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    if v == 3:
        raise OSError("corrupt file 3")
    return {"x": np.full(256, v, dtype=np.float32), "label": v}


def measure(client: Client) -> dict[str, float]:
    gc.collect()
    return {
        "futures": len(client.futures),
        "scheduler_tasks": scheduler_task_count(client),
        "threads": threading.active_count(),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
    }


def test_soak_thousands_of_epochs(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    with AsyncReservoir(
        frame(40),
        fast_or_failing,
        16,
        min_reservoir_samples=8,
        client=client,
        batch_size=4,
        reservoir_sampler=RandomSampler(seed=0),
        max_failures_per_uid=None,
        max_jobs_at_once=8,
    ) as r:
        for _ in range(200):  # warm-up
            for _batch in r:
                pass
        start = measure(client)
        samples = 0
        for _ in range(EPOCHS):
            for batch in r:
                samples += len(batch["label"])
                assert (batch["x"][:, 0] == batch["label"]).all()
            # the "training step": long enough for a few fresh loads, so the reservoir churns
            poll_for(lambda: r.stats().entries_waiting >= FRESH_PER_EPOCH, period=0.001, what="fresh loads")
        end = measure(client)
        s = r.stats()
        with capsys.disabled():
            print(
                f"\nsoak: {EPOCHS} epochs, {samples} samples, {s.rows_loaded} loads, {s.rows_failed} failures"
            )
            print(f"soak: start {start}\nsoak: end   {end}")
        bound = 8 + 1  # max_jobs_at_once one-row tasks, plus the function, sent once per reservoir
        assert end["futures"] <= bound and end["scheduler_tasks"] <= bound
        assert end["threads"] == start["threads"]
        assert end["rss_mb"] - start["rss_mb"] < 50, (start, end)
        # every failure accounted for, every submitted row accounted for
        (failure,) = s.failures
        assert failure.uid == 3 and failure.exc_type == "OSError" and failure.count == s.rows_failed > 10
        assert s.rows_loaded > EPOCHS * FRESH_PER_EPOCH and s.entries_evicted > EPOCHS
        assert s.rows_submitted == s.rows_loaded + s.rows_failed + s.rows_requeued + s.rows_in_flight
        assert s.rows_cancelled == 0 and s.rows_requeued == 0  # nothing was lost or cancelled under us
        assert 3 not in {int(u) for _ in range(3) for b in r for u in b["sample_uid"]}
        assert s.epochs == 200 + EPOCHS

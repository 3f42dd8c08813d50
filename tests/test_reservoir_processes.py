"""The main reservoir behaviours on a process LocalCluster, pandas and dask sources.

On a threaded cluster results never cross a process boundary and functions go by
reference; here results are pickled back from worker processes, the function of
this test module travels as the cluster imports it, and dask sources are read on
the workers.  Module state is not shared with the workers: the functions here are
pure.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, JobError, RandomSampler, ReservoirClosedError
from tests.utils import frame, iterate_until, local_process_cluster, poll_for


def volume(row: dict[str, Any]) -> dict[str, Any]:
    """A sample whose every value derives from its UID, so a mix-up is visible."""
    v = int(row["value"])
    return {
        "image": np.full((4, 5), v, dtype=np.float32),
        "label": v,
        "when": np.datetime64("2026-01-01", "D") + np.timedelta64(v, "D"),
        "name": f"case-{v}",
    }


def odd_fails(row: dict[str, Any]) -> dict[str, Any]:
    if int(row["value"]) % 2:
        raise ValueError(f"corrupt case {row['value']}")
    return volume(row)


def check_batch(batch: dict[str, np.ndarray]) -> None:
    """Each row's data belongs to its UID."""
    uids = batch["sample_uid"].astype(np.int64)
    assert (batch["label"] == uids).all()
    assert (batch["image"] == uids[:, None, None]).all()
    assert [str(n) for n in batch["name"]] == [f"case-{u}" for u in uids]
    expected = np.datetime64("2026-01-01", "D") + uids.astype("timedelta64[D]")
    assert (batch["when"] == expected).all()


SOURCES: dict[str, Callable[[int], Any]] = {
    "pandas": frame,
    "dask": lambda n: dd.from_pandas(frame(n), npartitions=3),
}


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_ingest_and_serve_across_processes(process_client: Client, kind: str) -> None:
    source = SOURCES[kind](30)
    with AsyncReservoir(
        source,
        volume,
        12,
        min_reservoir_samples=12,
        client=process_client,
        batch_size=5,
        reservoir_sampler=RandomSampler(seed=1),
        rows_per_job=2,
    ) as r:
        # enough epochs that every slot is replaced several times
        iterate_until(r, lambda: r.stats().entries_ingested >= 60, check=check_batch)
        s = r.stats()
        assert s.reservoir_size == 12 and s.entries_evicted >= 40 and not s.failures
        assert s.rows_submitted == s.rows_loaded + s.rows_failed + s.rows_requeued + s.rows_in_flight


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_subsample_uids_across_processes(process_client: Client, kind: str) -> None:
    with AsyncReservoir(
        SOURCES[kind](20), volume, 20, min_reservoir_samples=10, client=process_client, batch_size=4
    ) as r:
        list(r)
        with r.subsample_uids([17, 3, 11]) as child:
            batches = list(child)
            for batch in batches:
                check_batch(batch)
            assert [int(u) for b in batches for u in b["sample_uid"]] == [17, 3, 11]
        # the parent keeps loading after its child closed
        before = r.stats().rows_loaded
        iterate_until(r, lambda: r.stats().rows_loaded >= before + 20, check=check_batch)


def test_failures_and_quarantine_across_processes(process_client: Client) -> None:
    with AsyncReservoir(
        frame(8), odd_fails, 8, min_reservoir_samples=4, client=process_client, max_failures_per_uid=2
    ) as r:
        iterate_until(r, lambda: len(r.stats().quarantined) == 4, check=check_batch)
        s = r.stats()
        assert sorted(s.quarantined) == [1, 3, 5, 7]
        assert all(f.exc_type == "ValueError" and f"corrupt case {f.uid}" in f.message for f in s.failures)
        assert "odd_fails" in s.quarantined[3].traceback


def test_on_error_raise_across_processes(process_client: Client) -> None:
    with AsyncReservoir(
        frame(4), odd_fails, 4, min_reservoir_samples=2, client=process_client, on_error="raise"
    ) as r:
        with pytest.raises(JobError) as info:
            iterate_until(r, lambda: False, timeout=60)
        assert info.value.uid in (1, 3) and isinstance(info.value.__cause__, ValueError)


def test_close_releases_everything_across_processes(process_client: Client) -> None:
    r = AsyncReservoir(frame(50), volume, 10, min_reservoir_samples=10, client=process_client, batch_size=5)
    it = iter(r)
    check_batch(next(it))
    r.close()
    r.close()
    with pytest.raises(ReservoirClosedError):
        next(it)
    s = r.stats()
    assert s.status == "closed" and s.rows_in_flight == 0
    assert s.rows_submitted == s.rows_loaded + s.rows_failed + s.rows_requeued + s.rows_cancelled
    poll_for(lambda: not process_client.futures, what="every future released")


def test_pandas_extension_dtypes_reach_the_function(process_client: Client) -> None:
    source = pd.DataFrame(
        {
            "value": pd.array([0, 1, 2], dtype="Int64"),
            "site": pd.Categorical(["a", "b", "a"]),
            "seen": pd.to_datetime(["2026-01-01", "2026-01-02", None]),
        }
    )

    def describe(row: dict[str, Any]) -> dict[str, Any]:
        return {"label": int(row["value"]), "site": str(row["site"]), "missing": bool(pd.isna(row["seen"]))}

    with AsyncReservoir(source, describe, 3, min_reservoir_samples=3, client=process_client) as r:
        rows = {
            int(u): (str(s), bool(m))
            for b in r
            for u, s, m in zip(b["sample_uid"], b["site"], b["missing"], strict=True)
        }
    assert rows == {0: ("a", False), 1: ("b", False), 2: ("a", True)}


@pytest.mark.parametrize("dask_source", [False, True])
def test_batches_built_ahead_equal_batches_built_in_next(process_client: Client, dask_source: bool) -> None:
    """Results crossing processes, a full reservoir reloaded every pass: same batches either way."""
    n = 24
    source: Any = frame(n) if not dask_source else dd.from_pandas(frame(n), npartitions=3)
    epochs: dict[int, list[list[int]]] = {}
    for prefetch in (0, 2):
        with AsyncReservoir(
            source,
            volume,
            n,
            min_reservoir_samples=n,
            client=process_client,
            batch_size=5,
            reservoir_sampler=RandomSampler(seed=3),
            prefetch_batches=prefetch,
        ) as r:
            seen = []
            for _ in range(6):  # reloads of the same UIDs replace entries as epochs go
                uids = []
                for batch in r:
                    check_batch(batch)
                    uids.append(batch["sample_uid"].astype(int).tolist())
                seen.append(uids)
            epochs[prefetch] = [[u for b in e for u in b] for e in seen]
            assert r.stats().batches_served == sum(len(e) for e in seen)
    # the same seeded order of the same UIDs in every epoch: building ahead changes nothing
    assert epochs[0] == epochs[2]
    assert all(sorted(e) == list(range(n)) for e in epochs[2])


def slow_volume(row: dict[str, Any]) -> dict[str, Any]:
    """A slow load, so that tasks are running on a worker when it is killed."""
    time.sleep(0.05)
    return volume(row)


def test_a_lost_worker_shows_in_stats() -> None:
    """A worker killed mid-run: its rows that dask re-runs, the loss and the worker count show (issue 16, point 10)."""
    with (
        local_process_cluster(2) as cluster,
        Client(cluster, set_as_default=False) as client,
        AsyncReservoir(
            frame(40),
            slow_volume,
            40,
            min_reservoir_samples=4,
            client=client,
            batch_size=4,
            max_jobs_at_once=8,
        ) as r,
    ):
        for batch in r:
            check_batch(batch)
        poll_for(lambda: r.stats().workers == 2, what="the runner to see both workers")
        assert r.stats().workers_lost == 0 and r.stats().rows_rerun == 0
        victim_address, victim = next(iter(client.run(os.getpid).items()))

        def running_on_victim() -> bool:
            return any(str(k).startswith("dask_reservoir-load") for k in client.processing()[victim_address])

        poll_for(running_on_victim, what="a task running on the victim")
        os.kill(victim, signal.SIGKILL)
        iterate_until(r, lambda: r.stats().workers_lost == 1 and r.stats().rows_rerun > 0, check=check_batch)
        s = r.stats()
        assert s.rows_rerun <= s.rows_submitted
        assert f"({s.workers_lost} lost, {s.rows_rerun} rows re-run)" in s.summary()
        assert "workers_lost=1" in repr(r)

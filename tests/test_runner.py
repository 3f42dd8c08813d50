"""The job runner against real clusters: futures of its own, results that take their time, a cluster that changes."""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import dask.dataframe as dd
import distributed
import numpy as np
import pandas as pd
import pytest
from distributed import Client, Future, LocalCluster

from dask_reservoir import AsyncReservoir
from tests import utils
from tests.utils import frame, gated_load, iterate_until, load_value, poll_for

pytestmark = pytest.mark.timeout(180)


def check_batch(batch: dict[str, np.ndarray]) -> None:
    """Each row's payload is its own UID's."""
    assert batch["label"].tolist() == batch["sample_uid"].tolist()


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    utils.GATE.clear()
    try:
        yield utils.GATE
    finally:
        utils.GATE.set()


def _scheduler_keys(client: Client, prefix: str) -> list[str]:
    def keys(dask_scheduler: Any, prefix: str) -> list[str]:
        return [str(k) for k in dask_scheduler.tasks if str(k).startswith(prefix)]

    return list(client.run_on_scheduler(keys, prefix=prefix))


def _force_cancel(client: Client, keys: list[Any]) -> None:
    """What another client (or a user with a stray key) can do to any key."""
    futures = [Future(k, client) for k in keys]
    client.cancel(futures, force=True)
    del futures


# ---------------------------------------------------------------- futures of its own
def test_closing_one_reservoir_leaves_others_on_the_same_frame_loading(client: Client) -> None:
    ddf = dd.from_pandas(frame(40), npartitions=4)
    first = AsyncReservoir(ddf, load_value, 40, min_reservoir_samples=40, client=client)
    second = AsyncReservoir(ddf, load_value, 40, min_reservoir_samples=40, client=client)
    child = first.subsample_uids(list(range(0, 40, 2)))
    try:
        for r in (first, second, child):
            for batch in r:
                check_batch(batch)
        first.close()
        for r in (second, child):
            done = r.stats().rows_loaded
            iterate_until(
                r, lambda r=r, done=done: r.stats().rows_loaded >= done + 60, timeout=30, check=check_batch
            )
            stats = r.stats()
            assert stats.rows_requeued == 0 and stats.failures == ()
    finally:
        for r in (child, second, first):
            r.close()


def test_partitions_cancelled_by_someone_else_are_persisted_again(client: Client) -> None:
    ddf = dd.from_pandas(frame(30), npartitions=3)
    with AsyncReservoir(ddf, load_value, 30, min_reservoir_samples=30, client=client) as r:
        list(r)
        parts = _scheduler_keys(client, "('dask_reservoir-part-")
        assert parts
        _force_cancel(client, [eval(k) for k in parts])  # keys are (name, index) tuples
        done = r.stats().rows_loaded
        iterate_until(r, lambda: r.stats().rows_loaded >= done + 60, timeout=60, check=check_batch)
        assert r.stats().failures == ()


def test_tasks_cancelled_by_someone_else_back_off_then_fail(client: Client, gate: threading.Event) -> None:
    with AsyncReservoir(frame(1), gated_load, 1, client=client, max_failures_per_uid=None) as r:
        seen: set[str] = set()
        for _ in range(3):

            def fresh() -> bool:
                return bool(set(_scheduler_keys(client, "dask_reservoir-load-")) - seen)

            poll_for(fresh, timeout=30, what="the rows to be submitted again")
            new = sorted(set(_scheduler_keys(client, "dask_reservoir-load-")) - seen)
            seen.update(new)
            _force_cancel(client, new)
        poll_for(lambda: bool(r.stats().failures), timeout=30, what="the failure to be recorded")
        (failure,) = r.stats().failures
        assert failure.uid == 0 and failure.exc_type == "JobError"
        assert "cancelled by someone other than this reservoir, 3 times in a row" in failure.message
        assert r.stats().rows_requeued == 2


# ---------------------------------------------------------------- results that take their time
SLOW_UNPICKLE_SECONDS = 7.0
"""Longer than the 5 s after which the old runner gave up on a result (one slow transfer)."""


def _arrive_slowly() -> float:
    threading.Event().wait(SLOW_UNPICKLE_SECONDS)  # a 500 MB volume on a busy link
    return 1.0


class SlowToArrive:
    """Unpickled (on the client) only after ``SLOW_UNPICKLE_SECONDS``."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_arrive_slowly, ())


def slow_result(row: dict[str, Any]) -> dict[str, Any]:
    # past distributed.comm.offload (10 MiB): unpickled in a thread, the event loop stays free
    pad = np.zeros(12 * 2**20, dtype=np.uint8)
    return {"blob": SlowToArrive(), "pad": pad, "label": int(row["value"])}


def test_slow_result_is_never_given_up(process_client: Client) -> None:
    with AsyncReservoir(
        frame(1), slow_result, 1, client=process_client, timeout=120, max_jobs_at_once=1
    ) as r:
        (batch,) = list(r)
        assert batch["blob"].tolist() == [1.0]
        stats = r.stats()
        assert stats.rows_requeued == 0 and stats.failures == () and stats.rows_loaded >= 1


class Unreadable:
    """Pickles on the worker, never unpickles on the client."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def _refuse() -> None:
    if not _in_worker():
        raise OSError("cannot rebuild this result here")


def _in_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def unreadable_result(row: dict[str, Any]) -> dict[str, Any]:
    return {"blob": Unreadable(), "label": int(row["value"])}


def test_result_that_cannot_be_fetched_fails_after_a_few_tries(process_client: Client) -> None:
    with AsyncReservoir(
        frame(1), unreadable_result, 1, client=process_client, max_failures_per_uid=None
    ) as r:
        poll_for(lambda: bool(r.stats().failures), timeout=60, what="the failure to be recorded")
        (failure,) = r.stats().failures
        assert failure.uid == 0 and "could not be fetched" in failure.message
        assert "cannot rebuild this result here" in failure.message


# ---------------------------------------------------------------- a dask source read twice differs
def _shuffle_freshly(part: pd.DataFrame) -> pd.DataFrame:
    """Row order changes at every compute (a non-deterministic read)."""
    return part.sample(frac=1.0, random_state=np.random.default_rng())


def test_dask_source_rows_match_their_uids_when_reads_differ(client: Client) -> None:
    base = pd.DataFrame({"sample_uid": np.arange(40), "value": np.arange(40)})
    ddf = dd.from_pandas(base, npartitions=4).map_partitions(_shuffle_freshly)
    with AsyncReservoir(ddf, load_value, 40, min_reservoir_samples=40, client=client, batch_size=8) as r:
        iterate_until(r, lambda: r.stats().rows_loaded >= 80, timeout=60, check=check_batch)
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == list(range(40))
        assert r.stats().failures == ()


# ---------------------------------------------------------------- the function travels once
def test_function_travels_once_not_with_every_task(client: Client, gate: threading.Event) -> None:
    big = np.arange(1_000_000, dtype=np.float64)  # 8 MB in the closure

    def load(row: dict[str, Any]) -> dict[str, Any]:
        utils.GATE.wait(30)
        return {"x": float(big[int(row["value"])])}

    def spec_sizes(dask_scheduler: Any) -> dict[str, int]:
        return {
            str(k): len(pickle.dumps(ts.run_spec))
            for k, ts in dask_scheduler.tasks.items()
            if str(k).startswith("dask_reservoir-")
        }

    with AsyncReservoir(frame(8), load, 8, min_reservoir_samples=8, client=client, max_jobs_at_once=4) as r:
        poll_for(
            lambda: len(_scheduler_keys(client, "dask_reservoir-load-")) == 4,
            what="four jobs on the scheduler",
        )
        sizes = client.run_on_scheduler(spec_sizes)
        loads = [n for k, n in sizes.items() if k.startswith("dask_reservoir-load-")]
        assert len(loads) == 4 and max(loads) < 100_000, sizes
        assert sum(n > big.nbytes for n in sizes.values()) == 1, sizes
        gate.set()
        assert len(list(r)) == 8


# ---------------------------------------------------------------- job_timeout keeps the worker context
def where_am_i(row: dict[str, Any]) -> dict[str, Any]:
    return {"worker": distributed.get_worker().address, "label": int(row["value"])}


def test_job_timeout_runs_in_the_worker_context(client: Client) -> None:
    with AsyncReservoir(
        frame(4), where_am_i, 4, min_reservoir_samples=4, client=client, job_timeout="60s"
    ) as r:
        workers = {w for b in r for w in b["worker"].tolist()}
        assert workers <= set(client.nthreads()) and r.stats().failures == ()


# ---------------------------------------------------------------- a cluster that changes
def test_bound_follows_workers_that_join_after_construction() -> None:
    with (
        LocalCluster(
            n_workers=0,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        AsyncReservoir(
            frame(40), load_value, 40, min_reservoir_samples=40, client=client, timeout=60, rows_per_job=1
        ) as r,
    ):
        assert r.max_jobs_at_once == 8  # no worker yet: the fewest tasks kept in flight
        cluster.scale(6)
        poll_for(lambda: r.max_jobs_at_once == 12, timeout=30, what="the bound to follow the workers")
        assert sorted(int(u) for b in r for u in b["sample_uid"]) == list(range(40))


def slow_load(row: dict[str, Any]) -> dict[str, Any]:
    """A job that runs long enough to be cancelled while a worker executes it."""
    import time

    time.sleep(0.3)
    return load_value(row)


def _our_executing(dask_worker: Any = None) -> int:
    state = dask_worker.state
    return sum(
        1 for ts in [*state.executing, *state.long_running] if str(ts.key).startswith("dask_reservoir-")
    )


def test_close_returns_once_the_workers_stopped_running_its_cancelled_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 16, point 11: closing the cluster right after the reservoir cut its running tasks off.

    Each worker then logged "Async instruction ... ended with CancelledError".
    """
    worker_log = logging.getLogger("distributed.worker.state_machine")
    level = worker_log.level
    worker_log.addHandler(caplog.handler)
    try:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            worker_log.setLevel(logging.WARNING)
            r = AsyncReservoir(frame(8), slow_load, 8, client=client, rows_per_job=1)
            poll_for(lambda: sum(client.run(_our_executing).values()) == 2, what="both workers running a job")
            r.close()
            assert sum(client.run(_our_executing).values()) == 0
    finally:
        worker_log.removeHandler(caplog.handler)
        worker_log.setLevel(level)
    assert "ended with CancelledError" not in caplog.text

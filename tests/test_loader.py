"""``loader="process"``: a loader process owns the dask client; entries cross to the consumer.

Every test runs on a process ``LocalCluster`` (the loader needs a scheduler address).
The whole suite also runs with ``DASK_DASK_RESERVOIR__LOADER=auto`` (``make test``),
so every reservoir on a process or remote cluster goes through a loader process there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pytest
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir, JobError, SequentialSampler
from dask_reservoir._runtime.loader.parent import CONFIG_KEY
from tests.utils import frame, iterate_until, poll_for, scheduler_task_count


def volume(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {"image": np.full((8, 8), v, dtype=np.float32), "label": v, "name": f"case-{v}"}


def fails_on_odd(row: dict[str, Any]) -> dict[str, Any]:
    if int(row["value"]) % 2:
        raise ZeroDivisionError(f"case {row['value']}")
    return volume(row)


class FailsToUnpickleInTheConsumer:
    """Unpickles anywhere but in the process whose pid is in ``DASK_RESERVOIR_TEST_CONSUMER``."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_or_fail, (self.v,))


def _rebuild_or_fail(v: int) -> FailsToUnpickleInTheConsumer:
    if os.environ.get("DASK_RESERVOIR_TEST_CONSUMER") == str(os.getpid()):
        raise MemoryError("no memory for this result in the consumer")
    return FailsToUnpickleInTheConsumer(v)


def unreadable_here(row: dict[str, Any]) -> dict[str, Any]:
    return {"obj": FailsToUnpickleInTheConsumer(int(row["value"])), "label": int(row["value"])}


class HoldsALockOnceUnpickled:
    """Pickles on the worker; once unpickled (in the loader) it holds a lock and pickles no more."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()


def three_cannot_travel(row: dict[str, Any]) -> dict[str, Any]:
    v = int(row["value"])
    return {"obj": HoldsALockOnceUnpickled(v) if v == 3 else v, "label": v}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _check(batch: dict[str, Any]) -> None:
    labels = batch["label"]
    assert np.array_equal(batch["sample_uid"], labels)
    assert np.array_equal(batch["image"][:, 0, 0], labels.astype(np.float32))
    assert list(batch["name"]) == [f"case-{v}" for v in labels]


def test_entries_cross_from_the_loader_process_with_their_own_values(process_client: Client) -> None:
    with AsyncReservoir(
        frame(60), volume, 40, min_reservoir_samples=40, client=process_client, batch_size=8, loader="process"
    ) as r:
        pid = r._runner.pid
        assert pid is not None and _alive(pid) and pid != os.getpid()
        seen: set[int] = set()
        for _ in range(5):  # entries are replaced between epochs: slots are reused
            for batch in r:
                _check(batch)
                seen.update(int(v) for v in batch["label"])
        s = r.stats()
        assert s.loader == "process" and s.reservoir_size == 40
        assert s.rows_loaded >= 40 and s.entries_ingested >= 40 and s.jobs_completed > 0
        assert s.address == process_client.scheduler.address
        assert r.perf_receiving.count > 0  # the loader's timings are copied here
        assert len(seen) >= 40
    poll_for(lambda: not _alive(pid), timeout=15, what="the loader process to exit")
    assert r.stats().status == "closed" and r.stats().rows_in_flight == 0


def test_back_pressure_holds_while_the_consumer_does_not_ingest(process_client: Client) -> None:
    with AsyncReservoir(
        frame(200), volume, 100, client=process_client, max_jobs_at_once=6, rows_per_job=1, loader="process"
    ) as r:
        poll_for(lambda: r.stats().entries_waiting == 6, timeout=30, what="six entries waiting")
        # shipped to this process but not ingested: no more is submitted, however long we wait
        threading.Event().wait(0.5)
        s = r.stats()
        assert s.rows_submitted == 6 and s.rows_in_flight == 0 and s.entries_waiting == 6
        it = iter(r)  # ingests the six: room for six more
        assert len(list(it)) == 6
        poll_for(lambda: r.stats().rows_submitted == 12, timeout=30, what="six more rows submitted")


def test_job_errors_cross_with_their_cause_and_uid(process_client: Client) -> None:
    with AsyncReservoir(
        frame(6),
        fails_on_odd,
        6,
        min_reservoir_samples=1,
        client=process_client,
        on_error="raise",
        rows_per_job=1,
        source_sampler=SequentialSampler(),
        loader="process",
    ) as r:
        with pytest.raises(JobError) as info:
            poll_for(lambda: bool(list(iter(r))) and False, timeout=30, what="a JobError")
        assert info.value.uid in (1, 3, 5)
        assert isinstance(info.value.__cause__, ZeroDivisionError)
        poll_for(
            lambda: {f.uid for f in r.stats().failures} == {1, 3, 5}, timeout=30, what="every odd UID failed"
        )
        assert all(f.exc_type == "ZeroDivisionError" for f in r.stats().failures)


def test_quarantine_release_goes_through_the_loader(process_client: Client) -> None:
    with AsyncReservoir(
        frame(4),
        fails_on_odd,
        4,
        client=process_client,
        max_failures_per_uid=1,
        rows_per_job=1,
        loader="process",
    ) as r:
        poll_for(lambda: set(r.stats().quarantined) == {1, 3}, timeout=30, what="UIDs 1 and 3 quarantined")
        assert r.release_quarantine([3, 99]) == [3]
        poll_for(
            lambda: r.stats().failures and max(f.count for f in r.stats().failures if f.uid == 3) >= 2,
            timeout=30,
            what="UID 3 tried again",
        )
        assert set(r.stats().quarantined) == {1, 3}


def test_a_killed_loader_process_is_an_error_not_a_stall(process_client: Client) -> None:
    r = AsyncReservoir(
        frame(50), volume, 50, min_reservoir_samples=50, client=process_client, loader="process"
    )
    try:
        pid = r._runner.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=f"loader process {pid} exited unexpectedly"):
            poll_for(lambda: bool(list(iter(r))) and False, timeout=30, what="an error")
        assert r.stats().status == "lost"
    finally:
        r.close()
    r.close()  # idempotent


CONSUMER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, pandas as pd
    from dask_reservoir import AsyncReservoir

    def slow(row):
        time.sleep(0.05)
        return {"x": np.float32(row["value"])}

    r = AsyncReservoir(pd.DataFrame({"value": range(1000)}), slow, 100, client=sys.argv[1], loader="process")
    next(iter(r))
    print(r._runner.pid, flush=True)
    time.sleep(120)
    """
)


@contextmanager
def consumer_on_a_cluster(
    tmp_path: Any, script: str
) -> Iterator[tuple[Client, subprocess.Popen[str], list[int]]]:
    """Run ``script`` (given the scheduler's address) as a consumer process on a fresh process
    cluster; yield the client, the process and the ints of its first output line."""
    path = tmp_path / "consumer.py"
    path.write_text(script)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        consumer = subprocess.Popen(
            [sys.executable, str(path), cluster.scheduler_address], stdout=subprocess.PIPE, text=True
        )
        try:
            assert consumer.stdout is not None
            yield client, consumer, [int(v) for v in consumer.stdout.readline().split()]
        finally:
            consumer.kill()
            consumer.wait(10)


def test_the_loader_exits_and_releases_its_tasks_when_the_consumer_is_killed(tmp_path: Any) -> None:
    with consumer_on_a_cluster(tmp_path, CONSUMER) as (client, consumer, (pid,)):
        assert _alive(pid) and scheduler_task_count(client) > 0
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(10)
        poll_for(lambda: not _alive(pid), timeout=30, what="the orphaned loader process to exit")
        poll_for(lambda: scheduler_task_count(client) == 0, timeout=30, what="its tasks to be released")


def test_where_the_process_cannot_be_used(cluster_client: Client, process_client: Client) -> None:
    with pytest.raises(
        ValueError, match=r"loader='process' cannot be used: the scheduler is in this process"
    ):
        AsyncReservoir(frame(4), volume, 4, client=cluster_client, loader="process")
    source = dd.from_pandas(frame(8), npartitions=2)
    with pytest.raises(ValueError, match=r"loader='process' cannot be used: the source is a dask DataFrame"):
        AsyncReservoir(source, volume, 4, client=process_client, loader="process")
    with AsyncReservoir(frame(4), volume, 4, client=cluster_client, loader="auto") as r:
        assert r.stats().loader == "thread"
    with AsyncReservoir(frame(4), volume, 4, client=process_client, loader="auto") as r:
        assert r.stats().loader == "process"
    with AsyncReservoir(frame(4), volume, 4, client=process_client, loader="thread") as r:
        assert r.stats().loader == "thread"


def test_the_dask_config_chooses_when_loader_is_not_given(process_client: Client) -> None:
    with (
        dask.config.set({CONFIG_KEY: "process"}),
        AsyncReservoir(frame(4), volume, 4, client=process_client) as r,
    ):
        assert r.stats().loader == "process"
    with (
        dask.config.set({CONFIG_KEY: "thread"}),
        AsyncReservoir(frame(4), volume, 4, client=process_client) as r,
    ):
        assert r.stats().loader == "thread"
    with (
        dask.config.set({CONFIG_KEY: "fork"}),
        pytest.raises(ValueError, match=r"dask_reservoir.loader.*'fork'"),
    ):
        AsyncReservoir(frame(4), volume, 4, client=process_client)
    with pytest.raises(
        ValueError, match=r"loader must be one of \['auto', 'process', 'thread'\], got 'fork'"
    ):
        AsyncReservoir(frame(4), volume, 4, client=process_client, loader="fork")


def test_a_result_the_consumer_cannot_read_is_an_error_not_a_stall(process_client: Client) -> None:
    os.environ["DASK_RESERVOIR_TEST_CONSUMER"] = str(os.getpid())
    try:
        r = AsyncReservoir(
            frame(10),
            unreadable_here,
            10,
            min_reservoir_samples=10,
            client=process_client,
            loader="process",
            collate_fn=list,
        )
        pid = r._runner.pid
        with pytest.raises(
            RuntimeError, match=r"could not receive from the dask_reservoir loader process .*MemoryError"
        ):
            poll_for(lambda: bool(list(iter(r))) and False, timeout=30, what="an error")
        assert r.stats().status == "lost"
        assert pid is not None
        poll_for(lambda: not _alive(pid), timeout=30, what="the loader to stop")
        r.close()
    finally:
        del os.environ["DASK_RESERVOIR_TEST_CONSUMER"]


def test_a_result_that_cannot_travel_is_its_uids_failure_and_the_rest_loads(process_client: Client) -> None:
    with AsyncReservoir(
        frame(10),
        three_cannot_travel,
        10,
        min_reservoir_samples=9,
        client=process_client,
        loader="process",
        rows_per_job=1,
        collate_fn=list,
    ) as r:
        iterate_until(r, lambda: 3 in r.stats().quarantined)  # ingesting frees room for retries
        rows = [row for batch in r for row in batch]
        assert sorted(row["label"] for row in rows) == [0, 1, 2, 4, 5, 6, 7, 8, 9]
        (failure,) = [f for f in r.stats().failures if f.uid == 3]
        assert (
            failure.exc_type == "StoreError" and "cannot be sent to the consumer's process" in failure.message
        )
        assert r.stats().status == "running"


def test_a_function_of_a_module_loaded_from_a_file_path(process_client: Client, tmp_path: Any) -> None:
    import importlib.util

    path = tmp_path / "hidden_loader_module.py"
    path.write_text("def load(row):\n    return {'twice': int(row['value']) * 2}\n")
    spec = importlib.util.spec_from_file_location("hidden_loader_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hidden_loader_module"] = module
    try:
        spec.loader.exec_module(module)
        with AsyncReservoir(
            frame(6),
            module.load,
            6,
            min_reservoir_samples=6,
            client=process_client,
            loader="process",
            batch_size=6,
        ) as r:
            batch = next(iter(r))
            assert (batch["twice"] == batch["sample_uid"] * 2).all()
    finally:
        del sys.modules["hidden_loader_module"]


FORKING_CONSUMER = textwrap.dedent(
    """
    import multiprocessing, sys, time
    import numpy as np, pandas as pd
    from dask_reservoir import AsyncReservoir

    def slow(row):
        time.sleep(0.05)
        return {"x": np.float32(row["value"])}

    if __name__ == "__main__":
        r = AsyncReservoir(pd.DataFrame({"value": range(1000)}), slow, 100, client=sys.argv[1], loader="process")
        next(iter(r))
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,), daemon=True)
        child.start()  # it inherits the socket to the loader, and outlives this process
        print(r._runner.pid, child.pid, flush=True)
        time.sleep(120)
    """
)


def test_the_loader_exits_when_the_consumer_dies_even_if_a_forked_child_lives_on(tmp_path: Any) -> None:
    with consumer_on_a_cluster(tmp_path, FORKING_CONSUMER) as (client, consumer, (pid, child)):
        try:
            consumer.send_signal(signal.SIGKILL)
            consumer.wait(10)
            assert _alive(child)
            poll_for(lambda: not _alive(pid), timeout=30, what="the loader to exit")
            poll_for(lambda: scheduler_task_count(client) == 0, timeout=30, what="its tasks to be released")
        finally:
            if _alive(child):
                os.kill(child, signal.SIGKILL)

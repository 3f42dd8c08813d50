"""Remote clusters for real: ``dask scheduler``/``dask worker`` processes on loopback, and faults.

The cluster processes cannot import this module (their ``PYTHONPATH`` does not
hold the checkout), so every ``function_to_run`` here travels by value.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest

from dask_reservoir import AsyncReservoir, ClusterLostError, RandomSampler
from tests.cli_cluster import CliCluster, cli_cluster
from tests.utils import frame, iterate_until, poll_for

pytestmark = pytest.mark.timeout(180)


def remote_load(row: dict[str, Any]) -> dict[str, Any]:
    """Defined in a test module the cluster cannot import."""
    time.sleep(0.01)
    v = int(row["value"])
    return {"image": np.full((4, 4), v, dtype=np.float32), "label": v, "pid": os.getpid()}


def kill_own_worker_on_zero(row: dict[str, Any]) -> dict[str, Any]:
    if int(row["value"]) == 0:
        os._exit(1)
    return remote_load(row)


def check_batch(batch: dict[str, np.ndarray]) -> None:
    """A batch is intact: each row's payload matches its UID."""
    assert batch["label"].tolist() == batch["sample_uid"].tolist()
    assert (batch["image"] == batch["label"][:, None, None]).all()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    directory = tmp_path_factory.mktemp("cli-cluster")
    with cli_cluster(directory, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}) as cluster:
        yield cluster


def test_cluster_cannot_import_tests(remote: CliCluster) -> None:
    with remote.client() as c:
        assert c.run_on_scheduler(lambda: __import__("importlib.util").util.find_spec("tests")) is None


def test_attach_by_address_with_function_from_unimportable_module(remote: CliCluster) -> None:
    with AsyncReservoir(
        frame(20), remote_load, 20, min_reservoir_samples=20, client=remote.address, batch_size=5
    ) as r:
        batches = list(r)
        assert len(batches) == 4
        for b in batches:
            check_batch(b)
        assert r.stats().address == remote.address and r.stats().status == "running"
        ran_in = {int(p) for b in batches for p in b["pid"]}
        with remote.client() as c:
            workers = {int(pid) for pid in c.run(os.getpid).values()}
        assert ran_in and ran_in <= workers and os.getpid() not in ran_in  # on the CLI workers
        assert r._handle.owned and not r._handle.can_import("tests")
    with remote.client() as c:
        poll_for(
            lambda: c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0,
            what="the scheduler to forget our tasks",
        )


def test_attach_with_a_client(remote: CliCluster) -> None:
    with remote.client() as c:
        with AsyncReservoir(frame(8), remote_load, 8, min_reservoir_samples=8, client=c, rows_per_job=3) as r:
            assert sorted(int(u) for b in r for u in b["sample_uid"]) == list(range(8))
        assert c.status == "running"
        poll_for(lambda: len(c.futures) == 0, what="futures released")


def test_worker_killed_mid_job_with_nanny(remote: CliCluster) -> None:
    with (
        remote.client() as c,
        AsyncReservoir(
            frame(200),
            remote_load,
            64,
            min_reservoir_samples=16,
            client=c,
            batch_size=8,
            reservoir_sampler=RandomSampler(seed=0),
            max_jobs_at_once=8,
        ) as r,
    ):
        for b in r:
            check_batch(b)
        pids = c.run(os.getpid)
        victim = next(iter(pids.values()))
        poll_for(lambda: r.stats().rows_in_flight > 0, what="jobs in flight")
        os.kill(victim, signal.SIGKILL)
        done_at_kill = r.stats().jobs_completed
        # iteration goes on, every batch intact, while the nanny restarts the worker
        iterate_until(r, lambda: r.stats().jobs_completed > done_at_kill + 20, check=check_batch)
        c.wait_for_workers(2, timeout=60)
        assert victim not in c.run(os.getpid).values()
        for b in r:
            check_batch(b)
        assert r.stats().status == "running"


def test_job_that_kills_its_worker_ends_as_killed_worker_failure(remote: CliCluster) -> None:
    """UID 0 kills every worker it runs on: KilledWorker, counted as UID 0's failure, run goes on.

    Tasks queued on a dying worker may be blamed too (dask counts them as suspicious), so
    other UIDs can fail once; only UID 0 keeps failing and gets quarantined.
    """
    with (
        remote.client() as c,
        AsyncReservoir(
            frame(10),
            kill_own_worker_on_zero,
            10,
            min_reservoir_samples=5,
            client=c,
            max_failures_per_uid=2,
            rows_per_job=1,  # a packed task holding UID 0 would take its other rows down with it
        ) as r,
    ):
        iterate_until(r, lambda: 0 in r.stats().quarantined)
        failures = {f.uid: f for f in r.stats().failures}
        assert failures[0].exc_type == "KilledWorker" and failures[0].count == 2
        assert "all those workers died" in failures[0].message
        c.wait_for_workers(2, timeout=60)

        def others_loaded() -> bool:
            # under load, a task queued on a dying worker can be blamed twice and quarantined with
            # UID 0 (dask counts it as suspicious): give those back, never UID 0
            r.release_quarantine([u for u in r.stats().quarantined if u != 0])
            return r.reservoir_size() == 9

        iterate_until(r, others_loaded)  # every other UID loads in the end
        assert 0 in r.stats().quarantined
        labels = sorted(int(b["label"][0]) for b in r)
        assert labels == list(range(1, 10))
        assert r.stats().status == "running"


def test_worker_killed_without_nanny(tmp_path: Path) -> None:
    with (
        cli_cluster(tmp_path, nanny=False) as cluster,
        cluster.client() as c,
        AsyncReservoir(
            frame(100), remote_load, 32, min_reservoir_samples=8, client=c, batch_size=4, max_jobs_at_once=6
        ) as r,
    ):
        list(r)
        victim_address, victim = next(iter(c.run(os.getpid).items()))
        os.kill(victim, signal.SIGKILL)
        poll_for(
            lambda: victim_address not in c.scheduler_info()["workers"],
            timeout=60,
            what="the worker to be gone",
        )
        done = r.stats().jobs_completed
        iterate_until(r, lambda: r.stats().jobs_completed > done + 10, check=check_batch)
        assert r.stats().failures == ()


@pytest.mark.parametrize("mode", ["raise", "serve"])
def test_scheduler_lost(tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    with cli_cluster(tmp_path) as cluster, dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        r = AsyncReservoir(
            frame(50),
            remote_load,
            50,
            min_reservoir_samples=10,
            client=cluster.address,
            batch_size=5,
            on_cluster_loss=mode,
        )
        try:
            served_before = len(list(r))
            assert served_before >= 2
            cluster.kill_scheduler()
            # while the client tries to reconnect, loaded entries are still served
            poll_for(
                lambda: r.stats().status in ("connecting", "lost"), timeout=30, what="the loss to be seen"
            )
            for b in r:
                check_batch(b)
            poll_for(lambda: r.stats().status == "lost", timeout=60, what="the client to give up")
            if mode == "raise":
                with pytest.raises(
                    ClusterLostError, match=r"lost the dask scheduler at 'tcp://127\.0\.0\.1:\d+'"
                ):
                    iter(r)
            else:
                with caplog.at_level(logging.WARNING, logger="dask_reservoir"):
                    for _ in range(3):
                        assert len(list(r)) >= 2
                warnings = [rec for rec in caplog.records if "serving the" in rec.getMessage()]
                assert len(warnings) == 1
                assert "status=lost" in repr(r)
        finally:
            r.close()
        r.close()
        assert r.stats().status == "closed"


LATE_LOADER = """
import numpy as np


def load(row):
    v = int(row["value"])
    return {"image": np.full((4, 4), v, dtype=np.float32), "label": v}
"""


def test_worker_that_cannot_import_the_function_joins_late(tmp_path: Path) -> None:
    """The cluster imports the function's module at first (by reference); a worker joining later does not."""
    name = f"late_loader_{uuid.uuid4().hex[:8]}"
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / f"{name}.py").write_text(LATE_LOADER)
    (tmp_path / "cluster").mkdir()
    sys.path.insert(0, str(modules))
    try:
        module = __import__(name)
        with (
            cli_cluster(tmp_path / "cluster", nworkers=1, env={"PYTHONPATH": str(modules)}) as cluster,
            cluster.client() as c,
            AsyncReservoir(
                frame(30), module.load, 30, min_reservoir_samples=30, client=c, batch_size=10
            ) as r,
        ):
            assert r._handle.can_import(name)  # so the function goes by reference
            for b in r:
                check_batch(b)
            first = cluster.workers[0]
            cluster.start_workers(1, env={"PYTHONPATH": ""}, name="late")
            c.wait_for_workers(2, timeout=60)
            cluster.stop_process(first)  # from now on only the late worker runs jobs
            poll_for(lambda: len(c.scheduler_info()["workers"]) == 1, timeout=60, what="one worker left")
            assert not r._handle.can_import(name)
            done = r.stats().rows_loaded
            iterate_until(r, lambda: r.stats().rows_loaded >= done + 60, check=check_batch)
            assert r.stats().failures == ()
    finally:
        sys.path.remove(str(modules))
        sys.modules.pop(name, None)

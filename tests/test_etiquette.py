"""Cluster etiquette: ``resources=``, ``workers=``, ``priority=`` and ``annotations=`` on real CLI workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from tests.cli_cluster import DASK, CliCluster, cli_cluster
from tests.utils import poll_for

pytestmark = pytest.mark.timeout(180)


def where(row: dict[str, Any]) -> dict[str, Any]:
    from distributed import get_worker

    return {"worker": get_worker().address, "v": int(row["sample_uid"]) * 2}


def frame(n: int = 24) -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(n)})


def loader_worker(cluster: CliCluster) -> None:
    """A second worker, the only one with the resource ``LOADER``."""
    args = [*DASK, "worker", "--scheduler-file", str(cluster.scheduler_file), "--nthreads", "1",
            "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "5", "--resources", "LOADER=1",
            "--name", "loader"]  # fmt: skip
    cluster.workers.append(cluster._spawn(args, "loader"))
    cluster.wait_for_workers(2)


def run_where(client: Client, **options: Any) -> tuple[set[str], Any]:
    with AsyncReservoir(frame(), where, 24, client=client, passes=1, **options) as r:
        r.wait_loaded(timeout=60)
        table = r.to_pandas()
    assert (table["v"] == table["sample_uid"] * 2).all()
    return set(table["worker"]), r


def test_resources_and_workers_choose_where_jobs_run(tmp_path: Path) -> None:
    with cli_cluster(tmp_path, nworkers=1) as cluster:
        loader_worker(cluster)
        with cluster.client() as client:
            info = client.scheduler_info()["workers"]
            loader = next(a for a, w in info.items() if w.get("name") == "loader")
            other = next(a for a in info if a != loader)
            assert run_where(client, resources={"LOADER": 1})[0] == {loader}
            assert run_where(client, workers=other)[0] == {other}
            assert run_where(client, workers=[loader])[0] == {loader}


def test_priority_and_annotations_reach_the_scheduler(client: Client) -> None:
    def task_state(dask_scheduler: Any) -> list[tuple[str, Any, dict[str, Any]]]:
        return [
            (str(ts.key), ts.priority, dict(ts.annotations or {}))
            for ts in dask_scheduler.tasks.values()
            if "dask_reservoir" in str(ts.key)
        ]

    seen: list[tuple[str, Any, dict[str, Any]]] = []
    with AsyncReservoir(
        frame(), lambda row: {"v": int(row["sample_uid"])}, 24, client=client, priority=-7,
        annotations={"team": "vision", "queue": "batch"}, max_jobs_at_once=2, rows_per_job=1,
    ) as r:  # fmt: skip
        for _ in range(200):  # while the reservoir refreshes, its tasks are on the scheduler
            seen = client.run_on_scheduler(task_state)
            if any(a.get("team") == "vision" for _, _, a in seen):
                break
            next(iter(r))
        poll_for(lambda: r.stats().rows_loaded > 0, timeout=30, what="a row loaded")
    assert seen, "no task of the reservoir seen on the scheduler"
    for key, priority, given in seen:
        assert given.get("team") == "vision" and given.get("queue") == "batch", (key, given)
        assert priority[0] == 7, (key, priority)  # the scheduler orders by -priority first


def test_etiquette_options_are_checked(client: Client) -> None:
    cases = [
        (dict(resources={"GPU": 0}), ValueError, r"resources must map resource names to finite amounts > 0"),
        (dict(resources=["GPU"]), TypeError, r"resources must be a dict or None, got list"),
        (dict(priority=1.5), TypeError, r"priority must be an int, got float"),
        (dict(workers=3), TypeError, r"workers must be a str, a list of str or None, got 3"),
        (dict(workers=[]), ValueError, r"workers must name at least one worker"),
        (dict(allow_other_workers=True), ValueError, r"allow_other_workers=True needs workers="),
        (dict(annotations={"priority": 3}), ValueError, r"annotations must not set \['priority'\]"),
        (dict(annotations=[1]), TypeError, r"annotations must be a dict with str keys or None"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            AsyncReservoir(frame(), where, 4, client=client, **options)


def test_a_dask_source_persists_its_partitions_with_the_etiquette(client: Client) -> None:
    import dask.dataframe as dd

    def parts(dask_scheduler: Any) -> list[tuple[str, Any, dict[str, Any], str]]:
        return [
            (str(ts.key), ts.priority, dict(ts.annotations or {}), ts.state)
            for ts in dask_scheduler.tasks.values()
            if "dask_reservoir-part-" in str(ts.key)
        ]

    source = dd.from_pandas(frame(), npartitions=3)
    with AsyncReservoir(
        source, lambda row: {"v": int(row["sample_uid"]) * 2}, 24, client=client, passes=1, priority=-4,
        annotations={"team": "vision"},
    ) as r:  # fmt: skip
        r.wait_loaded(timeout=60)
        table = r.to_pandas()
        held = client.run_on_scheduler(parts)
    assert (table["v"] == table["sample_uid"] * 2).all() and len(table) == 24
    assert len(held) == 3 and {state for *_, state in held} == {"memory"}
    for key, priority, given, _ in held:
        assert given.get("team") == "vision" and priority[0] == 4, (key, priority, given)

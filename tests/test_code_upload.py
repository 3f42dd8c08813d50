"""Nothing to install on the workers: ``upload_code=True`` on CLI processes of an environment without dask_reservoir.

The bare environment (``.venv-workers``, made by ``make test``) has dask, distributed, pandas
and numpy at this environment's versions, and not dask_reservoir.  Its scheduler and workers
run from a temporary directory, so they cannot import this checkout either.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir, JobError
from dask_reservoir._runtime.code_plugins import install_code
from dask_reservoir._runtime.code_upload import package_archive
from tests.cli_cluster import cli_cluster
from tests.utils import poll_for

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parent.parent
BARE_PYTHON = os.environ.get("DASK_RESERVOIR_WORKERS_PYTHON", str(ROOT / ".venv-workers" / "bin" / "python"))


def bare_python() -> str:
    """The bare environment's interpreter; ``make test`` requires it (DASK_RESERVOIR_REQUIRE_WORKERS_ENV=1)."""
    if not Path(BARE_PYTHON).exists():
        if os.environ.get("DASK_RESERVOIR_REQUIRE_WORKERS_ENV") == "1":
            pytest.fail(f"the environment without dask_reservoir is missing: {BARE_PYTHON}")
        pytest.skip(f"no environment without dask_reservoir at {BARE_PYTHON} (make test creates it)")
    return BARE_PYTHON


def load(row: dict[str, Any]) -> dict[str, Any]:
    from distributed import get_worker

    uid = int(row["sample_uid"])
    time.sleep(0.02)
    if uid % 10 == 7:
        raise ValueError(f"row {uid} is broken")
    return {"x": np.full(4, uid * 3, dtype=np.int64), "worker": get_worker().address}


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(n), "extra": np.arange(n) * 0.5})


def check_rows(table: pd.DataFrame) -> None:
    """Every row served is its UID's: the function's output follows the UID."""
    uids = table["sample_uid"].to_numpy()
    assert (np.stack(table["x"].to_numpy())[:, 0] == uids * 3).all()
    assert not set(uids.tolist()) & {u for u in range(1000) if u % 10 == 7}


def plugins(client: Client) -> tuple[list[str], list[str]]:
    def names(dask_scheduler: Any) -> tuple[list[str], list[str]]:
        return list(dask_scheduler.worker_plugins), list(dask_scheduler.plugins)

    workers, scheduler = client.run_on_scheduler(names)
    ours = [n for n in workers if n.startswith("dask_reservoir-code-")]
    return ours, [n for n in scheduler if n.startswith("dask_reservoir-code-")]


def test_a_reservoir_runs_on_workers_without_the_package(tmp_path: Path) -> None:
    with cli_cluster(tmp_path, nworkers=1, python=bare_python()) as cluster, cluster.client() as client:
        assert client.run(importlib.util.find_spec, "dask_reservoir") == {
            a: None for a in client.scheduler_info()["workers"]
        }
        assert client.run_on_scheduler(importlib.util.find_spec, "dask_reservoir") is None
        first = next(iter(client.scheduler_info()["workers"]))
        with AsyncReservoir(frame(60), load, 60, client=client, passes=1, batch_size=8) as r:
            # a worker that joins late gets the code before its first task; the first one leaves
            late = cluster.start_workers(1, name="late")
            client.wait_for_workers(2, timeout=60)  # on this client: a new one per wait is another connection
            poll_for(lambda: r.stats().rows_loaded >= 5, timeout=60, what="a few rows loaded")
            client.retire_workers([first], close_workers=True)
            r.wait_loaded(timeout=120)
            table = r.to_pandas()
            check_rows(table)
            assert set(table["sample_uid"]) == {u for u in range(60) if u % 10 != 7}
            assert sorted(f.uid for f in r.stats().failures) == [7, 17, 27, 37, 47, 57]
            assert all("is broken" in f.message for f in r.stats().failures)
            served = [b for b in r]
            assert sum(len(b["sample_uid"]) for b in served) == 54
            for b in served:
                assert (b["x"][:, 0] == b["sample_uid"] * 3).all()
            sub = r.subsample_uids([3, 4, 5, 17])
            sub_table = sub.to_pandas()
            check_rows(sub_table)
            assert set(sub_table["sample_uid"]) == {3, 4, 5}
            sub.close()
            workers_now = set(client.scheduler_info()["workers"])
            assert first not in workers_now
            assert set(table["worker"]) & workers_now, "the late worker ran jobs"
            assert plugins(client) == ([r._handle.code.name], [r._handle.code.name])
        assert plugins(client) == ([], []), "close() removes the plugins"
        assert late.poll() is None


def test_a_worker_that_imported_another_version_refuses_the_upload(tmp_path: Path) -> None:
    def import_an_old_version() -> str:
        import sys
        import types

        old = types.ModuleType("dask_reservoir")
        old.__file__ = "/opt/old/dask_reservoir/__init__.py"
        old.__version__ = "0.0.1"  # type: ignore[attr-defined]
        sys.modules["dask_reservoir"] = old
        return old.__file__

    with cli_cluster(tmp_path, nworkers=1, python=bare_python()) as cluster, cluster.client() as client:
        client.run(import_an_old_version)
        with pytest.raises(RuntimeError, match=r"could not upload dask_reservoir's code .*already imported "
                           r"dask_reservoir from '/opt/old/dask_reservoir/__init__.py' \(version 0\.0\.1\)"):  # fmt: skip
            AsyncReservoir(frame(4), load, 4, client=client)
        assert plugins(client) == ([], []), "the scheduler's half is removed too"
        # a second client's reservoir, on a cluster that can take the code, leaves others' plugins alone
        client.restart()
        with AsyncReservoir(frame(4), load, 4, client=client, passes=1) as r:
            with cluster.client() as other:
                with AsyncReservoir(frame(4), load, 4, client=other, passes=1) as r2:
                    r2.wait_loaded(timeout=60)
                assert plugins(client) == ([r._handle.code.name], [r._handle.code.name])
            r.wait_loaded(timeout=60)
            check_rows(r.to_pandas())


def test_a_subset_outliving_its_parent_keeps_the_code_for_late_workers(tmp_path: Path) -> None:
    with cli_cluster(tmp_path, nworkers=1, python=bare_python()) as cluster, cluster.client() as client:
        first = next(iter(client.scheduler_info()["workers"]))
        parent = AsyncReservoir(frame(30), load, 30, client=client)  # loads forever, and so does its child
        poll_for(lambda: parent.stats().rows_loaded >= 27, timeout=60, what="the parent to load its rows")
        child = parent.subsample_uids([3, 4, 5, 6])
        name = parent._handle.code.name
        parent.close()
        assert plugins(client) == ([name], [name]), "the child still needs them"
        try:
            cluster.start_workers(1, name="late")
            client.wait_for_workers(2, timeout=60)  # on this client: a new one per wait is another connection
            client.retire_workers([first], close_workers=True)
            loaded = child.stats().rows_loaded

            def child_loads_on_the_late_worker() -> bool:
                for batch in child:
                    assert (batch["x"][:, 0] == batch["sample_uid"] * 3).all()
                return child.stats().rows_loaded >= loaded + 8

            poll_for(child_loads_on_the_late_worker, timeout=60, what="the child to load on the late worker")
            table = child.to_pandas()
            check_rows(table)
            assert set(table["worker"]) == set(client.scheduler_info()["workers"])
            assert child.stats().failures == ()
        finally:
            child.close()
        assert plugins(client) == ([], [])


def test_a_dask_source_on_workers_without_the_package(tmp_path: Path) -> None:
    with cli_cluster(tmp_path, nworkers=2, python=bare_python()) as cluster, cluster.client() as client:
        source = dd.from_pandas(frame(40), npartitions=4)
        with AsyncReservoir(source, load, 40, client=client, passes=1, rows_per_job=3) as r:
            r.wait_loaded(timeout=120)
            table = r.to_pandas()
        check_rows(table)
        assert set(table["sample_uid"]) == {u for u in range(40) if u % 10 != 7}
        assert len(r.stats().failures) == 4


def test_without_upload_the_scheduler_cannot_read_the_tasks(tmp_path: Path) -> None:
    """``upload_code=False`` on a bare cluster: the rows fail with the scheduler's error, recorded."""
    with cli_cluster(tmp_path, nworkers=1, python=bare_python()) as cluster, cluster.client() as client:
        with pytest.raises(JobError, match=r"4 failed.*UID 0: RuntimeError: Error during deserialization"):
            with AsyncReservoir(frame(4), load, 4, client=client, passes=1, upload_code=False) as r:
                r.wait_loaded(timeout=60)
                list(r)
        assert plugins(client) == ([], [])


def test_installed_workers_keep_their_package(process_client: Client) -> None:
    def origin() -> str:
        return str(sys.modules["dask_reservoir"].__file__)

    with AsyncReservoir(frame(20), load, 20, client=process_client, passes=1) as r:
        r.wait_loaded(timeout=60)
        check_rows(r.to_pandas())
        name = r._handle.code.name
        assert name in plugins(process_client)[0]
        # a second reservoir on the client shares the plugins; the first to close keeps them
        with AsyncReservoir(frame(10), load, 10, client=process_client, passes=1) as r2:
            r2.wait_loaded(timeout=60)
        assert name in plugins(process_client)[0]
        origins = set(process_client.run(origin).values())
    assert origins == {str(ROOT / "dask_reservoir" / "__init__.py")}
    assert plugins(process_client) == ([], [])


def test_upload_code_false_registers_nothing(process_client: Client) -> None:
    with AsyncReservoir(frame(10), load, 10, client=process_client, passes=1, upload_code=False) as r:
        r.wait_loaded(timeout=60)
        assert r._handle.code is None
        assert plugins(process_client) == ([], [])
    with pytest.raises(TypeError, match="upload_code must be a bool, got str: 'yes'"):
        AsyncReservoir(frame(10), load, 10, client=process_client, upload_code="yes")  # type: ignore[arg-type]


def test_install_code_refuses_a_second_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, digest = package_archive()
    other = types.ModuleType("dask_reservoir")
    other.__file__ = str(tmp_path / "old" / "dask_reservoir" / "__init__.py")
    other.__version__ = "0.0.1"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_reservoir", other)
    with pytest.raises(
        RuntimeError, match=r"already imported dask_reservoir from .*old.* \(version 0\.0\.1\)"
    ):
        install_code(archive, version="9.9", digest=digest, directory=str(tmp_path))
    # the client's own files (a worker in its process, or started from its checkout): kept
    from_origin = install_code(archive, version="unknown", digest=digest, directory=str(tmp_path),
                               origin=str(tmp_path / "old" / "dask_reservoir"))  # fmt: skip
    assert from_origin == "imported"
    monkeypatch.delitem(sys.modules, "dask_reservoir")
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert install_code(archive, version="9.9", digest=digest, directory=str(tmp_path)) == "uploaded"
    target = tmp_path / f"dask-reservoir-code-{digest}"
    assert sys.path[0] == str(target)
    assert (target / "dask_reservoir" / "_worker" / "calls.py").read_bytes() == (
        ROOT / "dask_reservoir" / "_worker" / "calls.py"
    ).read_bytes()
    again = install_code(archive, version="9.9", digest=digest, directory=str(tmp_path))
    assert again == "uploaded" and sys.path.count(str(target)) == 1

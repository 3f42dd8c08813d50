"""``cache=``: the persistent tier on real clusters (worker processes, CLI workers, threads).

Every served row is checked against its UID: a cache hit must never serve another row's
result, a partial file or a stale result of changed code.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from dask_reservoir._worker.cache.files import CacheFiles
from tests.cli_cluster import DASK, cli_cluster

pytestmark = pytest.mark.timeout(180)

N = 24


def volume(row: dict[str, Any]) -> dict[str, Any]:
    uid = int(row["sample_uid"])
    return {"x": np.full((4, 5), uid, np.float32), "label": uid % 3, "name": f"case-{uid}"}


def volume_v2(row: dict[str, Any]) -> dict[str, Any]:
    uid = int(row["sample_uid"])
    return {"x": np.full((4, 5), uid + 0.5, np.float32), "label": uid % 3, "name": f"case-{uid}"}


def frame(n: int = N) -> pd.DataFrame:
    return pd.DataFrame({"sample_uid": np.arange(500, 500 + n), "path": [f"/data/{i}.nii" for i in range(n)]})


def run_once(client: Client, cache: str, function: Callable[..., Any] = volume, n: int = N, **kw: Any) -> Any:
    """One pass over ``n`` rows with ``cache``; every row checked; the stats."""
    with AsyncReservoir(frame(n), function, n, passes=1, client=client, cache=cache, **kw) as r:
        stats = r.wait_loaded(timeout=120)
        table = r.to_pandas()
    assert len(table) == n
    uids = table["sample_uid"].to_numpy()
    extra = 0.5 if function is volume_v2 else 0.0
    assert all((x == uid + extra).all() for x, uid in zip(table["x"], uids, strict=True))
    assert (table["label"].to_numpy() == uids % 3).all()
    assert table["name"].tolist() == [f"case-{u}" for u in uids]
    return stats


def test_a_cold_run_misses_and_a_warm_run_hits(process_client: Client, tmp_path: Path) -> None:
    cold = run_once(process_client, str(tmp_path))
    assert (cold.cache_hits, cold.cache_misses) == (0, N) and cold.cache_bytes_written > 0
    warm = run_once(process_client, str(tmp_path))
    assert (warm.cache_hits, warm.cache_misses) == (N, 0)
    assert warm.cache_bytes_read == cold.cache_bytes_written and warm.cache_bytes_written == 0
    # the files are plain Parquet: pandas reads them without this library
    files = sorted(tmp_path.rglob("*.parquet"))
    assert len(files) == N
    assert pd.read_parquet(files[0]).columns.tolist() == ["x", "label", "name", "sample_uid"]
    # an edited source row is recomputed (cache_row_hash=True); with the flag off it is not
    edited = frame()
    edited.loc[3, "path"] = "/data/elsewhere.nii"
    with AsyncReservoir(edited, volume, N, passes=1, client=process_client, cache=str(tmp_path)) as r:
        assert (r.wait_loaded(timeout=60).cache_misses, r.stats().cache_hits) == (1, N - 1)
    no_row = run_once(process_client, str(tmp_path), cache_row_hash=False)
    assert no_row.cache_misses == N  # another key: the UID and function only
    assert run_once(process_client, str(tmp_path), cache_row_hash=False).cache_hits == N


def test_a_changed_function_or_version_misses(process_client: Client, tmp_path: Path) -> None:
    run_once(process_client, str(tmp_path))
    changed = run_once(process_client, str(tmp_path), volume_v2)
    assert (changed.cache_hits, changed.cache_misses) == (0, N)
    versioned = run_once(process_client, str(tmp_path), cache_version="v2")
    assert (versioned.cache_hits, versioned.cache_misses) == (0, N)
    assert run_once(process_client, str(tmp_path), cache_version="v2").cache_hits == N


def write_module(directory: Path, name: str, factor: int) -> None:
    shutil.rmtree(directory / "__pycache__", ignore_errors=True)
    (directory / f"{name}.py").write_text(f"def scale(x):\n    return x * {factor}\n")
    importlib.invalidate_caches()


def using(lib: ModuleType) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def load(row: dict[str, Any]) -> dict[str, Any]:
        return {"v": lib.scale(int(row["sample_uid"]))}

    return load


def test_an_edit_in_an_imported_user_module_misses(process_client: Client, tmp_path: Path) -> None:
    code, cache = tmp_path / "code", tmp_path / "cache"
    code.mkdir()
    name = f"cachelib_{os.getpid()}_{int(time.monotonic() * 1e6)}"

    def load_module(factor: int) -> ModuleType:
        write_module(code, name, factor)
        for where in (None, "workers"):
            if where is None:
                sys.path.insert(0, str(code))
                module = (
                    importlib.reload(sys.modules[name])
                    if name in sys.modules
                    else importlib.import_module(name)
                )
            else:
                process_client.run(_import_fresh, str(code), name)
        return module

    def served(lib: ModuleType) -> tuple[Any, dict[int, int]]:
        with AsyncReservoir(frame(), using(lib), N, passes=1, client=process_client, cache=str(cache)) as r:
            stats = r.wait_loaded(timeout=60)
            table = r.to_pandas(loaded_at=False)
        return stats, dict(zip(table["sample_uid"], table["v"], strict=True))

    try:
        lib = load_module(2)
        stats, values = served(lib)
        assert stats.cache_misses == N and values == {u: 2 * u for u in values}
        stats, values = served(lib)
        assert stats.cache_hits == N and values == {u: 2 * u for u in values}
        lib = load_module(3)  # only the module changed, not the function using it
        stats, values = served(lib)
        assert (stats.cache_hits, stats.cache_misses) == (0, N)
        assert values == {u: 3 * u for u in values}  # never the stale x * 2
    finally:
        sys.path.remove(str(code)) if str(code) in sys.path else None
        sys.modules.pop(name, None)


def _import_fresh(directory: str, name: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)
    importlib.invalidate_caches()
    if name in sys.modules:
        importlib.reload(sys.modules[name])
    else:
        importlib.import_module(name)


def test_a_corrupt_file_is_recomputed(process_client: Client, tmp_path: Path) -> None:
    run_once(process_client, str(tmp_path))
    files = sorted(tmp_path.rglob("*.parquet"))
    size = files[5].stat().st_size
    files[5].write_bytes(np.random.default_rng(0).bytes(size))  # garbage of the same size
    files[9].write_bytes(files[9].read_bytes()[:100])  # a file cut short
    stats = run_once(process_client, str(tmp_path))
    assert (stats.cache_hits, stats.cache_misses) == (N - 2, 2)
    assert run_once(process_client, str(tmp_path)).cache_hits == N  # rewritten whole


def test_a_file_of_another_uid_is_never_served(process_client: Client, tmp_path: Path) -> None:
    run_once(process_client, str(tmp_path), cache_row_hash=False)
    files = CacheFiles(str(tmp_path))
    from dask_reservoir._worker.cache.fingerprint import function_fingerprint
    from dask_reservoir._worker.cache.keys import entry_key

    fingerprint = function_fingerprint(volume)
    a, b = (Path(files.path(entry_key(500 + i, None, fingerprint))) for i in (1, 2))
    a.write_bytes(b.read_bytes())  # UID 501's file now holds UID 502's rows
    stats = run_once(process_client, str(tmp_path), cache_row_hash=False)  # checks every row's values
    assert (stats.cache_hits, stats.cache_misses) == (N - 1, 1)


def test_two_reservoirs_writing_one_cache(process_client: Client, tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(passes=1, client=process_client, cache=str(tmp_path), rows_per_job=2)
    with AsyncReservoir(frame(), volume, N, **kw) as one, AsyncReservoir(frame(), volume, N, **kw) as two:
        for r in (one, two):
            r.wait_loaded(timeout=60)
            table = r.to_pandas()
            assert all((x == u).all() for x, u in zip(table["x"], table["sample_uid"], strict=True))
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert run_once(process_client, str(tmp_path)).cache_hits == N


def test_a_worker_killed_while_writing_leaves_no_partial_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def die_before_rename() -> None:  # nested: travels by value to workers that cannot import tests
        real = os.replace

        def replace(src: Any, dst: Any) -> None:
            if str(dst).endswith(".parquet") and ".tmp-" in str(src):
                os._exit(17)  # the temporary file is written, the rename never happens
            real(src, dst)

        os.replace = replace

    with cli_cluster(tmp_path, nworkers=1) as cluster, cluster.client() as client:
        client.run(die_before_rename)
        before = set(client.scheduler_info()["workers"])
        with AsyncReservoir(frame(8), volume, 8, passes=1, client=client, cache=str(cache)) as r:
            stats = r.wait_loaded(timeout=120)
            table = r.to_pandas()
        assert sorted(table["sample_uid"]) == list(range(500, 508)) and stats.rows_failed == 0
        assert all((x == u).all() for x, u in zip(table["x"], table["sample_uid"], strict=True))
        assert (
            set(client.scheduler_info()["workers"]) != before
        )  # it died mid-write; its nanny started another
        assert [p.name for p in cache.rglob("*.tmp-*")]  # what the crash left: a temporary file only
        assert run_once(client, str(cache), n=8).cache_hits == 8


def test_a_local_path_the_workers_do_not_share_is_refused(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to give a worker its own view of the directory")
    cache = tmp_path / "cache"
    cache.mkdir()
    with cli_cluster(tmp_path, nworkers=1) as cluster:
        # a worker that sees another directory at the same path, as a worker of another machine would
        worker = " ".join([*DASK, "worker", "--scheduler-file", str(cluster.scheduler_file), "--nthreads", "1",
                           "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "5", "--no-nanny"])  # fmt: skip
        cluster.workers.append(
            cluster._spawn(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    f"mount -t tmpfs none {cache} && exec {worker}",
                ],
                "other-machine",
            )
        )
        cluster.wait_for_workers(2)
        with cluster.client() as client:
            with pytest.raises(ValueError, match=r"is not the same directory on 1 of the 2 workers"):
                AsyncReservoir(frame(), volume, N, client=client, cache=str(cache))
            assert not list(cache.iterdir())  # the probe is removed


def test_a_memory_filesystem_on_threads_and_its_refusal_on_processes(
    client: Client, process_client: Client
) -> None:
    url = f"memory://dask_reservoir-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        assert run_once(client, url).cache_misses == N
        assert run_once(client, url).cache_hits == N
        with pytest.raises(ValueError, match=r"is not the same directory on 2 of the 2 workers"):
            AsyncReservoir(frame(), volume, N, client=process_client, cache=url)
    finally:
        import fsspec

        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_restore_on_a_warm_cache_refills_from_disk(process_client: Client, tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(
        client=process_client, cache=str(tmp_path / "cache"), min_reservoir_samples=N, timeout=60
    )
    with AsyncReservoir(frame(), volume, N, **kw) as r:
        for batch in r:
            assert (batch["x"][:, 0, 0] == batch["sample_uid"]).all()
        path = r.save(tmp_path / "state.json")
    with AsyncReservoir.restore(path, frame(), volume, N, **kw) as again:
        for batch in again:  # the former members come back first, read from the cache
            assert (batch["x"][:, 0, 0] == batch["sample_uid"]).all()
        stats = again.stats()
    assert stats.cache_hits >= N and stats.reservoir_size == N


def tagged(row: dict[str, Any]) -> dict[str, Any]:
    return {"uid_text": str(row["sample_uid"]), "path": str(row["path"])}


def served_tags(client: Client, source: pd.DataFrame, cache: str) -> Any:
    """One pass; every row's values checked against its UID and its source row; the stats."""
    with AsyncReservoir(source, tagged, len(source), passes=1, client=client, cache=cache) as r:
        stats = r.wait_loaded(timeout=60)
        table = r.to_pandas()
    assert stats.rows_failed == 0 and len(table) == len(source)
    expected = dict(zip(source["sample_uid"].tolist(), source["path"], strict=True))
    for uid, text, path in zip(table["sample_uid"].tolist(), table["uid_text"], table["path"], strict=True):
        assert text == str(uid) and path == expected[uid]
    return stats


def test_uint64_hash_uids_are_kept(process_client: Client, tmp_path: Path) -> None:
    source = pd.DataFrame(
        {"sample_uid": np.array([2**63 + 7, 2**64 - 1, 12], np.uint64), "path": ["a", "b", "c"]}
    )
    assert served_tags(process_client, source, str(tmp_path)).cache_misses == 3
    assert served_tags(process_client, source, str(tmp_path)).cache_hits == 3


def test_a_file_moved_or_copied_under_another_key_is_never_served(
    process_client: Client, tmp_path: Path
) -> None:
    before, after = frame(4), frame(4)
    after["path"] = after["path"] + ".v2"  # edited rows: other keys, other files
    served_tags(process_client, before, str(tmp_path))
    served_tags(process_client, after, str(tmp_path))
    files = sorted(tmp_path.rglob("*.parquet"))
    by_uid: dict[str, list[Path]] = {}
    for f in files:
        by_uid.setdefault(f.name.split("-")[0], []).append(f)
    for a, b in by_uid.values():  # swap the two versions of each UID's result
        data_a, data_b = a.read_bytes(), b.read_bytes()
        a.write_bytes(data_b)
        b.write_bytes(data_a)
    stats = served_tags(process_client, before, str(tmp_path))  # each value checked against its row
    assert (stats.cache_hits, stats.cache_misses) == (0, 4)

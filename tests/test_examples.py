"""Every example runs as ``python examples/NAME.py`` and prints what it promises."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_cluster import cli_cluster

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(180)


def run_example(name: str, *args: str) -> str:
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_local_training() -> None:
    out = run_example("local_training.py", "--epochs", "5", "--rows", "200")
    lines = out.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 5
    assert "throughput:" in out and "batches/s" in out and "stats: reservoir" in out


def test_subsample_uids() -> None:
    out = run_example("subsample_uids.py")
    assert "cases of site A aged 60 or more, oldest first" in out
    assert "already loaded" in out and "mean_intensity" in out and "correlation age / mean intensity" in out


def test_dask_parquet() -> None:
    out = run_example("dask_parquet.py")
    assert "source: 4 partitions" in out
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 3


def test_torch_training() -> None:
    out = run_example("torch_training.py")
    if importlib.util.find_spec("torch") is None:
        assert out.startswith("skipped: dask_reservoir.torch needs PyTorch")
    else:
        assert sum(line.startswith("epoch ") for line in out.splitlines()) == 8 and "stats:" in out


def test_remote_scheduler(tmp_path: Path) -> None:
    with cli_cluster(tmp_path) as cluster:
        out = run_example("remote_scheduler.py", "--scheduler", cluster.address, "--epochs", "3")
    assert f"scheduler {cluster.address}, status running" in out
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 3


def test_ddp_ranks() -> None:
    out = run_example("ddp_ranks.py", "--epochs", "6")
    lines = [line for line in out.splitlines() if line.startswith("rank ")]
    assert len(lines) == 3 and all("batches per epoch [4, 4, 4, 4, 4, 4]" in line for line in lines)
    assert "pass-0 shards disjoint: True, covering the 300 rows: True" in out
    assert "equal batch counts on every rank and epoch: True" in out


def test_resume() -> None:
    out = run_example("resume.py")
    assert "trainer killed (exit -9) after 5 epochs" in out
    assert "resumed: resumed at epoch" in out
    assert sum(line.startswith("resumed: epoch ") for line in out.splitlines()) == 3
    assert "epochs served before and after the kill are identical: True" in out


def test_tabular_features() -> None:
    out = run_example("tabular_features.py")  # the million rows of the example, as documented
    assert "epoch: 1000000 rows in" in out
    assert "'band': 'category'" in out and "'cents': 'Int64'" in out and "'log_amount': 'float32'" in out
    lines = out.splitlines()
    table = lines[
        lines.index(
            next(line for line in lines if line.split() == ["sample_uid", "log_amount", "band", "cents"])
        ) :
    ][1:4]
    assert [line.split()[0] for line in table] == ["3", "97", "42"]
    assert table[1].split()[2:] == ["small", "<NA>"]  # amount 0: the nullable int is missing


def test_remote_scheduler_requires_an_address() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "remote_scheduler.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "--scheduler" in done.stderr


def test_persistent_cache() -> None:
    out = run_example("persistent_cache.py")
    lines = {line.split(":")[0]: line for line in out.splitlines() if ":" in line}
    assert "cache 0 hits / 120 misses" in lines["cold run"]
    assert "cache 120 hits / 0 misses" in lines["warm run"]
    assert "cache 0 hits / 120 misses" in lines["changed function"]
    assert "columns ['volume', 'label', 'case']" in out


def test_features_once() -> None:
    out = run_example("features_once.py")
    assert "one pass: 400 rows loaded, 400 submitted, loading done: True" in out
    assert "71 cases aged 80 or more: 71 read from the cache, 0 computed" in out
    assert "the cache read with plain pandas: 400 files" in out

"""The command line: help, errors (one line, exit 2) and a short demo run."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from distributed import Client

from dask_reservoir.cli import build_parser, main
from dask_reservoir.demo import run_demo

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DASK_LOGGING__DISTRIBUTED": "error"}
    return subprocess.run(
        [sys.executable, "-m", "dask_reservoir", *args],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        check=False,
    )


def test_help_lists_commands_and_options() -> None:
    done = run("--help")
    assert done.returncode == 0 and "demo" in done.stdout and "bench" not in done.stdout
    demo = run("demo", "--help")
    for option in (
        "--scheduler",
        "--workers",
        "--rows",
        "--delay",
        "--reservoir",
        "--minimum",
        "--batch-size",
        "--epochs",
    ):
        assert option in demo.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--rows", "0"], "expected a positive integer, got '0'"),
        (["demo", "--delay", "soon"], "expected seconds (a number >= 0), got 'soon'"),
        (["demo", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_bad_options_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_minimum_larger_than_reservoir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--minimum", "10", "--reservoir", "5"]) == 2
    assert "--minimum (10) must be <= --reservoir (5)" in capsys.readouterr().err


def test_demo_runs_on_an_embedded_cluster() -> None:
    done = run(
        "demo",
        "--rows",
        "60",
        "--epochs",
        "3",
        "--minimum",
        "8",
        "--reservoir",
        "16",
        "--batch-size",
        "4",
        "--delay",
        "0.01",
    )
    assert done.returncode == 0, done.stderr
    assert "on an embedded LocalCluster of 2 worker processes" in done.stdout
    assert done.stdout.count("epoch ") == 3 and "done:" in done.stdout and "stats: reservoir" in done.stdout
    # the wait users feel: every moment inside iter()/next(), with per-batch percentiles
    assert re.search(r"spent \d+\.\d% of the time inside iter\(\)/next\(\) \(per batch: p50 \d", done.stdout)
    assert re.search(r"waited \d+\.\d\d s \(per batch: p50 [\d.]+ ms, p99 [\d.]+ ms\)", done.stdout)


def test_demo_unreachable_scheduler_is_one_line_error() -> None:
    env_timeout = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    done = subprocess.run(
        [sys.executable, "-m", "dask_reservoir", "demo", "--scheduler", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, **env_timeout},
        check=False,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("dask-reservoir: error: could not connect to the dask scheduler at 'tcp://127.0.0.1:1'")
    )


def test_console_script_entry_point() -> None:
    assert build_parser().prog == "dask-reservoir"


def test_demo_figures_on_a_running_scheduler(client: Client) -> None:
    """Rows, not tasks; no cluster start where none starts (issue 16, point 10)."""
    out = io.StringIO()
    result = run_demo(
        rows=40,
        delay=0.0,
        scheduler=client.scheduler.address,
        reservoir=16,
        minimum=8,
        batch_size=4,
        epochs=3,
        step=0.0,
        out=out,
    )
    text = out.getvalue()
    assert "cluster start" not in text and "(connecting to the scheduler included)" in text
    lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(lines) == result.epochs == 3
    for line in lines:
        match = re.search(r"reservoir (\d+)/16  loaded (\d+) rows  .*  workers 2$", line)
        assert match, line
        # each entry in the reservoir is a loaded row (tasks hold several rows: fewer tasks)
        assert int(match[2]) >= int(match[1]), line
    assert re.search(r"stats: .*rows \d+ loaded / 0 failed, .*workers 2, status running", text)

"""Progress while waiting for the minimum: tqdm bar or plain lines (pure + one cluster test)."""

from __future__ import annotations

import io
import re
import threading

import pytest
from distributed import Client, LocalCluster

from dask_reservoir import AsyncReservoir
from dask_reservoir._runtime.progress import WaitProgress
from tests.utils import frame, load_value, poll_for


def test_plain_lines_without_tqdm() -> None:
    out = io.StringIO()
    p = WaitProgress(10, enabled=True, stream=out, use_tqdm=False)
    p.update(3)
    p.update(7)  # within the line period: no new line
    p.update(10)
    p.close()
    p.close()
    assert out.getvalue().splitlines() == [
        "dask_reservoir: 3/10 samples loaded, waiting for the minimum",
        "dask_reservoir: 10/10 samples loaded",
    ]


def test_disabled_reports_nothing() -> None:
    out = io.StringIO()
    p = WaitProgress(10, enabled=False, stream=out, use_tqdm=False)
    p.update(5)
    p.close()
    assert out.getvalue() == ""


def test_tqdm_bar_counts_to_required(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    p = WaitProgress(5, enabled=True)
    p.update(2)
    assert p._bar is not None and p._bar.n == 2
    p.update(9)
    assert p._bar.n == 5
    p.close()
    assert "dask_reservoir loading" in capsys.readouterr().err


def test_progress_option_on_a_reservoir(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    with AsyncReservoir(frame(6), load_value, 6, min_reservoir_samples=6, client=client, progress=True) as r:
        assert len(list(r)) == 6
    err = capsys.readouterr().err
    # the tqdm bar itself, counting towards the 6 entries iter() waits for
    assert re.search(r"dask_reservoir loading: .*\| [0-6]/6 \[", err), err
    with pytest.raises(TypeError, match="progress must be a bool, got str"):
        AsyncReservoir(frame(2), load_value, 2, client=client, progress="yes")  # type: ignore[arg-type]


def test_plain_line_says_why_nothing_loads() -> None:
    out = io.StringIO()
    p = WaitProgress(4, enabled=True, stream=out, use_tqdm=False)
    p.update(0, note="waiting for workers (none yet)")
    p.update(0, note="waiting for workers (none yet)")  # the same note within the period: no new line
    p.update(1)  # workers came: a line at once, without the note
    p.close()
    assert out.getvalue().splitlines() == [
        "dask_reservoir: 0/4 samples loaded, waiting for the minimum: waiting for workers (none yet)",
        "dask_reservoir: 1/4 samples loaded, waiting for the minimum",
        "dask_reservoir: 1/4 samples loaded",
    ]


def test_progress_says_it_waits_for_workers_until_one_is_up(capfd: pytest.CaptureFixture[str]) -> None:
    """The bar does not sit at 0/N in silence while the cluster has no worker (issue 16, point 10)."""
    seen: list[str] = []

    def err_so_far() -> str:
        seen.append(capfd.readouterr().err)
        return "".join(seen)

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
        AsyncReservoir(frame(4), load_value, 4, min_reservoir_samples=4, client=client, progress=True) as r,
    ):
        done = threading.Event()
        consumer = threading.Thread(target=lambda: (len(list(r)), done.set()))
        consumer.start()
        poll_for(lambda: "waiting for workers (none yet)" in err_so_far(), what="the note on the bar")
        assert not done.is_set()
        cluster.scale(1)
        poll_for(done.is_set, timeout=30, what="iter() once a worker is up")
        consumer.join()
    assert re.search(r"dask_reservoir loading: .*4/4", err_so_far())

"""Progress while waiting for the minimum: tqdm bar or plain lines (pure + one cluster test)."""

from __future__ import annotations

import io
import re

import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from dask_reservoir.progress import WaitProgress
from tests.utils import frame, load_value


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

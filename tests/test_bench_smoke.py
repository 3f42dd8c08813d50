"""A smoke run of the benchmark suite at tiny sizes: it runs and reports; no timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.run import main

pytestmark = pytest.mark.timeout(240)


def test_quick_suite_writes_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["--quick", "--only", "W2,W4,W5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "W2" in printed and "numpy take(out=, clip) limit" in printed and "ratio_to_smallest" in printed
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"W2", "W4", "W5"}
    assert data["machine"]["quick"] is True
    assert all(row["batches_per_s"] > 0 for row in data["results"]["W2"])


def test_unknown_workload_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--only", "W9"])
    assert info.value.code == 2 and "unknown workloads ['W9']" in capsys.readouterr().err

"""notebooks/quickstart.ipynb runs top to bottom and draws its plots."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.timeout(300)
def test_quickstart_executes(tmp_path: Path) -> None:
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "commit the notebook stripped"
    )
    nbclient.NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the training plots, and the cold and warm fill
    assert "warm: 300 rows in" in "".join(
        o.get("text", "") for o in outputs if o.get("output_type") == "stream"
    )
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "<AsyncReservoir: size=64/64" in text and "status running" in text
    assert (tmp_path / "quickstart.png").stat().st_size > 10_000
    assert (tmp_path / "cache_fill.png").stat().st_size > 5_000

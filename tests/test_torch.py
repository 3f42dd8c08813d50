"""The torch adapter (skipped cleanly without torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed import Client

from dask_reservoir import AsyncReservoir
from tests.utils import frame, load_value

torch = pytest.importorskip("torch")
from dask_reservoir.torch import ReservoirDataset, distributed_rank, to_tensors  # noqa: E402


def test_to_tensors_zero_copy_and_dtypes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = to_tensors(
        {"x": x, "label": np.array([1, 2]), "uid": np.array(["a", "b"]), "ok": np.array([True, False])}
    )
    assert out["x"].data_ptr() == x.ctypes.data  # shares memory
    x[0, 0] = 42
    assert out["x"][0, 0].item() == 42
    assert out["label"].dtype == torch.int64 and out["ok"].dtype == torch.bool
    assert isinstance(out["uid"], np.ndarray)


def test_read_only_arrays_are_copied() -> None:
    x = np.ones(3, np.float32)
    x.flags.writeable = False
    out = to_tensors({"x": x})
    assert out["x"].data_ptr() != x.ctypes.data and out["x"].sum().item() == 3


def test_device_is_applied() -> None:
    out = to_tensors({"x": np.ones(2, np.float32)}, device="cpu")
    assert out["x"].device.type == "cpu"
    # "cpu" is also where tensors are anyway: the meta device (on every build) shows the move
    meta = to_tensors({"x": np.ones(2, np.float32), "uid": np.array(["a", "b"])}, device="meta")
    assert meta["x"].device.type == "meta" and tuple(meta["x"].shape) == (2,)
    assert isinstance(meta["uid"], np.ndarray)


def test_dataset_in_a_dataloader(client: Client) -> None:
    with AsyncReservoir(frame(8), load_value, 8, min_reservoir_samples=8, client=client, batch_size=4) as r:
        loader = torch.utils.data.DataLoader(ReservoirDataset(r), batch_size=None, num_workers=0)
        for _ in range(2):
            batches = list(loader)
            assert [tuple(b["image"].shape) for b in batches] == [(4, 2, 3), (4, 2, 3)]
            assert sorted(int(v) for b in batches for v in b["label"]) == list(range(8))


def test_import_error_without_torch() -> None:
    code = "import sys; sys.modules['torch'] = None\ntry:\n import dask_reservoir.torch\nexcept ImportError as e:\n print(e)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "dask_reservoir.torch needs PyTorch" in out and "pip install dask_reservoir[torch]" in out


def test_big_endian_and_bad_columns() -> None:
    x = np.arange(4, dtype=">f4")
    out = to_tensors({"x": x})
    assert out["x"].dtype == torch.float32 and out["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match="column 'q': cannot turn a numpy array of dtype float128"):
        to_tensors({"q": np.zeros(3, dtype=np.longdouble)})


def test_dataloader_with_spawned_workers_gets_the_clear_error(client: Client) -> None:
    with AsyncReservoir(frame(4), load_value, 4, min_reservoir_samples=4, client=client, batch_size=2) as r:
        loader = torch.utils.data.DataLoader(
            ReservoirDataset(r), batch_size=None, num_workers=1, multiprocessing_context="spawn"
        )
        with pytest.raises(RuntimeError, match=r"DataLoader\(num_workers=0\)"):
            list(loader)


RANK_SCRIPT = """
import sys
import torch.distributed as dist
from dask_reservoir.torch import distributed_rank
store = dist.FileStore(sys.argv[1], 2)
dist.init_process_group("gloo", store=store, rank=int(sys.argv[2]), world_size=2)
print(distributed_rank(), flush=True)
dist.barrier()
dist.destroy_process_group()
"""


def test_distributed_rank_reads_an_initialised_process_group(tmp_path: Path) -> None:
    assert distributed_rank() == {"rank": 0, "world_size": 1}  # no group in this process
    store = str(tmp_path / "store")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, store, str(rank)], stdout=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == ["{'rank': 0, 'world_size': 2}", "{'rank': 1, 'world_size': 2}"]
